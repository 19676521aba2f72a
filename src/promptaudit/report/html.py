"""Render the audit result as one self-contained HTML page.

:func:`build_html_context` turns the typed result into dicts of display strings that the
``report.html`` template (autoescape, ``StrictUndefined``, no ``|safe``) lays out. Styles
are inline, figures are PNG ``data:`` URIs; no script, no external URL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from matplotlib.figure import Figure

from promptaudit.report import figures
from promptaudit.report._bias_audit import bias_audit_view
from promptaudit.report._common import (
    BOUND_WORDS,
    DISPARITY_LABELS,
    GROUP_METRIC_LABELS,
    NA,
    as_float,
    as_result,
    attribution_budget_sentence,
    classification_rows,
    disparity_label,
    disparity_order,
    feature_blocks,
    fidelity_level,
    fidelity_message,
    fmt_interval,
    fmt_num,
    fmt_pct,
    fmt_threshold,
    gate_status,
    short_text,
    summary_view,
    text_or_na,
    verdict_class,
)
from promptaudit.report._explain import (
    convergence_view,
    departures_view,
    group_difference_view,
    importance_by_position,
    neighbor_word,
    position_importance_view,
)
from promptaudit.report.before_after import mitigation_view
from promptaudit.report.escape import display_token
from promptaudit.report.rendering import environment
from promptaudit.result import AuditResult
from promptaudit.result_sections import (
    AttributionExample,
    AttributionGroups,
    AttributionResult,
    BaselineResult,
    CounterfactualResult,
    FairnessResult,
    FeatureEntry,
    Integrity,
    ProjectionResult,
    Provenance,
    SpecRecord,
    TaskResult,
)

__all__ = ["render_html", "build_html_context"]

logger = logging.getLogger(__name__)

_BASELINE_LABELS = {
    "soft_prompt": "Tuned soft prompt",
    "projected_prompt": "Nearest words as a text prompt",
    "init_text": "Initialisation text",
    "no_prompt": "No prompt",
}


def render_html(result: AuditResult | dict) -> str:
    """Render an audit result as a self-contained HTML page.

    Parameters
    ----------
    result : AuditResult or dict
        The audit result (a JSON dict is read with :func:`~promptaudit.report._common.as_result`;
        sections that are missing or ``None`` render a short "not computed" note).

    Returns
    -------
    str
        One HTML document: inline CSS, figures as PNG ``data:`` URIs, no script and no
        external reference. All data text is HTML-escaped.

    Examples
    --------
    >>> page = render_html({"schema_version": "1", "audit": {"name": "demo"}, "gates": [],
    ...                     "passed": True})
    >>> "<script" in page
    False
    """
    return environment("html").get_template("report.html").render(
        **build_html_context(result))


# --------------------------------------------------------------------------- context


def build_html_context(result: AuditResult | Mapping[str, Any]) -> dict[str, Any]:
    """Turn a result into the plain dict of display strings the template reads.

    Parameters
    ----------
    result : AuditResult or mapping
        The audit result (a JSON dict is read with ``as_result``).

    Returns
    -------
    dict
        Keys ``title``, ``summary``, ``task``, ``gates``, ``fairness``,
        ``counterfactual``, ``projection``, ``attribution``, ``baselines``,
        ``provenance``, ``bias_audit``; a section that was not computed is
        ``None``.
    """
    result = as_result(result)
    audit = result.audit
    name = str((audit.name if audit is not None else None) or "unnamed audit")
    projection = result.projection
    position_labels = _position_labels(projection)
    task = result.task
    fairness = result.fairness
    return {
        "title": name,
        "summary": summary_view(result),
        "task": _task(task),
        "gates": _gates(result),
        "fairness": _fairness(fairness,
                              task.classification_report_by_group if task is not None else None),
        "counterfactual": _counterfactual(fairness.counterfactual if fairness is not None
                                          else None),
        "projection": _projection(projection),
        "departures": departures_view(projection),
        "position_importance": position_importance_view(projection),
        "attribution": _attribution(result.attribution, position_labels),
        "baselines": _baselines(result.baselines),
        "provenance": _provenance(result.provenance,
                                  audit.spec if audit is not None else None,
                                  result.integrity),
        "schema_version": str(result.schema_version or NA),
        "bias_audit": bias_audit_view(result),
        "mitigation": mitigation_view(result.mitigation),
    }


def _task(task: TaskResult | None) -> dict[str, Any] | None:
    if task is None:
        return None
    counts = task.prediction_counts or {}
    competence = task.competence
    return {
        "competence": competence,
        "baselines": [(_BASELINE_LABELS.get(str(k), str(k)), v) for k, v in
                      ((competence.baselines if competence is not None else None) or {}).items()],
        "report": classification_rows(task.classification_report),
        "type": str(task.type or NA),
        "labels": ", ".join(str(label) for label in task.labels or []) or NA,
        "positive_label": str(task.positive_label or NA),
        "n_examples": text_or_na(task.n_examples),
        "accuracy": fmt_num(task.accuracy),
        "n_truncated": text_or_na(task.n_truncated),
        "prediction_counts": [{"label": str(k), "count": str(v)} for k, v in counts.items()],
    }


def _gates(result: AuditResult) -> list[dict[str, Any]]:
    fairness = result.fairness
    per_feature = set(DISPARITY_LABELS) | set(
        (fairness.disparities if fairness is not None else None) or {})
    rows = []
    for gate in result.gates or []:
        passed = gate.passed is True
        feature = gate.feature
        rows.append({
            "metric": str(gate.metric or NA),
            "feature": str(feature) if feature not in (None, "")
            else "worst feature" if gate.metric in per_feature else "\u2014",
            "op": str(gate.op or NA),
            "threshold": fmt_threshold(gate.threshold),
            "value": fmt_num(gate.value),
            "bound": BOUND_WORDS.get(str(gate.bound), str(gate.bound or NA)),
            "passed": passed,
            "status": gate_status(gate),
            "interval": fmt_interval(gate.interval),
            "rows_to_decide": str(gate.rows_to_decide) if gate.rows_to_decide is not None else "",
            "rows_unit": str(gate.rows_unit or "rows"),
            "message": str(gate.message or ""),
        })
    return rows


def _group_table(block: FeatureEntry) -> dict[str, Any]:
    by_group = block.by_group or {}
    intervals = block.intervals or {}
    shown = ("selection_rate", "accuracy", "true_positive_rate", "false_positive_rate",
             "mean_score")
    metrics = [m for m in shown if any(m in row.metrics for row in by_group.values())]
    rows = []
    for group, row in by_group.items():
        group_intervals = intervals.get(group) or {}
        rows.append({
            "group": str(group),
            "count": text_or_na(row.count),
            "small": row.small is True,
            "cells": [
                {"value": fmt_num(row.metrics.get(m)),
                 "interval": fmt_interval(group_intervals.get(m))}
                for m in metrics
            ],
        })
    return {
        "metrics": [GROUP_METRIC_LABELS.get(m, m) for m in metrics],
        "rows": rows,
    }


def _fairness(
    fairness: FairnessResult | None,
    reports: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any] | None:
    if fairness is None:
        return None
    blocks = feature_blocks(fairness, titled=True)
    features = []
    for key, label, block in blocks:
        chart = _figure(
            lambda k=key: figures.group_metric_chart(fairness, k, "selection_rate"),
            alt=f"Bar chart of the selection rate for each {label} group with bootstrap "
                "intervals.",
        )
        group_reports = (reports or {}).get(key) or {}
        features.append({"label": label, "table": _group_table(block),
                         "chart": chart,
                         "reports": [{"group": str(g), "rows": classification_rows(r)}
                                     for g, r in group_reports.items()]})

    # Disparities: one row per metric, one column per feature, plus the worst value.
    worst = fairness.disparities or {}
    present = disparity_order([n for _, _, b in blocks for n in b.disparities or {}] + list(worst))
    worst_intervals = fairness.disparity_intervals or {}
    worst_feature = fairness.worst_feature or {}
    disparity_rows = []
    for name in present:
        cells = []
        for _key, _label, block in blocks:
            cells.append({
                "value": fmt_num((block.disparities or {}).get(name)),
                "interval": fmt_interval((block.disparity_intervals or {}).get(name)),
            })
        feature = worst_feature.get(name)
        disparity_rows.append({
            "name": disparity_label(name),
            "direction": "higher is fairer (1 = equal)" if name.endswith("_ratio")
            else "lower is fairer (0 = equal)",
            "cells": cells,
            "worst": fmt_num(worst.get(name)),
            "worst_interval": fmt_interval(worst_intervals.get(name)),
            "worst_feature": str(feature) if feature is not None else "",
        })
    confidence = as_float(fairness.confidence)
    return {
        "features": features,
        "columns": [label for _, label, _ in blocks],
        "disparities": disparity_rows,
        "confidence": f"{100 * confidence:.0f}%" if confidence is not None else NA,
        "bootstrap": text_or_na(fairness.bootstrap),
        "min_group_size": text_or_na(fairness.min_group_size),
    }


def _counterfactual(counterfactual: CounterfactualResult | None) -> dict[str, Any] | None:
    if counterfactual is None:
        return None
    source = str(counterfactual.source or NA)
    source_text = {
        "pair_column": "pairs given in the data (rows that differ only in identity)",
        "builtin:identity": "the built-in identity term lists (names, pronouns, group words)",
    }.get(source, source)
    return {
        "flip_rate_interval": fmt_interval(counterfactual.flip_rate_interval),
        "flip_rate": fmt_pct(counterfactual.flip_rate),
        "flip_rate_raw": fmt_num(counterfactual.flip_rate),
        "mean_abs_delta": fmt_num(counterfactual.mean_abs_delta),
        "n_tuples": text_or_na(counterfactual.n_tuples),
        "source": source_text,
        "groups": list((counterfactual.by_group or {}).items()),
    }


def _position_labels(projection: ProjectionResult | None) -> list[str] | None:
    if projection is None:
        return None
    labels = []
    for position in projection.positions or []:
        word = neighbor_word(position.neighbors[0]) if position.neighbors else ""
        index = position.index if position.index is not None else len(labels)
        labels.append(f"{index} {word}".strip())
    return labels or None


def _projection(projection: ProjectionResult | None) -> dict[str, Any] | None:
    if projection is None:
        return None
    rows = []
    matters = importance_by_position(projection)
    for position in projection.positions or []:
        neighbors = []
        for neighbor in position.neighbors or []:
            word = neighbor_word(neighbor)
            neighbors.append({"word": str(word or NA),
                              "token": str(neighbor.token if neighbor.token is not None else ""),
                              "score": fmt_num(neighbor.score)})
        init = position.init_token
        still = position.still_init
        if init is None:
            drift = "random initialisation"
        elif position.off_manifold is True:  # no word describes it, its initial word neither
            drift = "off-manifold: no closer to any word than chance"
        elif still is True:
            drift = "still its initial word"
        elif still is False:
            drift = "moved away"
        else:
            drift = NA
        rows.append({
            "index": str(position.index if position.index is not None else len(rows)),
            "neighbors": neighbors,
            "norm_ratio": fmt_num(position.norm_ratio, 2),
            "norm_percentile": _percentile(position.norm_percentile),
            "best_similarity": fmt_num(position.best_similarity),
            "similarity_percentile": _percentile(position.similarity_percentile),
            "off_manifold": position.off_manifold is True,
            "init_token": display_token(init) if init is not None else "",
            "init_similarity": fmt_num(position.init_similarity),
            "drift": drift,
            "importance": {True: "matters", False: "ignored"}.get(
                matters.get(int(position.index)) if position.index is not None else None, ""),
        })
    fidelity = projection.fidelity
    if fidelity is not None:
        level = fidelity_level(fidelity)
        fidelity_view: dict[str, Any] | None = {
            "projected_text": str(projection.projected_words or fidelity.projected_text or NA),
            "pieces_marked": "\u2026" in str(projection.projected_words or ""),
            "agreement": fmt_pct(fidelity.agreement, 0),
            "soft_accuracy": fmt_num(fidelity.soft_accuracy),
            "projected_accuracy": fmt_num(fidelity.projected_accuracy),
            "n_examples": text_or_na(fidelity.n_examples),
            "verdict": level or NA,
            "verdict_class": verdict_class(level),
            "message": fidelity_message(fidelity) or "",
        }
    else:
        fidelity_view = None
    n_virtual = projection.num_virtual_tokens
    return {
        "metric": str(projection.metric or NA),
        "top_k": text_or_na(projection.top_k),
        "num_virtual_tokens": str(n_virtual if projection.has("num_virtual_tokens")
                                  else len(rows)),
        "positions": rows,
        "fidelity": fidelity_view,
        "summary": str(projection.summary or ""),
    }


def _percentile(value: Any) -> str:
    """``"97th pct."``, or ``""`` when not computed."""
    number = as_float(value)
    return f"{number:.0f}th pct." if number is not None else ""


def _attribution(
    attribution: AttributionResult | None, position_labels: list[str] | None
) -> dict[str, Any] | None:
    if attribution is None:
        return None
    examples_in = attribution.examples or []
    by_group_in = attribution.by_group or {}
    has_positions = any(as_float(v) is not None for v in attribution.per_position or [])
    has_examples = any(
        as_float(v) is not None for e in examples_in for v in e.prompt_attributions or []
    )
    has_groups = any(
        as_float(v) is not None
        for block in by_group_in.values()
        for group, values in (block.groups or {}).items()
        if group not in (block.small_groups or [])  # groups under min_group_size: never drawn
        for v in values or []
    )
    drawn = [  # (whether there is data, how to draw it, alt text, caption); drawn lazily
        (has_positions,
         lambda: figures.per_position_bars(attribution, position_labels=position_labels),
         "Bar chart of the mean attribution of each prompt position.",
         "Mean attribution per virtual token over the attributed examples. Blue bars push "
         "towards the predicted label, red bars away from it; diamonds show the mean absolute "
         "attribution."),
        (has_examples,
         lambda: figures.attribution_heatmap(attribution, 20, position_labels=position_labels),
         "Heat map of attribution per example (rows) and prompt position (columns).",
         "Per example (rows, first 20) and prompt position (columns). Rows that look alike "
         "mean the prompt acts the same way on every input."),
        (has_groups,
         lambda: figures.group_attribution_chart(attribution, position_labels=position_labels),
         "Line chart of the mean attribution per prompt position for each group.",
         "Mean attribution per prompt position for each group with at least min_group_size "
         "attributed examples (smaller groups are not drawn). Groups whose predicted labels "
         "differ can separate for that reason alone: read the like-for-like comparison below "
         "before naming a position."),
    ]
    charts = [_figure(draw, alt=alt, caption=caption) for wanted, draw, alt, caption in drawn
              if wanted]
    examples = [_attribution_example(example) for example in examples_in[:5]]
    by_group = [_attribution_group(feature, block) for feature, block in by_group_in.items()]
    share = as_float(attribution.prompt_share)
    delta = as_float(attribution.max_convergence_delta)
    convergence = convergence_view(attribution)
    return {
        "method": str(attribution.method or NA).replace("_", " "),
        "n_steps": text_or_na(attribution.n_steps),
        "baseline": str(attribution.baseline or NA),
        "n_examples": text_or_na(attribution.n_examples),
        "budget": attribution_budget_sentence(attribution),
        "prompt_share": fmt_pct(share),
        "max_convergence_delta": fmt_num(delta, 4),
        "delta_ok": delta is not None and delta <= 0.05
        if convergence is None else convergence["all_converged"],
        "convergence": convergence,
        "charts": charts,
        "examples": examples,
        "by_group": by_group,
    }


def _attribution_example(example: AttributionExample) -> dict[str, Any]:
    """One attributed example: its text, target, top tokens and convergence."""
    tokens = [
        {"token": str(t.token if t.token is not None else ""),
         "attribution": fmt_num(t.attribution),
         "positive": (as_float(t.attribution) or 0.0) >= 0}
        for t in (example.top_tokens or [])[:6]
    ]
    target = example.target_label if example.target_label is not None else example.target
    return {
        "text": short_text(example.text if example.text is not None else "", 220),
        "target": str(target) if target is not None else NA,
        "top_tokens": tokens,
        "convergence_delta": fmt_num(example.convergence_delta, 4),
        "n_steps": text_or_na(example.n_steps),
        "not_converged": example.converged is False,
    }


def _attribution_group(feature: str, block: AttributionGroups) -> dict[str, Any]:
    """One feature's per-group attribution: top positions, those within error, small groups.

    With a like-for-like comparison (``like_for_like``) its caveated sentence and
    per-position table replace the bare list of positions.
    """
    like = group_difference_view(feature, block)
    within = block.within_error or []
    top = [f"{p} (within the integration error)" if 0 <= p < len(within) and within[p] is True
           else str(p) for p in block.top_positions or []]
    return {"feature": str(feature), "like": like,
            "top_positions": "" if like is not None else ", ".join(top) or NA,
            "small_groups": ", ".join(str(g) for g in block.small_groups or []),
            "min_group_size": str(block.min_group_size if block.has("min_group_size") else NA)}


def _baselines(baselines: Mapping[str, BaselineResult] | None) -> dict[str, Any] | None:
    """One column per prompt, one row per metric (reads well with many disparities)."""
    if not baselines:
        return None
    order = list(_BASELINE_LABELS)
    prompts = sorted(
        ((str(k), v) for k, v in baselines.items()),
        key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]),
    )
    ordered = disparity_order(name for _, row in prompts for name in row.disparities or {})
    columns = []
    for key, row in prompts:
        label = _BASELINE_LABELS.get(key, key)
        detail = row.label
        detail = str(detail) if detail not in (None, "") else ""
        if detail.strip().lower() in (label.lower(), f"the {label.lower()}"):
            detail = ""
        columns.append({"label": label, "detail": detail})
    metric_rows = [("Accuracy", "higher is better", [r.accuracy for _, r in prompts])]
    if any(r.has("agreement_with_soft_prompt") for _, r in prompts):
        metric_rows.append(("Same decision as the soft prompt", "share of examples",
                            [r.agreement_with_soft_prompt for _, r in prompts]))
    for name in ordered:
        direction = "higher is fairer" if name.endswith("_ratio") else "lower is fairer"
        metric_rows.append((disparity_label(name), direction,
                            [(r.disparities or {}).get(name) for _, r in prompts]))
    # early results of schema version "1" carried a flip rate per baseline
    if any("counterfactual_flip_rate" in r.extra for _, r in prompts):
        metric_rows.append(("Counterfactual flip rate", "lower is fairer",
                            [r.extra.get("counterfactual_flip_rate") for _, r in prompts]))
    rows = [{"name": name, "direction": direction, "cells": [fmt_num(v) for v in values]}
            for name, direction, values in metric_rows]
    return {"columns": columns, "rows": rows}


def _provenance(
    provenance: Provenance | None, spec: SpecRecord | None, integrity: Integrity | None = None
) -> dict[str, Any] | None:
    spec_text = _json_text(spec.to_dict()) if spec is not None else None
    if provenance is None:
        return {"facts": [], "hashes": [], "versions": [], "spec": spec_text} if spec_text \
            else None
    model = provenance.model
    prompt = provenance.prompt
    data = provenance.data

    def text(value: Any) -> str:
        return NA if value in (None, "") else str(value)

    items = [
        ("Model", text(model.reference if model else None)),
        ("Model files", text(model.resolved if model else None)),
        ("Model revision", text(model.revision if model else None)),
        ("Prompt", text(prompt.source if prompt else None)),
        ("Data", text(data.source if data else None)),
        ("Data rows", text(data.n_rows if data else None)),
        ("Data sha256", text(data.sha256 if data else None)),
        ("Seed", text(provenance.seed)),
        ("Device", text(provenance.device)),
        ("Created", text(provenance.created_at)),
        ("Command", text(provenance.command)),
    ]
    content = integrity.content_sha256 if integrity is not None else None
    if content:
        items.append(("Result content sha256", text(content)))
    hashes = []
    for owner, block in (("model", model), ("prompt", prompt)):
        for filename, digest in ((block.sha256 if block is not None else None) or {}).items():
            hashes.append({"owner": owner, "file": str(filename), "sha256": text(digest)})
    versions = [{"name": str(k), "version": text(v)}
                for k, v in (provenance.versions or {}).items()]
    return {
        "facts": [{"name": k, "value": v} for k, v in items],
        "hashes": hashes,
        "versions": versions,
        "spec": spec_text,
    }


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _figure(
    make: Callable[[], Figure], *, alt: str, caption: str = ""
) -> dict[str, str | None]:
    """Draw one figure as a data URI; a figure that cannot be drawn becomes a note."""
    try:
        uri = figures.figure_to_data_uri(make())
    except (ValueError, TypeError, KeyError, IndexError) as error:
        logger.warning("report figure skipped (%s): %s", alt, error)
        uri = None
    return {"uri": uri, "alt": alt, "caption": caption}
