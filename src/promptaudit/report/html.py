"""Render the audit result as one self-contained HTML page.

The page is built from the result dict alone: :func:`build_html_context` turns it into
plain dicts of display strings, and the ``report.html`` jinja2 template (autoescape and
``StrictUndefined`` on, no ``|safe`` anywhere) lays them out. Styles are inline, figures
are PNG ``data:`` URIs, and there is no script and no external URL, so the file reads
the same offline, in a mail attachment or printed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
from matplotlib.figure import Figure

from promptaudit.report import figures
from promptaudit.report._bias_audit import bias_audit_view
from promptaudit.report._common import (
    DISPARITY_LABELS,
    GROUP_METRIC_LABELS,
    NA,
    as_float,
    as_list,
    as_mapping,
    classification_rows,
    competence_sentence,
    competence_state,
    disparity_label,
    display_token,
    fidelity_detail,
    fidelity_level,
    fidelity_message,
    fidelity_sentence,
    fmt_interval,
    fmt_num,
    fmt_pct,
    fmt_threshold,
    gap_sentences,
    gate_counts,
    gate_name,
    gate_status,
    reading_sentence,
    short_text,
    status_counts,
    trust_level,
    trust_reason,
    verdict_detail,
    verdict_sentence,
    verdict_word,
)

__all__ = ["render_html", "build_html_context", "GLOSSARY"]

logger = logging.getLogger(__name__)

#: Term -> plain-language explanation, shown at the end of every report.
GLOSSARY: dict[str, str] = {
    "Soft prompt": (
        "A short sequence of learned vectors placed in front of every input. It steers a "
        "frozen model like a written instruction would, but it is made of numbers, not words."
    ),
    "Virtual token": (
        "One position (one vector) of the soft prompt. It occupies the place a word would, "
        "but need not correspond to any real word."
    ),
    "Nearest words": (
        "The vocabulary words whose embeddings are most similar to a virtual token. They are "
        "a rough translation of the prompt into words, not what the model actually reads."
    ),
    "Norm ratio": (
        "How long a virtual token's vector is compared with a typical word embedding. Far "
        "above 1 means the token is unlike any word."
    ),
    "Off-manifold": (
        "A virtual token that is no closer to any real word than random vectors are: its best "
        "cosine similarity to a word does not exceed the 99th percentile reached by 1,000 "
        "random vectors drawn with the vocabulary's mean and spread (about 0.26 for the "
        "bundled MiniLM, against 1.0 for a word itself). Its nearest words say nothing "
        "about it. A norm far outside the words' range is reported separately."
    ),
    "Trust in the reading": (
        "One level from fidelity and typicality together. High: the words give the soft "
        "prompt's decision on at least 90% of examples and at least 80% of virtual tokens are "
        "closer to a word than chance. Low: fewer than 50% are, or the words agree on fewer "
        "than 70% of examples. Moderate: otherwise, and at most moderate when fidelity was "
        "not measured."
    ),
    "Drift": (
        "How far a virtual token moved from the word it was initialised with during tuning."
    ),
    "Fidelity": (
        "How well the nearest-word reading stands in for the soft prompt: the share of "
        "examples on which the words, used as an ordinary text prompt, give the same decision."
    ),
    "Selection rate": "The share of a group that receives the favourable outcome.",
    "Demographic parity": (
        "Groups receive the favourable outcome at similar rates. The ratio is the lowest "
        "group rate divided by the highest (1 is equal; below 0.8 fails the common "
        "four-fifths rule); the difference is highest minus lowest (0 is equal)."
    ),
    "Equalized odds": (
        "Groups have similar error rates: both the true positive rate and the false positive "
        "rate match across groups. The difference reports the larger of the two gaps."
    ),
    "Equal opportunity": (
        "Qualified members of each group (true label positive) are selected at similar rates, "
        "i.e. the true positive rates match."
    ),
    "Flip rate": (
        "The share of counterfactual examples whose decision changes when only identity terms "
        "(names, pronouns, group words) are swapped. 0 means identity words never change the "
        "decision."
    ),
    "Integrated gradients": (
        "An attribution method: it measures how much each input position (prompt positions "
        "and input words) contributes to the score of the predicted label, by accumulating "
        "gradients along a path from a neutral baseline to the real input."
    ),
    "Convergence delta": (
        "A self-check of integrated gradients: how far the attributions fail to add up to the "
        "actual change in score. Small values (near 0) mean the attributions are reliable."
    ),
    "Bootstrap interval": (
        "A range of plausible values for a metric, found by recomputing it on many resamples "
        "of the evaluation data. Wide intervals mean the data cannot pin the value down."
    ),
    "Impact ratio": (
        "A category's selection (or scoring) rate divided by the rate of the most-selected "
        "category. NYC Local Law 144 bias audits publish it per sex, race/ethnicity and their "
        "intersection; under the EEOC four-fifths rule a ratio below 0.8 is generally "
        "regarded as evidence of adverse impact."
    ),
    "Fisher exact test": (
        "A test of whether a category's selected / not-selected counts could differ from "
        "the reference category's by chance. A small p-value (e.g. below 0.05) means chance "
        "alone is an unlikely explanation; it says nothing about the size of the gap."
    ),
    "Verdict states": (
        "Every gate ends in one of three states. Pass: the threshold is met and, where the "
        "metric has a bootstrap interval, the whole interval meets it. Fail: the threshold is "
        "missed beyond doubt, or the metric is undefined or missing. Inconclusive: the "
        "interval straddles the threshold, so this data cannot say which side the true value "
        "is on. The audit's gate_policy decides whether an inconclusive gate counts as passed "
        "or failed (default: failed)."
    ),
    "Rows to decide": (
        "For an inconclusive gate: about how many evaluation rows (tuples, for the flip rate) "
        "would give an interval that clears the threshold with 80% probability, if the "
        "observed value is the true one. The interval's half-width on the threshold's side is "
        "scaled by 1/sqrt(n): n' = n ((z + 0.84) h / (z |value - threshold|))^2. A planning "
        "figure, not a guarantee."
    ),
    "Competence": (
        "Whether the prompt does its task at all: its balanced accuracy is above chance (1/K "
        "for K classes) with confidence, and not clearly below the baseline prompts (the "
        "initialisation text or no prompt, the nearest-word prompt). Fairness figures of a "
        "prompt that does not work describe a useless classifier."
    ),
    "Balanced accuracy": (
        "The mean over classes of the share of each class predicted correctly (recall). A "
        "constant prediction scores exactly 1/K however skewed the labels are, so label "
        "imbalance cannot make a useless model look good."
    ),
    "Undefined": (
        "A ratio whose two rates are both 0 (for example when nobody is selected) has no "
        "value: it is reported as n/a, not as parity, and a gate on it fails."
    ),
    "Small group": (
        "A group with fewer examples than the audit's minimum group size; its rates are "
        "uncertain and gaps involving it should be read with caution."
    ),
}

_GATE_BOUNDS = {
    "point": "point estimate",
    "lower": "lower interval bound",
    "upper": "upper interval bound",
}

_BASELINE_LABELS = {
    "soft_prompt": "Tuned soft prompt",
    "projected_prompt": "Nearest words as a text prompt",
    "init_text": "Initialisation text",
    "no_prompt": "No prompt",
}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("promptaudit.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(result: dict) -> str:
    """Render an audit result as a self-contained HTML page.

    Parameters
    ----------
    result : dict
        The audit result JSON dict (``schema_version`` ``"1"``). Sections that are
        missing or ``None`` render a short "not computed" note.

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
    context = build_html_context(result)
    page = _environment().get_template("report.html").render(**context)
    if isinstance(result.get("mitigation"), dict) and "</main>" in page:
        from promptaudit.report.comparison import mitigation_html  # before / after

        at = page.rindex("</main>")
        page = page[:at] + mitigation_html(result["mitigation"]) + page[at:]
    return page


