"""Does the prompt do its task at all? Competence and per-label classification reports.

:func:`assess_competence` judges a prompt on **balanced accuracy** (a constant predictor
scores exactly chance, ``1 / K``, whatever the label imbalance), with paired percentile
bootstrap intervals (:mod:`promptaudit.stats`: the prompt and every baseline are scored on
the same resamples). When it **works**, the reasons it gives and
``accuracy_over_baseline`` are defined in docs/result-json.md (``task.competence``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sklearn.metrics as skm

from promptaudit.stats import bootstrap_weights, finite_or_none, min_resamples, percentile_interval

__all__ = ["assess_competence", "classification_reports", "no_labels_competence"]

NO_LABELS = (
    "no true labels (data.label_column is not set), so whether the prompt does its task "
    "cannot be judged"
)


def no_labels_competence() -> dict[str, Any]:
    """The competence entry of an audit without labels: cannot be judged."""
    return {
        "works": None,
        "measure": "balanced_accuracy",
        "accuracy": None,
        "accuracy_interval": None,
        "chance_accuracy": None,
        "baselines": {},
        "best_baseline": None,
        "accuracy_over_baseline": None,
        "accuracy_over_baseline_interval": None,
        "reason": NO_LABELS,
    }


def assess_competence(
    y_true: Any, y_pred: Any, *, baselines: Mapping[str, Any] | None = None,
    bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> dict[str, Any]:
    """Whether a prompt does its task, judged on balanced accuracy.

    Parameters
    ----------
    y_true, y_pred : array-like of int
        ``(n,)`` true and predicted label indices.
    baselines : mapping, optional
        Baseline name -> ``(n,)`` predicted label indices of that baseline prompt.
    bootstrap : int
        Paired resamples for the intervals; below
        :func:`promptaudit.stats.min_resamples` no interval is given.
    confidence : float
        Coverage of the intervals.
    seed : int
        Seed of the bootstrap generator.

    Returns
    -------
    dict
        The ``task.competence`` section (layout in docs/result-json.md).

    Examples
    --------
    >>> out = assess_competence([0, 0, 0, 1], [0, 0, 0, 0], bootstrap=0)
    >>> out["accuracy"], out["chance_accuracy"], out["works"]
    (0.5, 0.5, False)
    """
    true = np.asarray(y_true, dtype=np.int64)
    predictions = {"prompt": np.asarray(y_pred, dtype=np.int64)}
    for name, pred in (baselines or {}).items():
        predictions[str(name)] = np.asarray(pred, dtype=np.int64)
    classes = np.unique(true)
    chance = 1.0 / len(classes)
    points = {
        name: float(skm.balanced_accuracy_score(true, pred)) for name, pred in predictions.items()
    }
    baseline_names = [name for name in predictions if name != "prompt"]
    best_name = max(baseline_names, key=lambda k: points[k], default=None)
    beaten = best_name is not None and points[best_name] > chance
    best_value, best_label = (points[best_name], best_name) if beaten else (chance, "chance")
    accuracy_interval, over_interval, differences = None, None, {}
    if bootstrap >= min_resamples(confidence):
        samples = _bootstrap_balanced_accuracy(true, predictions, classes, bootstrap, seed)
        accuracy_interval, over_interval, differences = _paired_intervals(
            samples, baseline_names, chance, confidence
        )
    low = accuracy_interval[0] if accuracy_interval else points["prompt"]
    # worse than a baseline beyond doubt: the difference's whole interval (or point) below 0
    worse = [name for name in baseline_names
             if (differences.get(name) or [None, points["prompt"] - points[name]])[1] < 0]
    return {
        "works": bool(low > chance and not worse),
        "measure": "balanced_accuracy",
        "accuracy": points["prompt"],
        "accuracy_interval": accuracy_interval,
        "chance_accuracy": chance,
        "baselines": {name: points[name] for name in baseline_names},
        "best_baseline": best_label,
        "accuracy_over_baseline": points["prompt"] - best_value,
        "accuracy_over_baseline_interval": over_interval,
        "baseline_difference_intervals": differences,
        "confidence": float(confidence),
        "bootstrap": int(bootstrap),
        "reason": _competence_reason(
            points, accuracy_interval, differences, worse, best_name, len(classes), confidence
        ),
    }


def _paired_intervals(
    samples: Mapping[str, np.ndarray], baseline_names: Sequence[str], chance: float,
    confidence: float,
) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Intervals of the prompt's balanced accuracy, of it minus the best of chance and the
    baselines, and of it minus each baseline, from ``(bootstrap,)`` paired resamples."""

    def interval(values: np.ndarray) -> list[float]:
        low, high = percentile_interval(values, confidence)
        return [float(low), float(high)]

    best_sampled = np.full(len(samples["prompt"]), chance)
    differences = {}
    for name in baseline_names:
        best_sampled = np.maximum(best_sampled, samples[name])
        differences[name] = interval(samples["prompt"] - samples[name])
    return interval(samples["prompt"]), interval(samples["prompt"] - best_sampled), differences


