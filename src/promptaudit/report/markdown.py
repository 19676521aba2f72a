"""Render the audit result as a short Markdown summary for a PR comment or CI step summary.

Every value the template prints passes through
:func:`~promptaudit.report.escape.escape_markdown` (the environment's ``finalize`` hook),
so text from the result (names, groups, messages) never becomes Markdown or HTML markup;
the markup itself lives in ``summary.md``.
"""

from __future__ import annotations

from typing import Any

from promptaudit.report._bias_audit import bias_audit_view
from promptaudit.report._common import (
    NA,
    as_float,
    as_result,
    attribution_budget_sentence,
    classification_rows,
    competence_sentence,
    disparity_label,
    disparity_order,
    fidelity_sentence,
    fmt_interval,
    fmt_num,
    gap_sentences,
    gate_name,
    gate_status,
    off_manifold_note,
    projected_text,
    short_text,
    translation_sentence,
    verdict_sentence,
    verdict_word,
)
from promptaudit.report._explain import (
    convergence_view,
    departures_view,
    position_importance_view,
)
from promptaudit.report.before_after import mitigation_view
from promptaudit.report.rendering import environment
from promptaudit.result import AuditResult
from promptaudit.result_sections import (
    FairnessResult,
    GateResult,
    Provenance,
    TaskResult,
)

__all__ = ["render_markdown"]

def render_markdown(result: AuditResult | dict) -> str:
    """Render a Markdown summary of an audit result.

    Parameters
    ----------
    result : AuditResult or dict
        The audit result (a JSON dict is read with
        :func:`~promptaudit.report._common.as_result`).

    Returns
    -------
    str
        GitHub-flavoured Markdown: a verdict line, the gate table, the worst
        disparities, the counterfactual flip rate, the projected reading with its
        fidelity, and one provenance line. Text from the result is escaped.

    Examples
    --------
    >>> print(render_markdown({"audit": {"name": "demo"}, "gates": [], "passed": True})
    ...       .splitlines()[0])
    ## ✅ promptaudit PASS: demo
    """
    return environment("markdown").get_template("summary.md").render(
        **_context(as_result(result)))


def _context(result: AuditResult) -> dict[str, Any]:
    audit = result.audit
    task = result.task
    fairness = result.fairness
    projection = result.projection
    parts = _provenance_parts(result.provenance)
    accuracy = as_float(task.accuracy) if task is not None else None
    word = verdict_word(result)
    report = classification_rows(task.classification_report if task is not None else None)
    return {
        "competence": competence_sentence(result),
        "report": report,
        "group_reports": _group_reports(task),
        "name": short_text((audit.name if audit is not None else None) or "unnamed audit", 120),
        "icon": {"PASS": "\u2705", "FAIL": "\u274c"}.get(word, "\u2753"),
        "verdict_word": word,
        "verdict": verdict_sentence(result),
        "n_examples": task.n_examples if task is not None else None,
        "accuracy": fmt_num(accuracy) if accuracy is not None else None,
        "gates": [_gate_row(gate) for gate in result.gates or []],
        "gaps": [short_text(s, 400) for s in gap_sentences(result, limit=4)],
        "disparities": _disparity_rows(fairness),
        "flip": fairness.counterfactual if fairness is not None else None,
        "reading": short_text(projected_text(projection), 300)
        if projection and projected_text(projection) else None,
        "off_manifold": off_manifold_note(projection) if projection else None,
        "translation": short_text(translation_sentence(projection), 600)
        if translation_sentence(projection) else None,
        "fidelity": short_text(fidelity_sentence(projection), 400)
        if projection and fidelity_sentence(projection) else None,
        "provenance": " \u00b7 ".join(short_text(p, 120) for p in parts),
        "bias_audit": bias_audit_view(result),
        "attribution": result.attribution,
        "convergence": convergence_view(result.attribution) if result.attribution else None,
        "attribution_budget": attribution_budget_sentence(result.attribution),
        "departures": departures_view(projection),
        "position_importance": position_importance_view(projection),
        "mitigation": mitigation_view(result.mitigation),
    }


def _gate_row(gate: GateResult) -> dict[str, str]:
    """One gate's table row: name, value with interval, bound and result."""
    ok = gate.passed is True
    bound = str(gate.bound or "point")
    result_text = "\u2705 pass" if ok else "\u274c FAIL"
    if gate_status(gate) == "inconclusive":
        rows = gate.rows_to_decide
        result_text = (
            f"\u2753 INCONCLUSIVE (counted as {'passed' if ok else 'failed'}"
            + (f"; ~{rows} {gate.rows_unit or 'rows'} would decide it" if rows else "")
            + ")"
        )
    interval = fmt_interval(gate.interval)
    return {
        "name": gate_name(gate),
        "value": fmt_num(gate.value) + (f" {interval}" if interval else ""),
        "bound": {"point": "point", "lower": "lower bound", "upper": "upper bound"}.get(
            bound, bound),
        "result": result_text,
    }


def _disparity_rows(fairness: FairnessResult | None) -> list[dict[str, str]]:
    """The worst value of each disparity, its feature and interval, in display order."""
    worst = (fairness.disparities if fairness is not None else None) or {}
    worst_feature = (fairness.worst_feature if fairness is not None else None) or {}
    intervals = (fairness.disparity_intervals if fairness is not None else None) or {}
    return [
        {
            "name": disparity_label(n),
            "value": fmt_num(worst.get(n)),
            "feature": str(worst_feature.get(n)) if worst_feature.get(n) is not None else NA,
            "interval": fmt_interval(intervals.get(n)) or NA,
        }
        for n in disparity_order(worst)
    ]


def _group_reports(task: TaskResult | None) -> list[dict[str, str]]:
    """Per-class precision / recall / F1 of each group (averages left out)."""
    group_reports = []
    by_group = (task.classification_report_by_group if task is not None else None) or {}
    for feature, groups in by_group.items():
        for group, stats in (groups or {}).items():
            for row in classification_rows(stats):
                if row["label"] in ("macro avg", "weighted avg"):
                    continue
                group_reports.append({"feature": str(feature), "group": str(group), **row})
    return group_reports


def _provenance_parts(provenance: Provenance | None) -> list[str]:
    """The provenance line's parts: model, hashes, seed, version, time."""
    if provenance is None:
        return [f"model {NA}"]
    model, prompt, data = provenance.model, provenance.prompt, provenance.data
    versions = provenance.versions or {}
    parts = [f"model {(model.reference if model else None) or NA}"]
    if model is not None and model.revision:
        parts[-1] += f" @ {model.revision}"
    prompt_hashes = [str(v)[:12] for _, v in sorted(
        ((prompt.sha256 if prompt is not None else None) or {}).items()) if v]
    if prompt_hashes:
        parts.append("prompt sha256 " + ", ".join(prompt_hashes))
    if data is not None and data.sha256:
        parts.append(f"data sha256 {str(data.sha256)[:12]}")
    if provenance.seed is not None:
        parts.append(f"seed {provenance.seed}")
    if versions.get("promptaudit"):
        parts.append(f"promptaudit {versions.get('promptaudit')}")
    if provenance.created_at:
        parts.append(str(provenance.created_at))
    return parts