# --------------------------------------------------------------------------- context


def build_html_context(result: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a result dict into the plain dict of display strings the template reads.

    Parameters
    ----------
    result : mapping
        The audit result JSON dict.

    Returns
    -------
    dict
        Keys ``title``, ``summary``, ``task``, ``gates``, ``fairness``,
        ``counterfactual``, ``projection``, ``attribution``, ``baselines``,
        ``provenance``, ``glossary``, ``bias_audit``; a section that was not computed is
        ``None``.
    """
    audit = as_mapping(result.get("audit"))
    name = str(audit.get("name") or "unnamed audit")
    projection = result.get("projection")
    projection = projection if isinstance(projection, Mapping) else None
    position_labels = _position_labels(projection)
    return {
        "title": name,
        "summary": _summary(result, projection),
        "task": _task(as_mapping(result.get("task"))),
        "gates": _gates(result),
        "fairness": _fairness(result.get("fairness"),
                              as_mapping(result.get("task")).get("classification_report_by_group")),
        "counterfactual": _counterfactual(as_mapping(result.get("fairness")).get("counterfactual")),
        "projection": _projection(projection),
        "attribution": _attribution(result.get("attribution"), position_labels),
        "baselines": _baselines(result.get("baselines")),
        "provenance": _provenance(result.get("provenance"), audit.get("spec"),
                                  result.get("integrity")),
        "schema_version": str(result.get("schema_version") or NA),
        "glossary": [{"term": k, "text": v} for k, v in GLOSSARY.items()],
        "bias_audit": bias_audit_view(result),
    }


def _summary(result: Mapping[str, Any], projection: Mapping[str, Any] | None) -> dict[str, Any]:
    failed, total = gate_counts(result)
    passed = result.get("passed") is True
    fairness = as_mapping(result.get("fairness"))
    verdict = trust_level(as_mapping(projection)) or fidelity_level(
        as_mapping(as_mapping(projection).get("fidelity")))
    word = verdict_word(result)
    counts = status_counts(result)
    return {
        "passed": passed,
        "verdict_word": word,
        "status_class": {"PASS": "pass", "FAIL": "fail"}.get(word, "inconclusive"),
        "inconclusive": counts["inconclusive"],
        "competence": competence_sentence(result),
        "competence_class": {"works": "pass", "broken": "fail"}.get(
            competence_state(result), "inconclusive"),
        "verdict": verdict_sentence(result),
        "verdict_detail": verdict_detail(result),
        "failed": counts["fail"] if counts["inconclusive"] else failed,
        "total": total,
        "gaps": gap_sentences(result),
        "reading": reading_sentence(projection) if projection else None,
        "fidelity": fidelity_sentence(projection) if projection else None,
        "fidelity_detail": " ".join(x for x in (trust_reason(as_mapping(projection)),
                                                 fidelity_detail(projection)) if x)
        if projection else None,
        "fidelity_verdict": str(verdict or NA),
        "fidelity_class": _verdict_class(verdict),
        "warnings": [str(w) for w in as_list(fairness.get("warnings"))],
    }


def _verdict_class(verdict: Any) -> str:
    """CSS class word for a fidelity verdict: ``high``, ``moderate``, ``low`` or ``na``."""
    word = str(verdict or "").lower()
    return word if word in ("high", "moderate", "low") else "na"


def _task(task: Mapping[str, Any]) -> dict[str, Any] | None:
    if not task:
        return None
    counts = as_mapping(task.get("prediction_counts"))
    competence = as_mapping(task.get("competence"))
    baselines = [
        {"name": _BASELINE_LABELS.get(str(k), str(k)), "accuracy": fmt_num(v)}
        for k, v in as_mapping(competence.get("baselines")).items()
    ]
    return {
        "competence": {
            "balanced_accuracy": fmt_num(competence.get("accuracy")),
            "interval": fmt_interval(competence.get("accuracy_interval")),
            "chance": fmt_num(competence.get("chance_accuracy")),
            "over_baseline": fmt_num(competence.get("accuracy_over_baseline")),
            "over_interval": fmt_interval(competence.get("accuracy_over_baseline_interval")),
            "baselines": baselines,
        } if competence else None,
        "report": classification_rows(task.get("classification_report")),
        "type": str(task.get("type") or NA),
        "labels": ", ".join(str(label) for label in as_list(task.get("labels"))) or NA,
        "positive_label": str(task.get("positive_label") or NA),
        "n_examples": str(task.get("n_examples") if task.get("n_examples") is not None else NA),
        "accuracy": fmt_num(task.get("accuracy")),
        "n_truncated": str(task.get("n_truncated") if task.get("n_truncated") is not None
                           else NA),
        "prediction_counts": [{"label": str(k), "count": str(v)} for k, v in counts.items()],
    }


def _gates(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    fairness = as_mapping(result.get("fairness"))
    per_feature = set(DISPARITY_LABELS) | set(as_mapping(fairness.get("disparities")))
    rows = []
    for gate in as_list(result.get("gates")):
        gate = as_mapping(gate)
        passed = gate.get("passed") is True
        feature = gate.get("feature")
        rows.append({
            "name": gate_name(gate),
            "metric": str(gate.get("metric") or NA),
            "feature": str(feature) if feature not in (None, "")
            else "worst feature" if gate.get("metric") in per_feature else "\u2014",
            "op": str(gate.get("op") or NA),
            "threshold": fmt_threshold(gate.get("threshold")),
            "value": fmt_num(gate.get("value")),
            "bound": _GATE_BOUNDS.get(str(gate.get("bound")), str(gate.get("bound") or NA)),
            "passed": passed,
            "status": gate_status(gate),
            "interval": fmt_interval(gate.get("interval")),
            "rows_to_decide": str(gate.get("rows_to_decide"))
            if gate.get("rows_to_decide") is not None else "",
            "rows_unit": str(gate.get("rows_unit") or "rows"),
            "message": str(gate.get("message") or ""),
        })
    return rows


def _group_table(block: Mapping[str, Any]) -> dict[str, Any]:
    by_group = as_mapping(block.get("by_group"))
    intervals = as_mapping(block.get("intervals"))
    shown = ("selection_rate", "accuracy", "true_positive_rate", "false_positive_rate",
             "mean_score")
    metrics = [m for m in shown if any(m in as_mapping(row) for row in by_group.values())]
    rows = []
    for group, row in by_group.items():
        row = as_mapping(row)
        group_intervals = as_mapping(intervals.get(group))
        rows.append({
            "group": str(group),
            "count": str(row.get("count") if row.get("count") is not None else NA),
            "small": row.get("small") is True,
            "cells": [
                {"value": fmt_num(row.get(m)), "interval": fmt_interval(group_intervals.get(m))}
                for m in metrics
            ],
        })
    return {
        "metrics": [GROUP_METRIC_LABELS.get(m, m) for m in metrics],
        "rows": rows,
        "small_groups": [str(g) for g in as_list(block.get("small_groups"))],
    }


def _fairness(fairness: Any, reports: Any = None) -> dict[str, Any] | None:
    if not isinstance(fairness, Mapping):
        return None
    blocks = []
    for feature, block in as_mapping(fairness.get("by_feature")).items():
        if isinstance(block, Mapping):
            blocks.append((str(feature), str(feature), block))
    intersection = fairness.get("intersection")
    if isinstance(intersection, Mapping) and str(intersection.get("feature")) in as_mapping(
        fairness.get("by_feature")
    ):
        intersection = None  # already listed: the intersection is a feature like the others
    if isinstance(intersection, Mapping):
        names = [str(f) for f in as_list(fairness.get("sensitive_features"))]
        label = " \u00d7 ".join(names) + " (intersection)" if names else "Intersection"
        blocks.append(("intersection", label, intersection))
    features = []
    for key, label, block in blocks:
        chart = _figure(
            lambda k=key: figures.group_metric_chart(fairness, k, "selection_rate"),
            alt=f"Bar chart of the selection rate for each {label} group with bootstrap "
                "intervals.",
        )
        group_reports = as_mapping(as_mapping(reports).get(key))
        features.append({"key": key, "label": label, "table": _group_table(block),
                         "chart": chart,
                         "reports": [{"group": str(g), "rows": classification_rows(r)}
                                     for g, r in group_reports.items()]})

    # Disparities: one row per metric, one column per feature, plus the worst value.
    disparity_names: list[str] = list(DISPARITY_LABELS)
    for _key, _label, block in blocks:
        for name in as_mapping(block.get("disparities")):
            if name not in disparity_names:
                disparity_names.append(str(name))
    for name in as_mapping(fairness.get("disparities")):
        if name not in disparity_names:
            disparity_names.append(str(name))
    present = [
        n for n in disparity_names
        if any(n in as_mapping(b.get("disparities")) for _, _, b in blocks)
        or n in as_mapping(fairness.get("disparities"))
    ]
    worst = as_mapping(fairness.get("disparities"))
    worst_intervals = as_mapping(fairness.get("disparity_intervals"))
    worst_feature = as_mapping(fairness.get("worst_feature"))
    disparity_rows = []
    for name in present:
        cells = []
        for _key, _label, block in blocks:
            cells.append({
                "value": fmt_num(as_mapping(block.get("disparities")).get(name)),
                "interval": fmt_interval(as_mapping(block.get("disparity_intervals")).get(name)),
            })
        feature = worst_feature.get(name)
        disparity_rows.append({
            "name": disparity_label(name),
            "key": name,
            "direction": "higher is fairer (1 = equal)" if name.endswith("_ratio")
            else "lower is fairer (0 = equal)",
            "cells": cells,
            "worst": fmt_num(worst.get(name)),
            "worst_interval": fmt_interval(worst_intervals.get(name)),
            "worst_feature": str(feature) if feature is not None else "",
        })
    confidence = as_float(fairness.get("confidence"))
    return {
        "features": features,
        "columns": [label for _, label, _ in blocks],
        "disparities": disparity_rows,
        "confidence": f"{100 * confidence:.0f}%" if confidence is not None else NA,
        "bootstrap": str(fairness.get("bootstrap") if fairness.get("bootstrap") is not None
                         else NA),
        "min_group_size": str(fairness.get("min_group_size")
                              if fairness.get("min_group_size") is not None else NA),
        "reference_group": _reference_text(fairness.get("reference_group")),
        "warnings": [str(w) for w in as_list(fairness.get("warnings"))],
    }


def _reference_text(reference: Any) -> str:
    if isinstance(reference, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in reference.items()) or NA
    return str(reference or NA)


def _counterfactual(counterfactual: Any) -> dict[str, Any] | None:
    if not isinstance(counterfactual, Mapping):
        return None
    source = str(counterfactual.get("source") or NA)
    source_text = {
        "pair_column": "pairs given in the data (rows that differ only in identity)",
        "builtin:identity": "the built-in identity term lists (names, pronouns, group words)",
    }.get(source, source)
    groups = []
    for group, row in as_mapping(counterfactual.get("by_group")).items():
        row = as_mapping(row)
        groups.append({
            "group": str(group),
            "flip_rate": fmt_pct(row.get("flip_rate")),
            "mean_abs_delta": fmt_num(row.get("mean_abs_delta")),
            "count": str(row.get("count") if row.get("count") is not None else NA),
        })
    return {
        "flip_rate_interval": fmt_interval(counterfactual.get("flip_rate_interval")),
        "flip_rate": fmt_pct(counterfactual.get("flip_rate")),
        "flip_rate_raw": fmt_num(counterfactual.get("flip_rate")),
        "mean_abs_delta": fmt_num(counterfactual.get("mean_abs_delta")),
        "n_tuples": str(counterfactual.get("n_tuples")
                        if counterfactual.get("n_tuples") is not None else NA),
        "source": source_text,
        "groups": groups,
    }


def _position_labels(projection: Mapping[str, Any] | None) -> list[str] | None:
    if projection is None:
        return None
    labels = []
    for position in as_list(projection.get("positions")):
        position = as_mapping(position)
        neighbors = as_list(position.get("neighbors"))
        word = ""
        if neighbors:
            first = as_mapping(neighbors[0])
            word = str(first.get("display") or display_token(first.get("token") or ""))
        labels.append(f"{position.get('index', len(labels))} {word}".strip())
    return labels or None


def _projection(projection: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if projection is None:
        return None
    rows = []
    for position in as_list(projection.get("positions")):
        position = as_mapping(position)
        neighbors = []
        for neighbor in as_list(position.get("neighbors")):
            neighbor = as_mapping(neighbor)
            word = neighbor.get("display")
            if word in (None, ""):
                word = display_token(neighbor.get("token", ""))
            neighbors.append({"word": str(word if word is not None else NA),
                              "token": str(neighbor.get("token", "")),
                              "score": fmt_num(neighbor.get("score"))})
        init = position.get("init_token")
        still = position.get("still_init")
        if init is None:
            drift = "random initialisation"
        elif still is True:
            drift = "still its initial word"
        elif still is False:
            drift = "moved away"
        else:
            drift = NA
        percentile = as_float(position.get("norm_percentile"))
        sim_percentile = as_float(position.get("similarity_percentile"))
        rows.append({
            "index": str(position.get("index", len(rows))),
            "neighbors": neighbors,
            "norm_ratio": fmt_num(position.get("norm_ratio"), 2),
            "norm_percentile": f"{percentile:.0f}th pct." if percentile is not None else "",
            "best_similarity": fmt_num(position.get("best_similarity")),
            "similarity_percentile": f"{sim_percentile:.0f}th pct."
            if sim_percentile is not None else "",
            "off_manifold": position.get("off_manifold") is True,
            "init_token": display_token(init) if init is not None else "",
            "init_similarity": fmt_num(position.get("init_similarity")),
            "drift": drift,
        })
    fidelity = projection.get("fidelity")
    if isinstance(fidelity, Mapping):
        level = fidelity_level(fidelity)
        fidelity_view: dict[str, Any] | None = {
            "projected_text": str(fidelity.get("projected_text") or NA),
            "agreement": fmt_pct(fidelity.get("agreement"), 0),
            "soft_accuracy": fmt_num(fidelity.get("soft_accuracy")),
            "projected_accuracy": fmt_num(fidelity.get("projected_accuracy")),
            "n_examples": str(fidelity.get("n_examples")
                              if fidelity.get("n_examples") is not None else NA),
            "verdict": level or NA,
            "verdict_class": _verdict_class(level),
            "message": fidelity_message(fidelity) or "",
        }
    else:
        fidelity_view = None
    return {
        "metric": str(projection.get("metric") or NA),
        "top_k": str(projection.get("top_k") if projection.get("top_k") is not None else NA),
        "num_virtual_tokens": str(projection.get("num_virtual_tokens", len(rows))),
        "positions": rows,
        "n_off_manifold": sum(1 for r in rows if r["off_manifold"]),
        "fidelity": fidelity_view,
        "summary": str(projection.get("summary") or ""),
    }


def _attribution(attribution: Any, position_labels: list[str] | None) -> dict[str, Any] | None:
    if not isinstance(attribution, Mapping):
        return None
    has_positions = any(as_float(v) is not None for v in as_list(attribution.get("per_position")))
    has_examples = any(
        as_float(v) is not None
        for e in as_list(attribution.get("examples"))
        for v in as_list(as_mapping(e).get("prompt_attributions"))
    )
    has_groups = any(
        as_float(v) is not None
        for block in as_mapping(attribution.get("by_group")).values()
        for values in as_mapping(as_mapping(block).get("groups")).values()
        for v in as_list(values)
    )
    charts = []
    if has_positions:
        charts.append(_figure(
            lambda: figures.per_position_bars(attribution, position_labels=position_labels),
            alt="Bar chart of the mean attribution of each prompt position.",
            caption="Mean attribution per virtual token over the attributed examples. Blue bars "
                    "push towards the predicted label, red bars away from it; diamonds show "
                    "the mean absolute attribution.",
        ))
    if has_examples:
        charts.append(_figure(
            lambda: figures.attribution_heatmap(attribution, 20,
                                                position_labels=position_labels),
            alt="Heat map of attribution per example (rows) and prompt position (columns).",
            caption="Per example (rows, first 20) and prompt position (columns). Rows that look "
                    "alike mean the prompt acts the same way on every input.",
        ))
    if has_groups:
        charts.append(_figure(
            lambda: figures.group_attribution_chart(attribution,
                                                    position_labels=position_labels),
            alt="Line chart of the mean attribution per prompt position for each group.",
            caption="Mean attribution per prompt position for each group. Lines that separate "
                    "show prompt positions that act differently on different groups.",
        ))
    examples = []
    for example in as_list(attribution.get("examples"))[:5]:
        example = as_mapping(example)
        tokens = [
            {"token": str(as_mapping(t).get("token", "")),
             "attribution": fmt_num(as_mapping(t).get("attribution")),
             "positive": (as_float(as_mapping(t).get("attribution")) or 0.0) >= 0}
            for t in as_list(example.get("top_tokens"))[:6]
        ]
        target = example.get("target_label")
        if target is None:
            target = example.get("target")
        examples.append({
            "text": short_text(example.get("text", ""), 220),
            "target": str(target) if target is not None else NA,
            "top_tokens": tokens,
            "convergence_delta": fmt_num(example.get("convergence_delta"), 4),
            "n_steps": str(example["n_steps"]) if example.get("n_steps") is not None else NA,
            "not_converged": example.get("converged") is False,
        })
    by_group = [_attribution_group(feature, as_mapping(block))
                for feature, block in as_mapping(attribution.get("by_group")).items()]
    share = as_float(attribution.get("prompt_share"))
    delta = as_float(attribution.get("max_convergence_delta"))
    convergence = _attribution_convergence(attribution)
    return {
        "method": str(attribution.get("method") or NA).replace("_", " "),
        "n_steps": str(attribution.get("n_steps") if attribution.get("n_steps") is not None
                       else NA),
        "baseline": str(attribution.get("baseline") or NA),
        "n_examples": str(attribution.get("n_examples")
                          if attribution.get("n_examples") is not None else NA),
        "prompt_share": fmt_pct(share),
        "max_convergence_delta": fmt_num(delta, 4),
        "delta_ok": delta is not None and delta <= 0.05
        if convergence is None else convergence["all_converged"],
        "convergence": convergence,
        "charts": charts,
        "examples": examples,
        "by_group": by_group,
    }


def _attribution_convergence(attribution: Mapping) -> dict[str, Any] | None:
    """Completeness against the run's tolerance (integrated gradients), or None."""
    tolerance = as_float(attribution.get("delta_tolerance"))
    failed = attribution.get("n_not_converged")
    if tolerance is None or not isinstance(failed, int):
        return None
    n = attribution.get("n_examples")
    evals = attribution.get("n_gradient_evals")
    return {
        "tolerance": f"{tolerance:g}",
        "adaptive": attribution.get("n_steps") == "auto",
        "n_not_converged": str(failed),
        "n_converged": str(n - failed) if isinstance(n, int) else NA,
        "all_converged": failed == 0,
        "n_gradient_evals": str(evals) if isinstance(evals, int) else NA,
        "cap": str(attribution.get("max_gradient_evals"))
        if attribution.get("max_gradient_evals") is not None else NA,
    }


def _attribution_group(feature: Any, block: Mapping) -> dict[str, Any]:
    """One feature's per-group attribution: top positions, those within error, small groups."""
    within = as_list(block.get("within_error"))
    top = []
    for p in as_list(block.get("top_positions")):
        label = str(p)
        if isinstance(p, int) and 0 <= p < len(within) and within[p] is True:
            label += " (within the integration error)"
        top.append(label)
    small = [str(g) for g in as_list(block.get("small_groups"))]
    return {"feature": str(feature), "top_positions": ", ".join(top) or NA,
            "small_groups": ", ".join(small),
            "min_group_size": str(block.get("min_group_size", NA))}


def _baselines(baselines: Any) -> dict[str, Any] | None:
    """One column per prompt, one row per metric (reads well with many disparities)."""
    if not isinstance(baselines, Mapping) or not baselines:
        return None
    order = list(_BASELINE_LABELS)
    prompts = sorted(
        ((str(k), as_mapping(v)) for k, v in baselines.items()),
        key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]),
    )
    names: list[str] = []
    for _key, row in prompts:
        for name in as_mapping(row.get("disparities")):
            if name not in names:
                names.append(str(name))
    ordered = [n for n in DISPARITY_LABELS if n in names] + [
        n for n in names if n not in DISPARITY_LABELS]
    columns = []
    for key, row in prompts:
        label = _BASELINE_LABELS.get(key, key)
        detail = row.get("label")
        detail = str(detail) if detail not in (None, "") else ""
        if detail.strip().lower() in (label.lower(), f"the {label.lower()}"):
            detail = ""
        columns.append({"label": label, "detail": detail})
    metric_rows = [("Accuracy", "higher is better", [r.get("accuracy") for _, r in prompts])]
    if any("agreement_with_soft_prompt" in r for _, r in prompts):
        metric_rows.append(("Same decision as the soft prompt", "share of examples",
                            [r.get("agreement_with_soft_prompt") for _, r in prompts]))
    for name in ordered:
        direction = "higher is fairer" if name.endswith("_ratio") else "lower is fairer"
        metric_rows.append((disparity_label(name), direction,
                            [as_mapping(r.get("disparities")).get(name) for _, r in prompts]))
    if any("counterfactual_flip_rate" in r for _, r in prompts):
        metric_rows.append(("Counterfactual flip rate", "lower is fairer",
                            [r.get("counterfactual_flip_rate") for _, r in prompts]))
    rows = [{"name": name, "direction": direction, "cells": [fmt_num(v) for v in values]}
            for name, direction, values in metric_rows]
    return {"columns": columns, "rows": rows}


