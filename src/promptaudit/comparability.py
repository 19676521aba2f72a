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

from promptaudit.metrics import metrics_of
from promptaudit.result import AuditResult, as_result

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


def _shown(value: Any) -> str:
    if value is None:
        return "none recorded"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _differ(what: str, old: Any, new: Any, sentence: str,
            metrics: frozenset[str] | None = ALL) -> list[Difference]:
    return [Difference(what, sentence, metrics)] if old != new else []


def _spec(result: AuditResult, section: str, key: str) -> Any:
    """``audit.spec.<section>.<key>`` as the run recorded it (None where absent)."""
    spec = None if result.audit is None else result.audit.spec
    block = None if spec is None else spec.extra.get(section)
    return block.get(key) if isinstance(block, Mapping) else None


def _section(result: AuditResult, *names: str) -> Any:
    node: Any = result
    for name in names:
        node = None if node is None else getattr(node, name)
    return node


def _data_identity(result: AuditResult) -> dict[str, Any]:
    data = _section(result, "provenance", "data")
    return {"sha256": None if data is None else data.sha256,
            "source": None if data is None else data.source,
            "n": _section(result, "task", "n_examples")}


def _features(result: AuditResult) -> list[str]:
    features = _section(result, "fairness", "sensitive_features")
    if features is None:
        features = _spec(result, "data", "sensitive_features")
    return [str(f) for f in features or []]


def _groups(result: AuditResult, feature: str) -> list[str] | None:
    block = (_section(result, "fairness", "by_feature") or {}).get(feature)
    return None if block is None else sorted(str(g) for g in (block.by_group or {}))


def _data_differences(before: AuditResult, after: AuditResult) -> list[Difference]:
    """The data (hash, else source), its size, the sensitive features and their groups."""
    old, new = _data_identity(before), _data_identity(after)
    if old["sha256"] is not None or new["sha256"] is not None:
        out = _differ("data", old["sha256"], new["sha256"],
                      f"the evaluation data differ: sha256 {_shown(old['sha256'])} "
                      f"({_shown(old['source'])}) before, {_shown(new['sha256'])} "
                      f"({_shown(new['source'])}) after")
    else:
        out = _differ("data", old["source"], new["source"],
                      f"the evaluation data differ: {_shown(old['source'])} before, "
                      f"{_shown(new['source'])} after")
    out += _differ("data size", old["n"], new["n"],
                   f"the evaluation data differ in size: {_shown(old['n'])} rows before, "
                   f"{_shown(new['n'])} after")
    old_features, new_features = _features(before), _features(after)
    fairness_rows = metrics_of("disparities") | metrics_of("bias_audit")
    out += _differ("features", old_features, new_features,
                   f"the sensitive features differ: {_shown(old_features)} before, "
                   f"{_shown(new_features)} after", fairness_rows)
    # Groups are a property of the data: compared when both sides record their data (a
    # caller that sets the data aside, as ``trend`` does for its periods, sets them aside too).
    data_recorded = any(value is not None for value in (*old.values(), *new.values()))
    for feature in [f for f in old_features if f in new_features and data_recorded]:
        old_groups, new_groups = _groups(before, feature), _groups(after, feature)
        if old_groups is not None and new_groups is not None:
            out += _differ(f"groups of {feature}", old_groups, new_groups,
                           f"the groups of {feature} differ: {_shown(old_groups)} before, "
                           f"{_shown(new_groups)} after", fairness_rows)
    return out


def _max_length(result: AuditResult) -> Any:
    value = _section(result, "task", "max_length")
    return value if value is not None else _spec(result, "model", "max_length")


def _baselines(result: AuditResult) -> list[str] | None:
    competence = _section(result, "task", "competence")
    return None if competence is None else sorted(str(n) for n in (competence.baselines or {}))


