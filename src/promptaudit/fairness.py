"""Group fairness and counterfactual metrics over predictions (no model code).

:func:`compute_group_fairness` disaggregates binarised predictions (the favourable label vs
the rest) by each sensitive feature and their intersection with fairlearn's
:class:`~fairlearn.metrics.MetricFrame`, derives disparities (between groups, or against a
reference group) and attaches bootstrap intervals from :mod:`promptaudit.stats`;
:func:`compute_counterfactual` scores how predictions move when only identity terms change.
The metrics, the disparities, when a figure is undefined (``None``: undefined is not
parity), the intervals and the layout of both results are defined in docs/result-json.md
(``fairness``). The group bootstrap computes fairlearn's percentile statistic with
vectorised sums (fairlearn's own costs 45-75 ms per resample and feature).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import sklearn.metrics as skm
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_negative_rate,
    true_positive_rate,
)
from scipy import sparse

from promptaudit.choices import GROUP_METRICS, LABEL_METRICS
from promptaudit.errors import InputError
from promptaudit.stats import (
    bootstrap_weights,
    compared_pairs,
    finite_or_none,
    folded_interval,
    min_resamples,
    percentile_interval,
    resample_rows,
    signed_gaps,
    worst_gap,
)

__all__ = [
    "BETWEEN_GROUPS",
    "DISPARITY_DIRECTIONS",
    "GROUP_METRICS",
    "INTERSECTION_SEPARATOR",
    "LABEL_METRICS",
    "BOOTSTRAP_BUDGET_BYTES",
    "bootstrap_bytes",
    "check_fairness_work",
    "compute_counterfactual",
    "compute_group_fairness",
    "intersection_names",
]

logger = logging.getLogger(__name__)

#: ``reference_group`` value meaning "compare every pair of groups".
BETWEEN_GROUPS = "between_groups"
#: Joins feature names and group names of the intersection ("female & Black").
INTERSECTION_SEPARATOR = " & "

ERR_EMPTY = "y_pred is empty; fairness metrics need at least one prediction"
ERR_SHAPE = "{name} must be one-dimensional with shape (n,); got shape {shape}"
ERR_LENGTH = "{name} has {got} rows but {reference} has {expected}; they must have one row each"
ERR_LABEL_VALUE = "{name} must hold integer label indices; got {value!r} at row {row}"
ERR_SCORE_VALUE = "{name} must hold probabilities in [0, 1]; got {value!r} at row {row}"
ERR_NO_FEATURES = "sensitive_features has no columns; pass a DataFrame with one column per feature"
ERR_COLUMN = "sensitive feature column {column!r} not found; available columns: {available}"
ERR_MISSING = (
    "sensitive feature column {column!r} has a missing value at row {row}; "
    "every row needs a group (NaN, None and empty strings are not allowed)"
)
ERR_ONE_GROUP = (
    "sensitive feature column {column!r} has only one group ({group!r}); "
    "a fairness comparison needs at least two groups"
)
ERR_METRIC = "unknown fairness metric {name!r}; allowed: {allowed}"
ERR_REFERENCE = (
    "reference group {group!r} is not a group of sensitive feature {column!r}; groups: {groups}"
)
ERR_REFERENCE_FEATURE = (
    "reference_group names feature {column!r}, which is not a sensitive feature; "
    "sensitive features: {features}"
)
ERR_CONFIDENCE = "confidence must be a number strictly between 0 and 1; got {value!r}"
ERR_BOOTSTRAP = "bootstrap must be a non-negative integer (0 disables intervals); got {value!r}"
ERR_MIN_GROUP = "min_group_size must be a non-negative integer; got {value!r}"
ERR_POSITIVE_INDEX = "positive_label_index must be a non-negative integer; got {value!r}"
ERR_TUPLE_MISSING = "tuple_ids has a missing value at row {row}; every row needs a tuple id"
ERR_INTERSECTION_NAME = (
    "a sensitive feature is named {label!r}, which is the name of the intersection of the "
    "features; rename that column"
)

# Bootstrap sums per group: resampled weights of these per-row columns.
_SUMS = ("n", "pred", "true", "tp", "correct", "score")
#: The bootstrap is refused before it starts when its estimated memory
#: (:func:`bootstrap_bytes`) is over this.
BOOTSTRAP_BUDGET_BYTES = 2 * 1024**3
#: Float64 arrays of ``(bootstrap, G)`` held per group: 6 resampled sums and 7 rates.
_ARRAYS_PER_GROUP = 13
#: Float64 arrays of ``(bootstrap, K)`` held per compared gap while an interval is folded.
_ARRAYS_PER_GAP = 6


@dataclass(frozen=True)
class _Disparity:
    kind: str  # "difference" or "ratio"
    metrics: tuple[str, ...]
    needs_labels: bool


_ODDS = ("true_positive_rate", "false_positive_rate")
_DISPARITIES = {
    "demographic_parity_difference": _Disparity("difference", ("selection_rate",), False),
    "demographic_parity_ratio": _Disparity("ratio", ("selection_rate",), False),
    "equalized_odds_difference": _Disparity("difference", _ODDS, True),
    "equalized_odds_ratio": _Disparity("ratio", _ODDS, True),
    "equal_opportunity_difference": _Disparity("difference", ("true_positive_rate",), True),
    "equal_opportunity_ratio": _Disparity("ratio", ("true_positive_rate",), True),
    "accuracy_difference": _Disparity("difference", ("accuracy",), True),
}
#: Disparity name -> whether lower or higher values are fairer.
DISPARITY_DIRECTIONS = {
    name: "lower_is_better" if spec.kind == "difference" else "higher_is_better"
    for name, spec in _DISPARITIES.items()
}


@dataclass(frozen=True)
class _View:
    """One way of grouping the rows: a sensitive feature or the intersection."""

    label: str
    groups: tuple[str, ...]  # (G,) sorted group names
    codes: np.ndarray  # (n,) int index into groups
    reference: str | None  # None = between groups
    parts: Mapping[str, Mapping[str, str]] | None = None  # intersection: name -> feature -> group


def compute_group_fairness(
    y_pred: Any, *, sensitive_features: pd.DataFrame, y_true: Any | None = None,
    y_score: Any | None = None, positive_label_index: int = 1,
    metrics: Sequence[str] = GROUP_METRICS, features: Sequence[str] | None = None,
    reference_group: str | Mapping[str, str] | None = None,
    bootstrap: int = 1000, confidence: float = 0.95, min_group_size: int = 30,
    intersection: bool = True, seed: int = 0,
) -> dict[str, Any]:
    """Group metrics, disparities and bootstrap intervals per sensitive feature.

    Parameters
    ----------
    y_pred, y_true, y_score : array-like
        ``(n,)`` predicted and true label indices, and the predicted probability of the
        positive label (for ``mean_score``). Without ``y_true`` only ``selection_rate``,
        ``mean_score`` and the demographic-parity disparities exist.
    sensitive_features : pandas.DataFrame
        ``(n, n_features)`` one column per feature; values are groups (as ``str``), none missing.
    positive_label_index : int
        Label index of the favourable outcome; other indices count as negative.
    metrics : sequence of str
        Group metrics to report, from :data:`GROUP_METRICS` (``count`` always is); those
        whose inputs are missing are skipped with a warning.
    features : sequence of str, optional
        Columns of ``sensitive_features`` to audit; default all, in column order.
    reference_group : str or mapping, optional
        ``None``: all pairs of groups; a group of every feature; or ``{feature: group}``
        (others: between groups). The intersection joins the features' when all have one.
    bootstrap, confidence, seed : int, float, int
        Resamples (0: no intervals), coverage in (0, 1) and seed of the intervals.
    min_group_size : int
        Groups with fewer rows are flagged ``small`` and produce warnings.
    intersection : bool
        Also audit the intersection of all features (when there are two or more).

    Returns
    -------
    dict
        The ``fairness`` section (layout in docs/result-json.md).

    Raises
    ------
    InputError
        Empty input, lengths that differ, a missing column or group value, a feature
        with one group, an unknown metric, or a bad option.

    Examples
    --------
    >>> groups = pd.DataFrame({"g": ["a", "a", "b", "b"]})
    >>> compute_group_fairness([1, 0, 1, 1], sensitive_features=groups, bootstrap=0)[
    ...     "disparities"]["demographic_parity_difference"]
    0.5
    """
    _check_options(positive_label_index, bootstrap, confidence, min_group_size)
    pred, true, score = _predictions(y_pred, y_true, y_score)
    columns = _sensitive_columns(sensitive_features, features, len(pred))
    labelled = true is not None
    selected, notes = _select_metrics(metrics, has_labels=labelled, has_scores=score is not None)
    views = _checked_views(columns, reference_group, intersection, labelled, bootstrap, confidence)
    pred_bin = (pred == positive_label_index).astype(np.int64)
    true_bin = None if true is None else (true == positive_label_index).astype(np.int64)
    names = [n for n, spec in _DISPARITIES.items() if labelled or not spec.needs_labels]
    entries, view_warnings = _view_entries(
        views, pred_bin, true_bin, score, selected=selected, disparity_names=names,
        bootstrap=bootstrap, confidence=confidence, min_group_size=min_group_size, seed=seed,
    )
    by_feature = {entry["feature"]: entry for entry in entries}
    worst, intervals, worst_feature, undefined = _worst_over_features(by_feature, names, bootstrap)
    warnings_out = [*notes, *view_warnings]
    for message in warnings_out:
        logger.info("fairness: %s", message)
    return {
        "sensitive_features": list(columns), "positive_label_index": int(positive_label_index),
        "reference_group": _reference_summary(reference_group), "confidence": float(confidence),
        "bootstrap": int(bootstrap), "min_group_size": int(min_group_size),
        "metrics": list(selected), "by_feature": by_feature,
        "intersection": entries[len(columns)] if len(entries) > len(columns) else None,
        "disparities": worst, "disparity_intervals": intervals,
        "worst_feature": worst_feature, "undefined": undefined, "warnings": warnings_out,
    }


def _predictions(
    y_pred: Any, y_true: Any | None, y_score: Any | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(n,)`` predicted labels, true labels and scores, checked (``n`` > 0, one length)."""
    pred = _as_labels(y_pred, "y_pred")
    n = len(pred)
    if n == 0:
        raise InputError(ERR_EMPTY)
    true = None if y_true is None else _as_labels(y_true, "y_true", expected=n)
    score = None if y_score is None else _as_scores(y_score, "y_score", expected=n)
    return pred, true, score


