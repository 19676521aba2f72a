"""Render the audit result as a short Markdown summary for a PR comment or CI step summary.

Every value the template prints passes through :func:`escape_markdown` (the
environment's ``finalize`` hook), so text from the result (names, groups, messages)
never becomes Markdown or HTML markup; the markup itself lives in ``summary.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2

from promptaudit.report._bias_audit import bias_audit_view
from promptaudit.report._common import (
    DISPARITY_LABELS,
    NA,
    as_float,
    as_list,
    as_mapping,
    classification_rows,
    competence_sentence,
    disparity_label,
    escape_markdown,
    fidelity_sentence,
    fmt_interval,
    fmt_num,
    fmt_pct,
    gap_sentences,
    gate_counts,
    gate_name,
    gate_status,
    off_manifold_note,
    projected_text,
    short_text,
    verdict_sentence,
    verdict_word,
)

__all__ = ["render_markdown", "escape_markdown"]

@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("promptaudit.report", "templates"),
        autoescape=False,  # Markdown, not HTML: finalize escapes every printed value
        finalize=escape_markdown,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_markdown(result: dict) -> str:
    """Render a Markdown summary of an audit result.

    Parameters
    ----------
    result : dict
        The audit result JSON dict.

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
    text = _environment().get_template("summary.md").render(**_context(result))
    if isinstance(result.get("mitigation"), dict):  # before / after of `run` with mitigation
        from promptaudit.report.comparison import mitigation_markdown

        text += mitigation_markdown(result["mitigation"])
    return text


def _context(result: Mapping[str, Any]) -> dict[str, Any]:
    audit = as_mapping(result.get("audit"))
    task = as_mapping(result.get("task"))
    fairness = as_mapping(result.get("fairness"))
    projection = result.get("projection")
    projection = projection if isinstance(projection, Mapping) else None
    failed, total = gate_counts(result)

    gates = []
    for gate in as_list(result.get("gates")):
        gate = as_mapping(gate)
        ok = gate.get("passed") is True
        bound = str(gate.get("bound") or "point")
        result_text = "\u2705 pass" if ok else "\u274c FAIL"
        if gate_status(gate) == "inconclusive":
            rows = gate.get("rows_to_decide")
            result_text = (
                f"\u2753 INCONCLUSIVE (counted as {'passed' if ok else 'failed'}"
                + (f"; ~{rows} {gate.get('rows_unit') or 'rows'} would decide it" if rows else "")
                + ")"
            )
        interval = fmt_interval(gate.get("interval"))
        gates.append({
            "name": gate_name(gate),
            "value": fmt_num(gate.get("value")) + (f" {interval}" if interval else ""),
            "bound": {"point": "point", "lower": "lower bound", "upper": "upper bound"}.get(
                bound, bound),
            "result": result_text,
        })

    worst = as_mapping(fairness.get("disparities"))
    worst_feature = as_mapping(fairness.get("worst_feature"))
    intervals = as_mapping(fairness.get("disparity_intervals"))
    names = [n for n in DISPARITY_LABELS if n in worst] + [
        n for n in worst if n not in DISPARITY_LABELS]
    disparities = [
        {
            "name": disparity_label(n),
            "value": fmt_num(worst.get(n)),
            "feature": str(worst_feature.get(n)) if worst_feature.get(n) is not None else NA,
            "interval": fmt_interval(intervals.get(n)) or NA,
        }
        for n in names
    ]

    counterfactual = fairness.get("counterfactual")
    flip = None
    if isinstance(counterfactual, Mapping):
        flip = {
            "interval": fmt_interval(counterfactual.get("flip_rate_interval")),
            "pct": fmt_pct(counterfactual.get("flip_rate")),
            "n": str(counterfactual.get("n_tuples")
                     if counterfactual.get("n_tuples") is not None else NA),
            "delta": fmt_num(counterfactual.get("mean_abs_delta")),
        }

    provenance = as_mapping(result.get("provenance"))
    model = as_mapping(provenance.get("model"))
    prompt = as_mapping(provenance.get("prompt"))
    data = as_mapping(provenance.get("data"))
    versions = as_mapping(provenance.get("versions"))
    parts = [f"model {model.get('reference') or NA}"]
    if model.get("revision"):
        parts[-1] += f" @ {model.get('revision')}"
    prompt_hashes = [str(v)[:12] for _, v in sorted(as_mapping(prompt.get("sha256")).items())
                     if v]
    if prompt_hashes:
        parts.append("prompt sha256 " + ", ".join(prompt_hashes))
    if data.get("sha256"):
        parts.append(f"data sha256 {str(data.get('sha256'))[:12]}")
    if provenance.get("seed") is not None:
        parts.append(f"seed {provenance.get('seed')}")
    if versions.get("promptaudit"):
        parts.append(f"promptaudit {versions.get('promptaudit')}")
    if provenance.get("created_at"):
        parts.append(str(provenance.get("created_at")))

    accuracy = as_float(task.get("accuracy"))
    word = verdict_word(result)
    report = classification_rows(task.get("classification_report"))
    group_reports = []
    for feature, groups in as_mapping(task.get("classification_report_by_group")).items():
        for group, stats in as_mapping(groups).items():
            for row in classification_rows(stats):
                if row["label"] in ("macro avg", "weighted avg"):
                    continue
                group_reports.append({"feature": str(feature), "group": str(group), **row})
    return {
        "competence": competence_sentence(result),
        "report": report,
        "group_reports": group_reports,
        "name": short_text(audit.get("name") or "unnamed audit", 120),
        "icon": {"PASS": "\u2705", "FAIL": "\u274c"}.get(word, "\u2753"),
        "verdict_word": word,
        "verdict": verdict_sentence(result),
        "failed": failed,
        "total": total,
        "n_examples": task.get("n_examples"),
        "accuracy": fmt_num(accuracy) if accuracy is not None else None,
        "gates": gates,
        "gaps": [short_text(s, 400) for s in gap_sentences(result, limit=4)],
        "disparities": disparities,
        "flip": flip,
        "reading": short_text(projected_text(projection), 300)
        if projection and projected_text(projection) else None,
        "off_manifold": off_manifold_note(projection) if projection else None,
        "fidelity": short_text(fidelity_sentence(projection), 400)
        if projection and fidelity_sentence(projection) else None,
        "provenance": " \u00b7 ".join(short_text(p, 120) for p in parts),
        "bias_audit": bias_audit_view(result),
        "attribution_note": _attribution_note(result.get("attribution")),
    }


def _attribution_note(attribution: Any) -> str | None:
    """One sentence on integrated gradients' completeness, or None when not measured."""
    if not isinstance(attribution, Mapping):
        return None
    tolerance = as_float(attribution.get("delta_tolerance"))
    failed = attribution.get("n_not_converged")
    n = attribution.get("n_examples")
    if tolerance is None or not isinstance(failed, int) or not isinstance(n, int):
        return None
    if failed == 0:
        return (f"every one of {n} examples' attributions adds up to its change in score "
                f"within {tolerance:g}")
    return (f"{failed} of {n} examples did NOT converge: their attributions do not add up "
            f"to their change in score within {tolerance:g}; read them with caution")