def _task_differences(before: AuditResult, after: AuditResult) -> list[Difference]:
    """Labels, positive label, base model, ``max_length``, baselines and competence measure."""
    labels = [_section(r, "task", "labels") for r in (before, after)]
    positive = [_section(r, "task", "positive_label") for r in (before, after)]
    out = _differ("labels", *labels, f"the labels differ: {_shown(labels[0])} before, "
                  f"{_shown(labels[1])} after")
    out += _differ("positive label", *positive, f"the positive label differs: "
                   f"{_shown(positive[0])} before, {_shown(positive[1])} after")
    old, new = (_section(r, "provenance", "model") for r in (before, after))
    references = [None if m is None else m.reference for m in (old, new)]
    if references[0] != references[1]:
        out += _differ("model", *references, f"the base model differs: {_shown(references[0])} "
                       f"before, {_shown(references[1])} after")
    elif old is not None and new is not None and old.sha256 and new.sha256:
        out += _differ("model", old.sha256, new.sha256, "the base model's files differ "
                       f"(sha256) under the same reference {_shown(references[0])}")
    lengths = [_max_length(r) for r in (before, after)]
    out += _differ("max_length", *lengths, f"max_length differs: {_shown(lengths[0])} before, "
                   f"{_shown(lengths[1])} after")
    baselines = [_baselines(r) for r in (before, after)]
    if None not in baselines:
        out += _differ("baselines", *baselines, f"the baselines differ: {_shown(baselines[0])} "
                       f"before, {_shown(baselines[1])} after (accuracy_over_baseline is "
                       "measured against another prompt)", frozenset({"accuracy_over_baseline"}))
    measures = [_section(r, "task", "competence", "measure") for r in (before, after)]
    out += _differ("competence measure", *measures, "the competence measure differs: "
                   f"{_shown(measures[0])} before, {_shown(measures[1])} after",
                   frozenset({"accuracy_over_baseline"}))
    return out


def _release(result: AuditResult) -> str | None:
    version = (_section(result, "provenance", "versions") or {}).get("promptaudit")
    return ".".join(str(version).split(".")[:2]) if version else None


def _definition_differences(before: AuditResult, after: AuditResult) -> list[Difference]:
    """Schema, release, confidence, reference group, bias-audit and counterfactual settings."""
    schemas = [before.schema_version, after.schema_version]
    releases = [_release(before), _release(after)]
    levels = [_section(r, "fairness", "confidence") for r in (before, after)]
    references = [_spec(r, "fairness", "reference_group") for r in (before, after)]
    out = _differ("schema", *schemas, f"the result schema differs: {_shown(schemas[0])} before, "
                  f"{_shown(schemas[1])} after")
    out += _differ("metric definitions", *releases, "the metric definitions may differ: "
                   f"promptaudit {_shown(releases[0])} before, {_shown(releases[1])} after")
    out += _differ("confidence", *levels, f"the confidence level differs: {_shown(levels[0])} "
                   f"before, {_shown(levels[1])} after (intervals are not alike)")
    out += _differ("reference group", *references, "the reference group differs: "
                   f"{_shown(references[0])} before, {_shown(references[1])} after",
                   metrics_of("disparities"))
    if before.bias_audit is not None and after.bias_audit is not None:
        for key in ("mode", "exclude_below", "unknown_values"):
            old, new = _spec(before, "bias_audit", key), _spec(after, "bias_audit", key)
            out += _differ(f"bias_audit.{key}", old, new, f"bias_audit.{key} differs: "
                           f"{_shown(old)} before, {_shown(new)} after", metrics_of("bias_audit"))
    old, new = (_section(r, "fairness", "counterfactual") for r in (before, after))
    if old and new:
        out += _differ("counterfactuals", old.source, new.source, "the counterfactuals differ: "
                       f"{_shown(old.source)} before, {_shown(new.source)} after",
                       metrics_of("counterfactual"))
    return out


def differences(before: Mapping | AuditResult, after: Mapping | AuditResult) -> list[Difference]:
    """Every way ``after`` was measured unlike ``before`` (empty when like for like).

    Parameters
    ----------
    before, after : AuditResult or mapping
        Results (``promptaudit run``); a mapping is read leniently.

    Returns
    -------
    list of Difference
        In a fixed order: data, size, features, groups, labels, positive label, model,
        max_length, baselines, metric definitions.
    """
    old, new = as_result(before), as_result(after)
    return [*_data_differences(old, new), *_task_differences(old, new),
            *_definition_differences(old, new)]


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