def _provenance(provenance: Any, spec: Any, integrity: Any = None) -> dict[str, Any] | None:
    spec_text = _json_text(spec) if spec is not None else None
    if not isinstance(provenance, Mapping):
        return {"facts": [], "hashes": [], "versions": [], "spec": spec_text} if spec_text \
            else None
    model = as_mapping(provenance.get("model"))
    prompt = as_mapping(provenance.get("prompt"))
    data = as_mapping(provenance.get("data"))

    def text(value: Any) -> str:
        return NA if value in (None, "") else str(value)

    items = [
        ("Model", text(model.get("reference"))),
        ("Model files", text(model.get("resolved"))),
        ("Model revision", text(model.get("revision"))),
        ("Prompt", text(prompt.get("source"))),
        ("Data", text(data.get("source"))),
        ("Data rows", text(data.get("n_rows"))),
        ("Data sha256", text(data.get("sha256"))),
        ("Seed", text(provenance.get("seed"))),
        ("Device", text(provenance.get("device"))),
        ("Created", text(provenance.get("created_at"))),
        ("Command", text(provenance.get("command"))),
    ]
    content = as_mapping(integrity).get("content_sha256")
    if content:
        items.append(("Result content sha256", text(content)))
    hashes = []
    for owner, block in (("model", model), ("prompt", prompt)):
        for filename, digest in as_mapping(block.get("sha256")).items():
            hashes.append({"owner": owner, "file": str(filename), "sha256": text(digest)})
    versions = [{"name": str(k), "version": text(v)}
                for k, v in as_mapping(provenance.get("versions")).items()]
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