def _checked_views(
    columns: Mapping[str, np.ndarray], reference_group: str | Mapping[str, str] | None,
    intersection: bool, labelled: bool, bootstrap: int, confidence: float,
) -> list[_View]:
    """One view per feature, and the intersection's when asked for and there are two or more.

    Refuses (:func:`check_fairness_work`) an unknown reference group, an identifier-like
    feature and a bootstrap over the memory budget, before any work.
    """
    references = _references(reference_group, columns)
    check_fairness_work(
        pd.DataFrame(columns), bootstrap=bootstrap, confidence=confidence,
        has_labels=labelled, reference_group=references, intersection=intersection,
    )
    views = [_make_view(name, values, references.get(name)) for name, values in columns.items()]
    if intersection and len(columns) > 1:
        label = INTERSECTION_SEPARATOR.join(columns)
        if label in columns:
            raise InputError(ERR_INTERSECTION_NAME.format(label=label))
        joint_reference = None
        if all(references.get(name) for name in columns):
            joint_reference = tuple(references[name] for name in columns)
        views.append(_intersection_view(label, columns, joint_reference))
    return views


def _view_entries(
    views: Sequence[_View], pred_bin: np.ndarray, true_bin: np.ndarray | None,
    score: np.ndarray | None, *, selected: Sequence[str], disparity_names: Sequence[str],
    bootstrap: int, confidence: float, min_group_size: int, seed: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The entry of every view and the warnings; resampled only when it can hold the level."""
    samples, warnings_out = None, []
    if bootstrap >= min_resamples(confidence):
        samples = _bootstrap_group_metrics(
            views, pred_bin, true_bin, score, bootstrap=bootstrap, seed=seed
        )
    elif bootstrap > 0:
        warnings_out.append(_too_few_resamples(bootstrap, confidence, "intervals"))
    entries = []
    for index, view in enumerate(views):
        entry, view_warnings = _view_entry(
            view, _group_table(view, pred_bin, true_bin, score),
            exact=_exact_rates(view, pred_bin, true_bin), selected=selected,
            disparity_names=disparity_names, samples=None if samples is None else samples[index],
            confidence=confidence, min_group_size=min_group_size, bootstrap=bootstrap,
        )
        entries.append(entry)
        warnings_out.extend(view_warnings)
    return entries, warnings_out


def bootstrap_bytes(
    bootstrap: int, groups: Mapping[str, int], *, confidence: float, has_labels: bool,
    referenced: frozenset[str] | set[str] = frozenset(),
) -> int:
    """Estimated peak memory of the group bootstrap, in bytes (a planning figure).

    ``8 * bootstrap * (13 * sum_v G_v + 6 * K)``: 13 float64 ``(bootstrap, G_v)`` arrays per
    view ``v``, and ``K`` the most pairwise gaps (pairs times 2 metrics with labels) of a
    view whose disparity interval can be reported (the others are never resampled).

    Parameters
    ----------
    groups : mapping
        View name -> number of groups.
    referenced : set of str
        Views compared against a reference group (``G - 1`` pairs, not ``G (G - 1) / 2``).

    Examples
    --------
    >>> bootstrap_bytes(1000, {"id": 600}, confidence=0.95, has_labels=True)
    62400000
    """
    if bootstrap <= 0:
        return 0
    metrics = 2 if has_labels else 1
    widest = 0
    for name, size in groups.items():
        pairs = size - 1 if name in referenced else size * (size - 1) // 2
        gaps = metrics * pairs
        if gaps and bootstrap >= min_resamples(confidence, gaps):
            widest = max(widest, gaps)
    per_resample = _ARRAYS_PER_GROUP * sum(groups.values()) + _ARRAYS_PER_GAP * widest
    return 8 * bootstrap * per_resample


def check_fairness_work(
    sensitive_features: pd.DataFrame, *, bootstrap: int, confidence: float, has_labels: bool,
    reference_group: str | Mapping[str, str] | None = None, intersection: bool = True,
) -> None:
    """Refuse, before any work, a sensitive feature that is an identifier or a bootstrap too big.

    A feature with more than half as many groups as rows is almost certainly an
    identifier; the estimated bootstrap memory (:func:`bootstrap_bytes`) must stay under
    :data:`BOOTSTRAP_BUDGET_BYTES`. Missing values count as one group here.

    Raises
    ------
    InputError
        One line naming the feature and its counts, or the estimate, the budget and
        the most resamples that fit.
    """
    frame = sensitive_features
    frame = frame.to_frame() if isinstance(frame, pd.Series) else frame
    n = len(frame)
    if n == 0 or frame.shape[1] == 0:
        return
    text = frame.astype(str).apply(lambda column: column.str.strip())
    groups = {str(name): int(text[name].nunique(dropna=False)) for name in text.columns}
    for name, size in groups.items():
        if size * 2 > n:
            raise InputError(
                f"sensitive feature {name!r} has {size} distinct values in {n} rows (more than "
                "half as many groups as rows): it looks like an identifier, not a group; leave "
                "it out of data.sensitive_features"
            )
    features = list(groups)
    if isinstance(reference_group, Mapping):
        referenced = {str(name) for name in reference_group} & set(features)
    elif reference_group is not None and reference_group != BETWEEN_GROUPS:
        referenced = set(features)
    else:
        referenced = set()
    if intersection and len(features) > 1:
        joint = INTERSECTION_SEPARATOR.join(features)
        groups[joint] = int(len(text.drop_duplicates()))
        if referenced == set(features):
            referenced.add(joint)
    needed = bootstrap_bytes(
        bootstrap, groups, confidence=confidence, has_labels=has_labels, referenced=referenced
    )
    if needed <= BOOTSTRAP_BUDGET_BYTES:
        return
    fits = bootstrap
    while fits > 0 and bootstrap_bytes(
        fits, groups, confidence=confidence, has_labels=has_labels, referenced=referenced
    ) > BOOTSTRAP_BUDGET_BYTES:
        fits = fits * 9 // 10
    largest = max(groups, key=groups.get)
    raise InputError(
        f"fairness.bootstrap: {bootstrap} resamples over {n} rows and "
        f"{sum(groups.values())} groups (largest: {largest!r}, {groups[largest]}) would need "
        f"about {needed / 1024**3:.1f} GiB, over the {BOOTSTRAP_BUDGET_BYTES / 1024**3:g} GiB "
        f"budget; lower fairness.bootstrap to {fits} or fewer, or use coarser sensitive features"
    )


def compute_counterfactual(
    tuple_ids: Any, y_pred: Any, y_score: Any | None = None, *, groups: Any | None = None,
    bootstrap: int = 0, confidence: float = 0.95, seed: int = 0,
) -> dict[str, Any]:
    """How predictions change across counterfactual tuples (defined in docs/result-json.md).

    Parameters
    ----------
    tuple_ids : array-like
        ``(n,)`` tuple id per row (any hashable values; missing values are an error). The
        first row of each tuple in input order is its reference; single rows are ignored.
    y_pred : array-like of int
        ``(n,)`` predicted label indices.
    y_score : array-like of float, optional
        ``(n,)`` probability of the positive label; without it the deltas are ``None``.
    groups : array-like, optional
        ``(n,)`` group each row expresses; without it ``by_group`` is empty.
    bootstrap : int
        Resamples of tuples for ``flip_rate_interval``; 0 disables it.
    confidence : float
        Coverage of the interval, in (0, 1).
    seed : int
        Seed of the bootstrap generator.

    Returns
    -------
    dict
        The ``fairness.counterfactual`` figures; rates are ``None`` when there is no tuple.

    Examples
    --------
    >>> compute_counterfactual([0, 0, 1, 1], [1, 0, 1, 1], [0.9, 0.4, 0.8, 0.7])["flip_rate"]
    0.5
    """
    _check_options(0, bootstrap, confidence, 0)
    pred = _as_labels(y_pred, "y_pred")
    n = len(pred)
    ids = _as_1d(tuple_ids, "tuple_ids", expected=n)
    score = None if y_score is None else _as_scores(y_score, "y_score", expected=n)
    group_values = None if groups is None else _as_1d(groups, "groups", expected=n)
    missing = pd.isna(pd.Series(ids, dtype=object)).to_numpy()
    if missing.any():
        raise InputError(ERR_TUPLE_MISSING.format(row=int(np.flatnonzero(missing)[0])))

    codes, _ = pd.factorize(pd.Series(ids, dtype=object), sort=False)
    keep = np.bincount(codes) >= 2
    if int(keep.sum()) < len(keep):
        logger.info("counterfactual: ignored %d tuple ids with a single row", int((~keep).sum()))
    pred_min, pred_max = _tuple_extremes(codes, pred)
    flips = (pred_min != pred_max)[keep]
    interval, interval_warnings = _flip_rate_interval(flips, bootstrap, confidence, seed)
    mean_abs_delta = None
    if score is not None:
        score_min, score_max = _tuple_extremes(codes, score)
        mean_abs_delta = _mean_or_none((score_max - score_min)[keep])
    by_group = {}
    if group_values is not None:
        by_group = _counterfactual_by_group(codes, keep, pred, score, group_values)
    return {
        "flip_rate": _mean_or_none(flips),
        "flip_rate_interval": interval,
        "confidence": float(confidence),
        "mean_abs_delta": mean_abs_delta,
        "n_tuples": int(keep.sum()),
        "by_group": by_group,
        "warnings": interval_warnings,
    }


def _tuple_extremes(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n_ids,)`` smallest and largest of ``values (n,)`` per tuple id ``codes (n,)``."""
    extremes = pd.Series(values).groupby(codes).agg(["min", "max"])
    return extremes["min"].to_numpy(), extremes["max"].to_numpy()


def _counterfactual_by_group(
    codes: np.ndarray, keep: np.ndarray, pred: np.ndarray, score: np.ndarray | None,
    group_values: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Per group, over the rows rewritten into it: flips and score moves against the reference.

    ``codes (n,)`` tuple id per row, ``keep (n_ids,)`` tuples of two or more rows; the
    reference of a tuple is its first row in input order.
    """
    n = len(pred)
    first = np.full(len(keep), n, dtype=np.int64)
    np.minimum.at(first, codes, np.arange(n))
    reference_row = first[codes]
    variant = keep[codes] & (np.arange(n) != reference_row)
    names = np.array([str(value) for value in group_values], dtype=object)
    flipped = pred != pred[reference_row]
    delta = None if score is None else np.abs(score - score[reference_row])
    by_group: dict[str, dict[str, Any]] = {}
    for group in sorted(set(names[variant])):
        rows = variant & (names == group)
        by_group[group] = {
            "flip_rate": _mean_or_none(flipped[rows]),
            "mean_abs_delta": None if delta is None else _mean_or_none(delta[rows]),
            "count": int(rows.sum()),
        }
    return by_group


def _flip_rate_interval(
    flips: np.ndarray, bootstrap: int, confidence: float, seed: int
) -> tuple[list[float] | None, list[str]]:
    """Percentile bootstrap interval of the mean of ``flips (T,)``, resampling tuples."""
    if bootstrap == 0 or len(flips) == 0:
        return None, []
    if bootstrap < min_resamples(confidence):
        return None, [_too_few_resamples(bootstrap, confidence, "flip-rate intervals")]
    values = flips.astype(float)
    means = np.array([values[rows].mean() for rows in resample_rows(seed, len(values), bootstrap)])
    low, high = percentile_interval(means, confidence)
    return [float(low), float(high)], []


# --------------------------------------------------------------------------- inputs


def _check_options(
    positive_label_index: int, bootstrap: int, confidence: float, min_group_size: int
) -> None:
    if not _is_int(positive_label_index) or positive_label_index < 0:
        raise InputError(ERR_POSITIVE_INDEX.format(value=positive_label_index))
    if not _is_int(bootstrap) or bootstrap < 0:
        raise InputError(ERR_BOOTSTRAP.format(value=bootstrap))
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not (
        0 < confidence < 1
    ):
        raise InputError(ERR_CONFIDENCE.format(value=confidence))
    if not _is_int(min_group_size) or min_group_size < 0:
        raise InputError(ERR_MIN_GROUP.format(value=min_group_size))


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _as_1d(values: Any, name: str, *, expected: int | None = None) -> np.ndarray:
    """``(n,)`` array of ``values``; ``expected``: the length of ``y_pred``."""
    array = np.asarray(values.to_numpy() if isinstance(values, pd.Series | pd.Index) else values)
    if array.ndim != 1:
        raise InputError(ERR_SHAPE.format(name=name, shape=array.shape))
    if expected is not None and len(array) != expected:
        raise InputError(
            ERR_LENGTH.format(name=name, got=len(array), reference="y_pred", expected=expected)
        )
    return array


def _as_labels(values: Any, name: str, *, expected: int | None = None) -> np.ndarray:
    """``(n,)`` int64 label indices; floats must be whole numbers."""
    array = _as_1d(values, name, expected=expected)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    for row, value in enumerate(array.tolist()):
        ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        )
        if not ok or not math.isfinite(value) or float(value) != int(value):
            raise InputError(ERR_LABEL_VALUE.format(name=name, value=value, row=row))
    return array.astype(np.int64)


def _as_scores(values: Any, name: str, *, expected: int) -> np.ndarray:
    """``(n,)`` float64 probabilities in [0, 1]."""
    array = _as_1d(values, name, expected=expected)
    try:
        scores = array.astype(np.float64)
    except (TypeError, ValueError):
        scores = None
    if scores is None:
        for row, value in enumerate(array.tolist()):
            try:
                float(value)
            except (TypeError, ValueError):
                raise InputError(ERR_SCORE_VALUE.format(name=name, value=value, row=row)) from None
        scores = array.astype(np.float64)
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(ERR_SCORE_VALUE.format(name=name, value=array[row].item(), row=row))
    return scores


def _sensitive_columns(
    frame: pd.DataFrame, features: Sequence[str] | None, n: int
) -> dict[str, np.ndarray]:
    """Feature -> ``(n,)`` object array of group names (str), validated."""
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    names = [str(c) for c in frame.columns] if features is None else [str(f) for f in features]
    if not names:
        raise InputError(ERR_NO_FEATURES)
    if len(frame) != n:
        raise InputError(
            ERR_LENGTH.format(
                name="sensitive_features", got=len(frame), reference="y_pred", expected=n
            )
        )
    available = {str(c): c for c in frame.columns}
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in available:
            listed = ", ".join(available) or "none"
            raise InputError(ERR_COLUMN.format(column=name, available=listed))
        raw = frame[available[name]].tolist()
        values = np.empty(n, dtype=object)
        for row, value in enumerate(raw):
            missing = value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))
            text = "" if missing else str(value).strip()
            if not text:
                raise InputError(ERR_MISSING.format(column=name, row=row))
            values[row] = text
        unique = sorted(set(values))
        if len(unique) < 2:
            raise InputError(ERR_ONE_GROUP.format(column=name, group=unique[0]))
        out[name] = values
    return out


def _select_metrics(
    metrics: Sequence[str], *, has_labels: bool, has_scores: bool
) -> tuple[tuple[str, ...], list[str]]:
    """Validate ``metrics``; drop (with a note) those whose inputs are missing."""
    if isinstance(metrics, str):
        metrics = [metrics]
    for name in metrics:
        if name not in GROUP_METRICS:
            raise InputError(ERR_METRIC.format(name=name, allowed=", ".join(GROUP_METRICS)))
    chosen = list(dict.fromkeys(metrics))
    notes = []
    unlabelled = [m for m in chosen if m in LABEL_METRICS and not has_labels]
    if unlabelled:
        notes.append(
            "no true labels were given, so " + ", ".join(unlabelled) + " and the label-based "
            "disparities (equalized odds, equal opportunity, accuracy difference) are not computed"
        )
    if "mean_score" in chosen and not has_scores:
        notes.append("no predicted probabilities were given, so mean_score is not computed")
    kept = tuple(
        m
        for m in chosen
        if (has_labels or m not in LABEL_METRICS) and (has_scores or m != "mean_score")
    )
    return kept, notes


def _references(
    reference_group: str | Mapping[str, str] | None, columns: Mapping[str, np.ndarray]
) -> dict[str, str]:
    """Feature -> reference group, validated against the groups of each feature."""
    if reference_group is None or reference_group == BETWEEN_GROUPS:
        return {}
    if isinstance(reference_group, Mapping):
        wanted = {str(k): str(v) for k, v in reference_group.items()}
        for feature in wanted:
            if feature not in columns:
                raise InputError(
                    ERR_REFERENCE_FEATURE.format(column=feature, features=", ".join(columns))
                )
    else:
        wanted = {feature: str(reference_group) for feature in columns}
    for feature, group in wanted.items():
        groups = sorted(set(columns[feature]))
        if group not in groups:
            raise InputError(
                ERR_REFERENCE.format(group=group, column=feature, groups=", ".join(groups))
            )
    return wanted


def _reference_summary(reference_group: str | Mapping[str, str] | None) -> str | dict[str, str]:
    if isinstance(reference_group, Mapping):
        return {str(k): str(v) for k, v in reference_group.items()}
    return BETWEEN_GROUPS if reference_group is None else str(reference_group)


def intersection_names(keys: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Distinct display names for intersection groups (tuples of group names).

    A name joins the parts with ``" & "``. Where two plain names would be equal
    (``("a & b", "c")`` and ``("a", "b & c")`` both read ``"a & b & c"``), the
    colliding groups are written with every part quoted (``"'a & b' & 'c'"``), so
    group identity never depends on what the names contain.

    Examples
    --------
    >>> intersection_names([("a & b", "c"), ("a", "b & c"), ("x", "y")])[("x", "y")]
    'x & y'
    """
    quoted: set[tuple[str, ...]] = set()
    while True:
        names = {
            key: INTERSECTION_SEPARATOR.join(repr(p) if key in quoted else p for p in key)
            for key in keys
        }
        seen: dict[str, list[tuple[str, ...]]] = {}
        for key, name in names.items():
            seen.setdefault(name, []).append(key)
        clashing = {k for group in seen.values() if len(group) > 1 for k in group} - quoted
        if not clashing:
            return names
        quoted |= clashing


def _intersection_view(
    label: str, columns: Mapping[str, np.ndarray], reference: tuple[str, ...] | None
) -> _View:
    """The intersection view: groups are tuples of the features' groups, shown by name."""
    view = _make_view(label, list(zip(*columns.values(), strict=True)), None)
    names = intersection_names(view.groups)
    return replace(
        view, groups=tuple(names[k] for k in view.groups),
        reference=names.get(reference) if reference is not None else None,
        parts={names[k]: dict(zip(columns, k, strict=True)) for k in view.groups},
    )


def _make_view(label: str, values: Sequence[Any], reference: str | None) -> _View:
    groups = tuple(sorted(set(values)))
    index = {group: i for i, group in enumerate(groups)}
    codes = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    return _View(label=label, groups=groups, codes=codes, reference=reference)


def _too_few_resamples(bootstrap: int, confidence: float, what: str, needed: int = 0) -> str:
    needed = max(needed, min_resamples(confidence))
    return (
        f"bootstrap {bootstrap} is too few resamples for {round(100 * confidence, 4):g}% "
        f"{what}: at least {needed} are needed, so no interval is reported; raise "
        "fairness.bootstrap (1000 or more gives stable tails)"
    )


# ------------------------------------------------------------------- group metrics


def _mean_score(y_true: Any, y_pred: Any, *, y_score: Any) -> float:
    """Mean predicted probability of the positive label (a MetricFrame metric)."""
    return float(np.mean(y_score))


def _group_table(
    view: _View, pred_bin: np.ndarray, true_bin: np.ndarray | None, score: np.ndarray | None
) -> pd.DataFrame:
    """``(G, n_metrics)`` group metrics from a fairlearn MetricFrame, undefined rates NaN."""
    functions: dict[str, Any] = {
        "count": count,
        "selection_rate": partial(selection_rate, pos_label=1),
    }
    sample_params: dict[str, dict[str, np.ndarray]] = {}
    if true_bin is not None:
        functions.update(
            accuracy=skm.accuracy_score,
            true_positive_rate=partial(true_positive_rate, pos_label=1),
            false_positive_rate=partial(false_positive_rate, pos_label=1),
            true_negative_rate=partial(true_negative_rate, pos_label=1),
            false_negative_rate=partial(false_negative_rate, pos_label=1),
        )
    if score is not None:
        functions["mean_score"] = _mean_score
        sample_params["mean_score"] = {"y_score": score}
    groups = pd.Series(
        np.asarray(view.groups, dtype=object)[view.codes], name=view.label, dtype=object
    )
    frame = MetricFrame(
        metrics=functions,
        y_true=pred_bin if true_bin is None else true_bin,
        y_pred=pred_bin,
        sensitive_features=groups,
        sample_params=sample_params or None,
    )
    table = frame.by_group.astype(float)
    table.index = [str(g) for g in table.index]
    table = table.reindex(list(view.groups))
    if true_bin is not None:
        positives = np.bincount(view.codes, weights=true_bin, minlength=len(view.groups))
        negatives = table["count"].to_numpy() - positives
        table.loc[positives == 0, ["true_positive_rate", "false_negative_rate"]] = np.nan
        table.loc[negatives == 0, ["false_positive_rate", "true_negative_rate"]] = np.nan
    return table


def _rates_from_sums(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Group metrics from (weighted) sums; each array ``(..., G)``; empty denominators NaN."""
    n, pred, true, tp, correct, score = (sums[k] for k in _SUMS)
    with np.errstate(divide="ignore", invalid="ignore"):
        negatives = n - true
        fp = pred - tp
        rates = {
            "selection_rate": np.where(n > 0, pred / n, np.nan),
            "accuracy": np.where(n > 0, correct / n, np.nan),
            "true_positive_rate": np.where(true > 0, tp / true, np.nan),
            "false_negative_rate": np.where(true > 0, (true - tp) / true, np.nan),
            "false_positive_rate": np.where(negatives > 0, fp / negatives, np.nan),
            "true_negative_rate": np.where(negatives > 0, (negatives - fp) / negatives, np.nan),
            "mean_score": np.where(n > 0, score / n, np.nan),
        }
    return rates


def _bootstrap_group_metrics(
    views: Sequence[_View], pred_bin: np.ndarray, true_bin: np.ndarray | None,
    score: np.ndarray | None, *, bootstrap: int, seed: int,
) -> list[dict[str, np.ndarray]]:
    """Per view: metric -> ``(bootstrap, G)`` resampled group metrics.

    The resamples of :func:`promptaudit.stats.bootstrap_weights`; group sums are the
    row multiplicities times per-row columns, one sparse product per chunk of resamples.
    """
    n = len(pred_bin)
    true_col = np.zeros(n) if true_bin is None else true_bin.astype(float)
    score_col = np.zeros(n) if score is None else score
    per_row = {
        "n": np.ones(n),
        "pred": pred_bin.astype(float),
        "true": true_col,
        "tp": pred_bin * true_col,
        "correct": (pred_bin == true_col).astype(float),
        "score": score_col,
    }
    # Sparse (n, sum over views of len(_SUMS) * G) design: entry (i, offset + s * G + code_i).
    blocks, offsets = [], []
    offset = 0
    for view in views:
        n_groups = len(view.groups)
        for s, name in enumerate(_SUMS):
            blocks.append((per_row[name], offset + s * n_groups + view.codes))
        offsets.append(offset)
        offset += len(_SUMS) * n_groups
    data = np.concatenate([b[0] for b in blocks])
    cols = np.concatenate([b[1] for b in blocks])
    rows = np.tile(np.arange(n), len(blocks))
    design_t = sparse.csr_matrix((data, (cols, rows)), shape=(offset, n))
    totals = bootstrap_weights(lambda weights: (design_t @ weights.T).T, n, bootstrap, seed=seed)

    out = []
    for view, start in zip(views, offsets, strict=True):
        n_groups = len(view.groups)
        sums = {
            name: totals[:, start + s * n_groups : start + (s + 1) * n_groups]
            for s, name in enumerate(_SUMS)
        }
        out.append(_rates_from_sums(sums))
    return out


# ------------------------------------------------------------------- disparities


def _pairs(view: _View) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(i, j)`` of the view's compared pairs: all ``i < j`` or each vs reference."""
    reference = None if view.reference is None else view.groups.index(view.reference)
    return compared_pairs(len(view.groups), reference)


def _undefined_reason(
    rates: Mapping[str, np.ndarray], view: _View, spec: _Disparity
) -> str | None:
    """Why a disparity is undefined (a metric with no defined comparison), else None."""
    pairs = _pairs(view)
    for metric in spec.metrics:
        gaps = signed_gaps(rates[metric], pairs, spec.kind)
        if gaps.size and not np.all(np.isnan(gaps)):
            continue
        values = rates[metric]
        defined = values[~np.isnan(values)]
        words = metric.replace("_", " ")
        if len(defined) < 2 and view.reference is None or defined.size == 0:
            return f"fewer than two groups have a defined {words}"
        if spec.kind == "ratio" and np.all(defined == 0):
            return f"every group's {words} is 0, so the ratio is 0/0"
        return f"no compared pair of groups has a defined {words}"
    return None


def _disparity_gaps(rates: Mapping[str, np.ndarray], view: _View, spec: _Disparity) -> np.ndarray:
    """``(..., K)`` signed gaps of all metrics of a disparity, pairs concatenated."""
    pairs = _pairs(view)
    return np.concatenate([signed_gaps(rates[m], pairs, spec.kind) for m in spec.metrics], axis=-1)


# ------------------------------------------------------------------- assembling


def _view_entry(
    view: _View, table: pd.DataFrame, *, selected: Sequence[str], disparity_names: Sequence[str],
    samples: Mapping[str, np.ndarray] | None, confidence: float, min_group_size: int,
    bootstrap: int, exact: Mapping[str, list[Fraction | None]],
) -> tuple[dict[str, Any], list[str]]:
    """The JSON entry of one feature (or the intersection) and its warnings.

    ``exact``: metric -> ``(G,)`` group rates as exact fractions of counts
    (:func:`_exact_rates`), for ``exact_disparities``.
    """
    counts = table["count"].to_numpy().astype(np.int64)
    small = counts < min_group_size
    by_group: dict[str, dict[str, Any]] = {}
    for g, group in enumerate(view.groups):
        row: dict[str, Any] = {"count": int(counts[g]), "small": bool(small[g])}
        row.update({m: finite_or_none(table.at[group, m]) for m in selected})
        by_group[group] = row
    point_rates = {m: table[m].to_numpy(dtype=float) for m in table.columns if m != "count"}
    found = _view_disparities(
        view, point_rates, small, disparity_names, samples, bootstrap, confidence
    )
    warnings_out = _view_warnings(view, table, small, found.dependent, min_group_size)
    warnings_out += _disparity_warnings(view, found, bootstrap, confidence)
    entry = {
        "feature": view.label,
        "reference_group": view.reference or BETWEEN_GROUPS,
        "by_group": by_group,
        "intervals": (
            None if samples is None else _group_intervals(view, samples, selected, confidence)
        ),
        "disparities": found.values,
        "disparity_intervals": found.intervals,
        "small_groups": [g for g, flag in zip(view.groups, small, strict=True) if flag],
        "undefined": found.undefined,
        "exact_disparities": {
            name: None if found.values[name] is None
            else _exact_disparity(exact, view, _DISPARITIES[name])
            for name in disparity_names
        },
    }
    if view.parts is not None:
        entry["group_values"] = {name: dict(parts) for name, parts in view.parts.items()}
    return entry, warnings_out


@dataclass
class _Findings:
    """The disparities of one view: values, intervals and what the warnings need."""

    values: dict[str, float | None] = field(default_factory=dict)
    intervals: dict[str, list[float] | None] | None = None
    undefined: dict[str, str] = field(default_factory=dict)  # disparity -> reason
    dependent: list[str] = field(default_factory=list)  # disparities using a small group
    short: dict[str, int] = field(default_factory=dict)  # disparity -> resamples needed


def _view_disparities(
    view: _View, point_rates: Mapping[str, np.ndarray], small: np.ndarray,
    disparity_names: Sequence[str], samples: Mapping[str, np.ndarray] | None, bootstrap: int,
    confidence: float,
) -> _Findings:
    """Each disparity's value (None when undefined) and, with ``samples``, its interval."""
    found = _Findings(intervals=None if samples is None else {})
    first, second = _pairs(view)
    for name in disparity_names:
        spec = _DISPARITIES[name]
        gaps = _disparity_gaps(point_rates, view, spec)
        reason = _undefined_reason(point_rates, view, spec)
        if reason is not None:
            found.undefined[name] = reason
        found.values[name] = None if reason is not None else finite_or_none(
            worst_gap(gaps, spec.kind)
        )
        if found.intervals is not None and samples is not None:
            interval, needed = (None, None) if reason is not None else _disparity_interval(
                gaps, samples, view, spec, bootstrap, confidence
            )
            found.intervals[name] = interval
            if needed:
                found.short[name] = needed
        small_pair = np.tile(small[first] | small[second], len(spec.metrics))
        if np.any(~np.isnan(gaps) & small_pair):  # a small group in a defined comparison
            found.dependent.append(name)
    return found


def _disparity_interval(
    gaps: np.ndarray, samples: Mapping[str, np.ndarray], view: _View, spec: _Disparity,
    bootstrap: int, confidence: float,
) -> tuple[list[float | None] | None, int | None]:
    """A defined disparity's folded interval, and the resamples needed when they are too few.

    Too few resamples for the number of compared gaps: the gaps are never resampled
    (a unique-id-like feature would need bootstrap x G^2 / 2 of them). Otherwise they are
    enough for the usable gaps too, which are some of the defined ones.
    """
    defined = int((~np.isnan(gaps)).sum())
    if defined and bootstrap < min_resamples(confidence, defined):
        return None, min_resamples(confidence, defined)
    interval = folded_interval(gaps, _disparity_gaps(samples, view, spec), spec.kind, confidence)
    return (None if interval is None else [finite_or_none(v) for v in interval]), None


def _disparity_warnings(
    view: _View, found: _Findings, bootstrap: int, confidence: float
) -> list[str]:
    """Undefined disparities, and those without an interval for too few resamples."""
    out = [
        f"{view.label}: {name} is undefined (null): {reason}; it is not parity, and a "
        "gate on it fails"
        for name, reason in found.undefined.items()
    ]
    if found.short:
        what = "intervals over this many group comparisons"
        needed = _too_few_resamples(bootstrap, confidence, what, max(found.short.values()))
        out.append(f"{view.label}: no interval for {', '.join(found.short)}: {needed}")
    return out


def _exact_rates(
    view: _View, pred_bin: np.ndarray, true_bin: np.ndarray | None
) -> dict[str, list[Fraction | None]]:
    """Group rates as exact fractions of the integer counts, metric -> ``(G,)``.

    ``selection_rate`` (and with labels ``accuracy``, ``true_positive_rate``,
    ``false_positive_rate``); an empty denominator is None, as the float rates' NaN.
    """
    def counts(mask: np.ndarray) -> list[int]:
        return [int(c) for c in np.bincount(view.codes[mask], minlength=len(view.groups))]

    def shares(parts: list[int], wholes: list[int]) -> list[Fraction | None]:
        return [Fraction(a, b) if b else None for a, b in zip(parts, wholes, strict=True)]

    n = counts(np.ones(len(view.codes), dtype=bool))
    out = {"selection_rate": shares(counts(pred_bin == 1), n)}
    if true_bin is not None:
        positives = counts(true_bin == 1)
        out["accuracy"] = shares(counts(pred_bin == true_bin), n)
        out["true_positive_rate"] = shares(counts((pred_bin == 1) & (true_bin == 1)), positives)
        negatives = [t - p for t, p in zip(n, positives, strict=True)]
        out["false_positive_rate"] = shares(counts((pred_bin == 1) & (true_bin == 0)), negatives)
    return out


def _exact_disparity(
    exact: Mapping[str, list[Fraction | None]], view: _View, spec: _Disparity
) -> list[int] | None:
    """A disparity's point value as ``[numerator, denominator]``: ``worst_gap`` in fractions.

    The same pairs as the float value (all pairs, or each group against the
    reference); a ratio pair whose rates are both 0 is undefined and left out.
    None when a metric has no defined pair.
    """
    first, second = _pairs(view) if view.reference else ((), ())
    gaps: list[Fraction] = []
    for metric in spec.metrics:
        rates = exact.get(metric)
        if rates is None:
            return None
        if view.reference is None:  # all pairs: the extremes decide (O(G), not O(G^2))
            defined = [r for r in rates if r is not None]
            pairs = [(min(defined), max(defined))] if len(defined) >= 2 else []
        else:
            pairs = [(rates[int(i)], rates[int(j)]) for i, j in zip(first, second, strict=True)]
        defined_pairs = [
            (a, b) for a, b in pairs
            if a is not None and b is not None and (spec.kind == "difference" or a or b)
        ]
        if not defined_pairs:
            return None
        gaps += [
            abs(a - b) if spec.kind == "difference" else 1 - min(a, b) / max(a, b)
            for a, b in defined_pairs
        ]
    value = max(gaps) if spec.kind == "difference" else 1 - max(gaps)
    return [value.numerator, value.denominator]


def _group_intervals(
    view: _View, samples: Mapping[str, np.ndarray], selected: Sequence[str], confidence: float
) -> dict[str, dict[str, list[float] | None]]:
    out: dict[str, dict[str, list[float] | None]] = {group: {} for group in view.groups}
    for metric in selected:
        low, high = percentile_interval(samples[metric], confidence, axis=0)
        for g, group in enumerate(view.groups):
            pair = [finite_or_none(low[g]), finite_or_none(high[g])]
            out[group][metric] = None if None in pair else pair
    return out


def _view_warnings(
    view: _View, table: pd.DataFrame, small: np.ndarray, dependent: Sequence[str],
    min_group_size: int,
) -> list[str]:
    out = []
    if small.any():
        listed = ", ".join(
            f"{group!r} ({int(table.at[group, 'count'])})"
            for group, flag in zip(view.groups, small, strict=True)
            if flag
        )
        message = f"{view.label}: groups smaller than min_group_size {min_group_size}: {listed}"
        if dependent:
            message += "; " + ", ".join(dependent) + " depend on them and may be unreliable"
        out.append(message)
    for rate, other, what in (
        ("true_positive_rate", "false_negative_rate", "positive"),
        ("false_positive_rate", "true_negative_rate", "negative"),
    ):
        if rate not in table.columns:
            continue
        for group in table.index[table[rate].isna() & (table["count"] > 0)]:
            out.append(
                f"{view.label}: group {group!r} has no examples with a {what} true label, so its "
                f"{rate} and {other} are undefined (null) and left out of the disparities"
            )
    return out


def _worst_over_features(
    by_feature: Mapping[str, Mapping[str, Any]], disparity_names: Sequence[str], bootstrap: int,
) -> tuple[
    dict[str, float | None],
    dict[str, list[float] | None] | None,
    dict[str, str | None],
    dict[str, str],
]:
    """Largest difference / smallest ratio over features, its interval, feature, reasons.

    A disparity undefined for any feature has no worst value (``None``): the
    undefined feature could be the worst one. Ties go to the first feature.
    """
    worst: dict[str, float | None] = {}
    intervals: dict[str, list[float] | None] = {}
    features: dict[str, str | None] = {}
    undefined: dict[str, str] = {}
    for name in disparity_names:
        missing = [f for f, e in by_feature.items() if name in e["undefined"]]
        if missing:
            worst[name], features[name], intervals[name] = None, missing[0], None
            undefined[name] = f"{missing[0]}: {by_feature[missing[0]]['undefined'][name]}"
            continue
        pick = min if DISPARITY_DIRECTIONS[name] == "higher_is_better" else max
        candidates = [f for f, e in by_feature.items() if e["disparities"][name] is not None]
        feature = pick(candidates, key=lambda f: by_feature[f]["disparities"][name], default=None)
        worst[name] = None if feature is None else by_feature[feature]["disparities"][name]
        features[name] = feature
        entry_intervals = None if feature is None else by_feature[feature]["disparity_intervals"]
        intervals[name] = None if entry_intervals is None else entry_intervals[name]
    return worst, (intervals if bootstrap > 0 else None), features, undefined


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None
