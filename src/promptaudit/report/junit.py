"""Render the audit gates as JUnit XML, so CI systems show each gate as a test case.

One ``<testsuite name="promptaudit.<name>">`` holds one ``<testcase>`` per gate,
named like ``demographic_parity_ratio[gender] >= 0.8``; a failed gate carries a
``<failure>`` with its value against the threshold. The document is built with
:mod:`xml.etree.ElementTree`, which escapes all text; characters XML cannot hold
(control characters) are dropped first.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from promptaudit.report._common import (
    BOUND_WORDS,
    NA,
    as_result,
    fmt_num,
    fmt_threshold,
    gate_name,
    gate_status,
)
from promptaudit.report.escape import strip_xml_invalid
from promptaudit.result import AuditResult
from promptaudit.result_sections import GateResult

__all__ = ["render_junit"]



def render_junit(result: AuditResult | dict) -> str:
    """Render the gates of an audit result as a JUnit XML document.

    Parameters
    ----------
    result : AuditResult or dict
        The audit result (a JSON dict is read with
        :func:`~promptaudit.report._common.as_result`); reads ``audit.name``,
        ``gates`` and a few provenance fields (written as suite properties).

    Returns
    -------
    str
        ``<?xml ...?><testsuites><testsuite ...>...</testsuite></testsuites>``.

    Examples
    --------
    >>> xml = render_junit({"audit": {"name": "demo"}, "passed": False, "gates": [
    ...     {"metric": "accuracy", "feature": None, "op": ">=", "threshold": 0.7,
    ...      "value": 0.6, "bound": "point", "passed": False, "message": "too low"}]})
    >>> 'name="accuracy &gt;= 0.7"' in xml and "<failure" in xml
    True
    """
    result = as_result(result)
    audit = result.audit
    name = (audit.name if audit is not None else None) or "audit"
    suite_name = strip_xml_invalid(f"promptaudit.{name}")
    gates = result.gates or []
    failures = sum(1 for g in gates if g.passed is not True)
    skipped = sum(1 for g in gates if g.passed is True and gate_status(g) == "inconclusive")
    provenance = result.provenance

    root = ET.Element("testsuites", {
        "name": "promptaudit", "tests": str(len(gates)), "failures": str(failures),
        "errors": "0", "time": "0",
    })
    suite = ET.SubElement(root, "testsuite", {
        "name": suite_name, "tests": str(len(gates)), "failures": str(failures),
        "errors": "0", "skipped": str(skipped), "time": "0",
    })
    if provenance is not None and provenance.created_at:
        suite.set("timestamp", strip_xml_invalid(provenance.created_at))
    _properties(suite, result)

    for gate in gates:
        case = ET.SubElement(suite, "testcase", {
            "classname": suite_name, "name": strip_xml_invalid(gate_name(gate)), "time": "0",
        })
        inconclusive = gate_status(gate) == "inconclusive"
        if gate.passed is True:
            if inconclusive:  # counted as passed by gate_policy.inconclusive: pass
                skipped_case = ET.SubElement(case, "skipped", {
                    "message": strip_xml_invalid("INCONCLUSIVE (counted as passed): "
                                                 + _failure_message(gate)),
                })
                skipped_case.text = strip_xml_invalid(gate.message or "")
            continue
        failure = ET.SubElement(case, "failure", {
            "message": strip_xml_invalid(
                ("INCONCLUSIVE (counted as failed): " if inconclusive else "")
                + _failure_message(gate)),
            "type": "GateInconclusive" if inconclusive else "GateFailed",
        })
        failure.text = strip_xml_invalid(gate.message or _failure_message(gate))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _properties(suite: ET.Element, result: AuditResult) -> None:
    """The suite's ``<properties>``: model, revision, prompt, data, seed and the verdict."""
    provenance = result.provenance
    properties = ET.SubElement(suite, "properties")
    model = provenance.model if provenance is not None else None
    prompt = provenance.prompt if provenance is not None else None
    data = provenance.data if provenance is not None else None
    for key, value in (
        ("model", model.reference if model is not None else None),
        ("model_revision", model.revision if model is not None else None),
        ("prompt", prompt.source if prompt is not None else None),
        ("data", data.source if data is not None else None),
        ("seed", provenance.seed if provenance is not None else None),
        ("passed", result.passed is True),
    ):
        if value is not None:
            ET.SubElement(properties, "property", {"name": key, "value": strip_xml_invalid(
                str(value).lower() if isinstance(value, bool) else value)})


def _failure_message(gate: GateResult) -> str:
    metric = gate_name(gate).rsplit(" ", 2)[0]
    value = fmt_num(gate.value)
    bound = BOUND_WORDS.get(str(gate.bound or "point"), str(gate.bound))
    rule = f"{gate.op or '?'} {fmt_threshold(gate.threshold)}"
    if value == NA:
        return f"{metric} is not computable (n/a); the gate requires {rule}"
    return f"{metric} = {value} ({bound}), required {rule}"
