"""Like for like: whether two audit results measured the same thing the same way.

Two results are comparable figure by figure only when they evaluated the same data
(file hash, source and size), the same sensitive features and groups, the same labels
and positive label, the same base model and ``max_length``, against the same
baselines, with the same metric definitions (result schema, promptaudit release,
confidence level, reference group, bias-audit and counterfactual settings).
The prompt is what a comparison is about, so it may differ.

:func:`result_differences` lists every difference as one sentence; ``compare`` refuses
unlike results (exit 2) unless ``--allow-different`` is given, and then marks every
row a difference affects (:func:`differences_by_metric`). ``trend`` uses the same
function, so every command that puts two audits side by side applies one rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Difference", "result_differences", "differences", "differences_by_metric"]

#: Every gate metric (the rows of a comparison); ``None`` in :attr:`Difference.metrics`.
ALL = None


@dataclass(frozen=True)
class Difference:
    """One way two results differ: ``what`` differs, a ``sentence`` and the rows it affects.

    ``metrics`` is None when every row is affected, else the gate metric names.
    """

    what: str
    sentence: str
    metrics: frozenset[str] | None = ALL


def _get(data: Mapping | None, *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _spec(result: Mapping) -> Mapping:
    return _get(result, "audit", "spec") or {}


def _shown(value: Any) -> str:
    if value is None:
        return "none recorded"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _metrics(section: str) -> frozenset[str]:
    from promptaudit.spec import GATE_METRICS

    return frozenset(name for name, (where, _, _) in GATE_METRICS.items() if where == section)


def _data_identity(result: Mapping) -> dict[str, Any]:
    data = _get(result, "provenance", "data") or {}
    return {
        "sha256": data.get("sha256"),
        "source": data.get("source"),
        "n": _get(result, "task", "n_examples"),
    }


def _features(result: Mapping) -> list[str]:
    features = _get(result, "fairness", "sensitive_features")
    if features is None:
        features = _get(_spec(result), "data", "sensitive_features")
    return [str(f) for f in features or []]


def _groups(result: Mapping, feature: str) -> list[str] | None:
    block = _get(result, "fairness", "by_feature", feature)
    if not isinstance(block, Mapping):
        return None
    return sorted(str(g) for g in (block.get("by_group") or {}))


def _model(result: Mapping) -> dict[str, Any]:
    model = _get(result, "provenance", "model") or {}
    return {"reference": model.get("reference"), "sha256": model.get("sha256") or None}


def _max_length(result: Mapping) -> Any:
    value = _get(result, "task", "max_length")
    return value if value is not None else _get(_spec(result), "model", "max_length")


def _baselines(result: Mapping) -> list[str] | None:
    competence = _get(result, "task", "competence")
    if not isinstance(competence, Mapping):
        return None
    return sorted(str(name) for name in (competence.get("baselines") or {}))


def _release(result: Mapping) -> str | None:
    version = _get(result, "provenance", "versions", "promptaudit")
    if not version:
        return None
    return ".".join(str(version).split(".")[:2])


def differences(before: Mapping, after: Mapping) -> list[Difference]:
    """Every way ``after`` was measured unlike ``before`` (empty when like for like).

    Parameters
    ----------
    before, after : mapping
        Result JSON objects (``promptaudit run``).

    Returns
    -------
    list of Difference
        In a fixed order: data, size, features, groups, labels, positive label, model,
        max_length, baselines, metric definitions.
    """
    out: list[Difference] = []

    def add(what: str, old: Any, new: Any, sentence: str,
            metrics: frozenset[str] | None = ALL) -> None:
        if old != new:
            out.append(Difference(what, sentence, metrics))

    old_data, new_data = _data_identity(before), _data_identity(after)
    if old_data["sha256"] is not None or new_data["sha256"] is not None:
        add("data", old_data["sha256"], new_data["sha256"],
            f"the evaluation data differ: sha256 {_shown(old_data['sha256'])} "
            f"({_shown(old_data['source'])}) before, {_shown(new_data['sha256'])} "
            f"({_shown(new_data['source'])}) after")
    else:
        add("data", old_data["source"], new_data["source"],
            f"the evaluation data differ: {_shown(old_data['source'])} before, "
            f"{_shown(new_data['source'])} after")
    add("data size", old_data["n"], new_data["n"],
        f"the evaluation data differ in size: {_shown(old_data['n'])} rows before, "
        f"{_shown(new_data['n'])} after")
    old_features, new_features = _features(before), _features(after)
    fairness_rows = _metrics("disparities") | _metrics("bias_audit")
    add("features", old_features, new_features,
        f"the sensitive features differ: {_shown(old_features)} before, "
        f"{_shown(new_features)} after", fairness_rows)
    # Groups are a property of the data: compared when both sides record their data (a
    # caller that sets the data aside, as ``trend`` does for its periods, sets them aside too).
    data_recorded = any(value is not None for value in (*old_data.values(), *new_data.values()))
    for feature in [f for f in old_features if f in new_features and data_recorded]:
        old_groups, new_groups = _groups(before, feature), _groups(after, feature)
        if old_groups is None or new_groups is None:
            continue
        add(f"groups of {feature}", old_groups, new_groups,
            f"the groups of {feature} differ: {_shown(old_groups)} before, "
            f"{_shown(new_groups)} after", fairness_rows)
    add("labels", _get(before, "task", "labels"), _get(after, "task", "labels"),
        f"the labels differ: {_shown(_get(before, 'task', 'labels'))} before, "
        f"{_shown(_get(after, 'task', 'labels'))} after")
    add("positive label", _get(before, "task", "positive_label"),
        _get(after, "task", "positive_label"),
        f"the positive label differs: {_shown(_get(before, 'task', 'positive_label'))} "
        f"before, {_shown(_get(after, 'task', 'positive_label'))} after")
    old_model, new_model = _model(before), _model(after)
    if old_model["reference"] != new_model["reference"]:
        add("model", old_model["reference"], new_model["reference"],
            f"the base model differs: {_shown(old_model['reference'])} before, "
            f"{_shown(new_model['reference'])} after")
    elif old_model["sha256"] and new_model["sha256"]:
        add("model", old_model["sha256"], new_model["sha256"],
            f"the base model's files differ (sha256) under the same reference "
            f"{_shown(old_model['reference'])}")
    add("max_length", _max_length(before), _max_length(after),
        f"max_length differs: {_shown(_max_length(before))} before, "
        f"{_shown(_max_length(after))} after")
    old_baselines, new_baselines = _baselines(before), _baselines(after)
    if old_baselines is not None and new_baselines is not None:
        add("baselines", old_baselines, new_baselines,
            f"the baselines differ: {_shown(old_baselines)} before, {_shown(new_baselines)} "
            "after (accuracy_over_baseline is measured against another prompt)",
            frozenset({"accuracy_over_baseline"}))
    add("competence measure", _get(before, "task", "competence", "measure"),
        _get(after, "task", "competence", "measure"),
        f"the competence measure differs: {_shown(_get(before, 'task', 'competence', 'measure'))}"
        f" before, {_shown(_get(after, 'task', 'competence', 'measure'))} after",
        frozenset({"accuracy_over_baseline"}))
    add("schema", before.get("schema_version"), after.get("schema_version"),
        f"the result schema differs: {_shown(before.get('schema_version'))} before, "
        f"{_shown(after.get('schema_version'))} after")
    add("metric definitions", _release(before), _release(after),
        f"the metric definitions may differ: promptaudit {_shown(_release(before))} before, "
        f"{_shown(_release(after))} after")
    add("confidence", _get(before, "fairness", "confidence"), _get(after, "fairness", "confidence"),
        f"the confidence level differs: {_shown(_get(before, 'fairness', 'confidence'))} before, "
        f"{_shown(_get(after, 'fairness', 'confidence'))} after (intervals are not alike)")
    old_ref = _get(_spec(before), "fairness", "reference_group")
    new_ref = _get(_spec(after), "fairness", "reference_group")
    add("reference group", old_ref, new_ref,
        f"the reference group differs: {_shown(old_ref)} before, {_shown(new_ref)} after",
        _metrics("disparities"))
    for key in ("mode", "exclude_below", "unknown_values"):
        old = _get(_spec(before), "bias_audit", key)
        new = _get(_spec(after), "bias_audit", key)
        if _get(before, "bias_audit") is None or _get(after, "bias_audit") is None:
            break
        add(f"bias_audit.{key}", old, new,
            f"bias_audit.{key} differs: {_shown(old)} before, {_shown(new)} after",
            _metrics("bias_audit"))
    old_cf = _get(before, "fairness", "counterfactual", "source")
    new_cf = _get(after, "fairness", "counterfactual", "source")
    if _get(before, "fairness", "counterfactual") and _get(after, "fairness", "counterfactual"):
        add("counterfactuals", old_cf, new_cf,
            f"the counterfactuals differ: {_shown(old_cf)} before, {_shown(new_cf)} after",
            _metrics("counterfactual"))
    return out


def result_differences(before: Mapping, after: Mapping) -> list[str]:
    """One sentence per way ``after`` was measured unlike ``before`` (empty: like for like).

    Parameters
    ----------
    before, after : mapping
        Result JSON objects (``promptaudit run``).

    Returns
    -------
    list of str
        Checked: data hash and size, sensitive features and their groups, labels and
        positive label, base model, ``max_length``, baselines used, metric definitions
        (schema, promptaudit release, confidence, reference group, bias-audit and
        counterfactual settings).

    Examples
    --------
    >>> a = {"task": {"labels": ["no", "yes"], "n_examples": 10}}
    >>> result_differences(a, {"task": {"labels": ["no", "yes"], "n_examples": 12}})
    ['the evaluation data differ in size: 10 rows before, 12 after']
    """
    return [difference.sentence for difference in differences(before, after)]


def differences_by_metric(
    found: list[Difference], metrics: list[str]
) -> dict[str, list[str]]:
    """Metric -> the sentences of the differences that affect its row."""
    return {
        metric: [d.sentence for d in found if d.metrics is ALL or metric in d.metrics]
        for metric in metrics
    }
