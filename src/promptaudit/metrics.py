"""The gate metrics: one registry of where each is read in a result, its direction and interval.

:data:`GATE_METRICS` maps a metric's name to a :class:`GateMetric`: its family (where
it lives: ``disparities``, ``counterfactual``, ``task`` or ``bias_audit``), whether
higher or lower is better, the accessor of its point value and of its bootstrap
interval on the typed result (:class:`promptaudit.result.AuditResult`), whether it
needs true labels and whether it may be negative. ``gate``, ``compare`` and the gate
policy read it; a metric without an interval accessor is *point-only*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["GateMetric", "GATE_METRICS", "metrics_of"]

#: ``accessor(result, feature)``: a figure of the typed result (None where absent).
Accessor = Callable[[Any, "str | None"], Any]


@dataclass(frozen=True)
class GateMetric:
    """One gate metric: where it is read, which way is better, and its interval.

    Attributes
    ----------
    name : str
    family : {"disparities", "counterfactual", "task", "bias_audit"}
        The part of the result it lives in; a disparity is read per sensitive feature.
    direction : {"higher", "lower"}
        Which way is better.
    value : callable
        ``value(result, feature)``: the point value (``feature`` only for disparities).
    interval : callable or None
        ``interval(result, feature)``: its ``[lower, upper]``; None for a point-only metric.
    needs_labels : bool
        Computed only with true labels (``data.label_column``).
    signed : bool
        May be negative (a difference of two accuracies: [-1, 1]).
    """

    name: str
    family: Literal["disparities", "counterfactual", "task", "bias_audit"]
    direction: Literal["higher", "lower"]
    value: Accessor
    interval: Accessor | None
    needs_labels: bool
    signed: bool = False

    @property
    def point_only(self) -> bool:
        """No interval by definition (the gate line says so)."""
        return self.interval is None


def _attribute(*names: str) -> Accessor:
    """The accessor of ``result.<names[0]>.<names[1]>...`` (None where a section is absent)."""

    def read(result: Any, feature: str | None = None) -> Any:
        node = result
        for name in names:
            if node is None:
                return None
            node = getattr(node, name)
        return node

    return read


def disparity_block(result: Any, feature: str | None) -> Any:
    """``fairness`` (the worst over features) or ``fairness.by_feature.<feature>``."""
    fairness = result.fairness
    if fairness is None or feature is None:
        return fairness
    return (fairness.by_feature or {}).get(feature)


def _disparity(name: str, direction: Literal["higher", "lower"], needs_labels: bool) -> GateMetric:
    def value(result: Any, feature: str | None = None) -> Any:
        block = disparity_block(result, feature)
        return None if block is None else (block.disparities or {}).get(name)

    def interval(result: Any, feature: str | None = None) -> Any:
        block = disparity_block(result, feature)
        return None if block is None else (block.disparity_intervals or {}).get(name)

    return GateMetric(name, "disparities", direction, value, interval, needs_labels)


def _accuracy_over_baseline(result: Any, feature: str | None = None) -> Any:
    """``task.accuracy_over_baseline``, else the competence check's own figure."""
    value = _attribute("task", "accuracy_over_baseline")(result)
    return value if value is not None else _attribute(
        "task", "competence", "accuracy_over_baseline")(result)


_COUNTERFACTUAL = ("fairness", "counterfactual")

#: Gate metric -> :class:`GateMetric`, in the order a comparison lists them.
GATE_METRICS: dict[str, GateMetric] = {
    metric.name: metric for metric in (
        _disparity("demographic_parity_difference", "lower", needs_labels=False),
        _disparity("demographic_parity_ratio", "higher", needs_labels=False),
        _disparity("equalized_odds_difference", "lower", needs_labels=True),
        _disparity("equalized_odds_ratio", "higher", needs_labels=True),
        _disparity("equal_opportunity_difference", "lower", needs_labels=True),
        _disparity("equal_opportunity_ratio", "higher", needs_labels=True),
        _disparity("accuracy_difference", "lower", needs_labels=True),
        GateMetric("counterfactual_flip_rate", "counterfactual", "lower",
                   _attribute(*_COUNTERFACTUAL, "flip_rate"),
                   _attribute(*_COUNTERFACTUAL, "flip_rate_interval"), needs_labels=False),
        GateMetric("counterfactual_mean_abs_delta", "counterfactual", "lower",
                   _attribute(*_COUNTERFACTUAL, "mean_abs_delta"), None, needs_labels=False),
        GateMetric("accuracy", "task", "higher", _attribute("task", "accuracy"), None,
                   needs_labels=True),
        GateMetric("balanced_accuracy", "task", "higher", _attribute("task", "balanced_accuracy"),
                   _attribute("task", "competence", "accuracy_interval"), needs_labels=True),
        GateMetric("min_impact_ratio", "bias_audit", "higher",
                   _attribute("bias_audit", "min_impact_ratio"),
                   _attribute("bias_audit", "min_impact_ratio_interval"), needs_labels=False),
        # balanced accuracy minus the best of chance (1/K) and the baseline prompts' balanced
        # accuracies (task.competence); in [-1, 1]
        GateMetric("accuracy_over_baseline", "task", "higher", _accuracy_over_baseline,
                   _attribute("task", "competence", "accuracy_over_baseline_interval"),
                   needs_labels=True, signed=True),
    )
}


def metrics_of(family: str) -> frozenset[str]:
    """The names of the gate metrics of one family (``disparities``, ``task``, ...)."""
    return frozenset(name for name, metric in GATE_METRICS.items() if metric.family == family)