def _competence_reason(
    points: Mapping[str, float], accuracy_interval: list[float] | None,
    differences: Mapping[str, list[float]], worse: Sequence[str], best_name: str | None,
    n_classes: int, confidence: float,
) -> str:
    """The one sentence that says whether and why the prompt does its task."""
    chance = 1.0 / n_classes
    level = f"{round(100 * confidence, 4):g}%"
    described = f"balanced accuracy {points['prompt']:.3f}" + (
        f" ({level} interval {accuracy_interval[0]:.3f}-{accuracy_interval[1]:.3f})"
        if accuracy_interval
        else ""
    )
    low = accuracy_interval[0] if accuracy_interval else points["prompt"]
    if accuracy_interval is not None and accuracy_interval[1] < chance:
        return (
            f"the prompt does not do its task: {described} is below chance "
            f"({chance:.3f} for {n_classes} classes), worse than guessing: the labels may "
            "be in the wrong order (model.labels against the adapter's or the data's)"
        )
    if not low > chance:
        return (
            f"the prompt does not do its task: {described} cannot be told from chance "
            f"({chance:.3f} for {n_classes} classes)"
        )
    if worse:
        listed = ", ".join(f"{name} ({points[name]:.3f})" for name in worse)
        return f"the prompt does worse than its baseline {listed}: {described}"
    if best_name and points["prompt"] < points[best_name]:
        # Below the best baseline by the point value, but not beyond the uncertainty:
        # never "not below" about a figure that is below.
        gap = differences.get(best_name)
        shown = (
            f"; {level} interval of the difference {gap[0]:+.3f} to {gap[1]:+.3f}" if gap else ""
        )
        return (
            f"the prompt does its task: {described}, above chance ({chance:.3f}); it is below "
            f"its best baseline {best_name} ({points[best_name]:.3f}), within the "
            f"uncertainty{shown}"
        )
    return f"the prompt does its task: {described}, above chance ({chance:.3f})" + (
        f" and not below its baselines (best: {best_name} {points[best_name]:.3f})"
        if best_name
        else ""
    )


def _bootstrap_balanced_accuracy(
    true: np.ndarray, predictions: Mapping[str, np.ndarray], classes: np.ndarray, bootstrap: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Name -> ``(bootstrap,)`` balanced accuracy on the same resamples (classes absent skipped).

    The resamples of :func:`promptaudit.stats.bootstrap_weights`: a class's recall in a
    resample is its weighted hits over its weighted support.
    """
    member = (true[:, None] == classes[None, :]).astype(float)  # (n, K)
    correct = {name: member * (pred == true)[:, None] for name, pred in predictions.items()}

    def mean_recalls(weights: np.ndarray) -> np.ndarray:  # (chunk, n) -> (chunk, names)
        support = weights @ member  # (chunk, K)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([
                np.nanmean(np.where(support > 0, (weights @ hits) / support, np.nan), axis=1)
                for hits in correct.values()
            ], axis=1)

    samples = bootstrap_weights(mean_recalls, len(true), bootstrap, seed=seed)
    return {name: samples[:, k] for k, name in enumerate(correct)}


def classification_reports(
    y_true: Any, y_pred: Any, *, labels: Sequence[str],
    sensitive_features: pd.DataFrame | None = None, intersection: bool = True,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """scikit-learn's per-label classification report, overall and per group.

    Parameters
    ----------
    y_true, y_pred : array-like of int
        ``(n,)`` label indices into ``labels``.
    labels : sequence of str
        Label names in index order.
    sensitive_features : pandas.DataFrame, optional
        ``(n, n_features)`` groups; each feature (and their intersection, named
        ``"gender & race"``) gets one report per group.
    intersection : bool
        Also report the intersection of two or more features.

    Returns
    -------
    (overall, by_feature)
        ``classification_report(output_dict=True)`` with every label listed, undefined
        values ``None``; ``by_feature[feature][group]``: the same on that group's rows.
    """
    from promptaudit.fairness import INTERSECTION_SEPARATOR, intersection_names

    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    overall = _report(true, pred, labels)
    by_feature: dict[str, dict[str, Any]] = {}
    if sensitive_features is None or sensitive_features.shape[1] == 0:
        return overall, by_feature
    columns = {
        str(c): sensitive_features[c].astype(str).str.strip().to_numpy()
        for c in sensitive_features.columns
    }
    for feature, values in columns.items():
        by_feature[feature] = {
            group: _report(true[values == group], pred[values == group], labels)
            for group in sorted(set(values))
        }
    if intersection and len(columns) > 1:
        keys = list(zip(*columns.values(), strict=True))
        names = intersection_names(sorted(set(keys)))
        joint = np.array([names[k] for k in keys], dtype=object)
        by_feature[INTERSECTION_SEPARATOR.join(columns)] = {
            names[key]: _report(true[joint == names[key]], pred[joint == names[key]], labels)
            for key in sorted(names)
        }
    return overall, by_feature


def _report(true: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    return _clean(skm.classification_report(
        true, pred, labels=list(range(len(labels))), target_names=[str(lb) for lb in labels],
        output_dict=True, zero_division=np.nan,
    ))


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, float | np.floating):
        return finite_or_none(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return value
