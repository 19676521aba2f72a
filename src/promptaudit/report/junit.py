"""Render the audit gates as JUnit XML, so CI systems show each gate as a test case.

One ``<testsuite name="promptaudit.<name>">`` holds one ``<testcase>`` per gate,
named like ``demographic_parity_ratio[gender] >= 0.8``; a failed gate carries a
``<failure>`` with its value against the threshold. The document is built with
:mod:`xml.etree.ElementTree`, which escapes all text; characters XML cannot hold
(control characters) are dropped first.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from promptaudit.report._common import (
    NA,
    as_list,
    as_mapping,
    fmt_num,
    fmt_threshold,
    gate_name,
    gate_status,
)

__all__ = ["render_junit"]

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_BOUNDS = {"point": "point estimate", "lower": "lower interval bound",
           "upper": "upper interval bound"}


def _clean(value: Any) -> str:
    return _INVALID_XML.sub("", str(value))


def render_junit(result: dict) -> str:
    """Render the gates of an audit result as a JUnit XML document.

    Parameters
    ----------
    result : dict
        The audit result JSON dict; reads ``audit.name``, ``gates`` and a few
        provenance fields (written as suite properties).

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
    audit = as_mapping(result.get("audit"))
    suite_name = _clean(f"promptaudit.{audit.get('name') or 'audit'}")
    gates = [as_mapping(g) for g in as_list(result.get("gates"))]
    failures = sum(1 for g in gates if g.get("passed") is not True)
    skipped = sum(1 for g in gates if g.get("passed") is True and gate_status(g) == "inconclusive")
    provenance = as_mapping(result.get("provenance"))

    root = ET.Element("testsuites", {
        "name": "promptaudit", "tests": str(len(gates)), "failures": str(failures),
        "errors": "0", "time": "0",
    })
    suite = ET.SubElement(root, "testsuite", {
        "name": suite_name, "tests": str(len(gates)), "failures": str(failures),
        "errors": "0", "skipped": str(skipped), "time": "0",
    })
    if provenance.get("created_at"):
        suite.set("timestamp", _clean(provenance["created_at"]))
    properties = ET.SubElement(suite, "properties")
    model = as_mapping(provenance.get("model"))
    for key, value in (
        ("model", model.get("reference")),
        ("model_revision", model.get("revision")),
        ("prompt", as_mapping(provenance.get("prompt")).get("source")),
        ("data", as_mapping(provenance.get("data")).get("source")),
        ("seed", provenance.get("seed")),
        ("passed", result.get("passed") is True),
    ):
        if value is not None:
            ET.SubElement(properties, "property", {"name": key, "value": _clean(
                str(value).lower() if isinstance(value, bool) else value)})

    for gate in gates:
        case = ET.SubElement(suite, "testcase", {
            "classname": suite_name, "name": _clean(gate_name(gate)), "time": "0",
        })
        inconclusive = gate_status(gate) == "inconclusive"
        if gate.get("passed") is True:
            if inconclusive:  # counted as passed by gate_policy.inconclusive: pass
                skipped_case = ET.SubElement(case, "skipped", {
                    "message": _clean("INCONCLUSIVE (counted as passed): "
                                      + _failure_message(gate)),
                })
                skipped_case.text = _clean(gate.get("message") or "")
            continue
        failure = ET.SubElement(case, "failure", {
            "message": _clean(("INCONCLUSIVE (counted as failed): " if inconclusive else "")
                              + _failure_message(gate)),
            "type": "GateInconclusive" if inconclusive else "GateFailed",
        })
        failure.text = _clean(gate.get("message") or _failure_message(gate))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _failure_message(gate: Mapping[str, Any]) -> str:
    metric = gate_name(gate).rsplit(" ", 2)[0]
    value = fmt_num(gate.get("value"))
    bound = _BOUNDS.get(str(gate.get("bound") or "point"), str(gate.get("bound")))
    rule = f"{gate.get('op') or '?'} {fmt_threshold(gate.get('threshold'))}"
    if value == NA:
        return f"{metric} is not computable (n/a); the gate requires {rule}"
    return f"{metric} = {value} ({bound}), required {rule}"
