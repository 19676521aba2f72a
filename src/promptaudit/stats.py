"""The statistics the stages share: one bootstrap, one percentile interval, one of each
binomial and ratio interval, one "finite float or None" (no torch, no model code).

Fairness, competence and the impact-ratio intervals resample the same rows for the same
seed (:func:`resample_rows`, the draws of ``scipy.stats.bootstrap(..., batch=1)``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = [
    "block_resampled_means",
    "bootstrap_weights",
    "clopper_pearson_interval",
    "compared_pairs",
    "finite_or_none",
    "folded_interval",
    "katz_interval",
    "min_resamples",
    "percentile_interval",
    "resample_rows",
    "signed_gaps",
    "two_sided_z",
    "wilson_interval",
    "worst_gap",
]

#: Keep a chunk of resample weights, ``(chunk, n)``, under this many entries.
CHUNK_ENTRIES = 4_000_000


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float; None, NaN and infinities become None (JSON has no NaN).

    Examples
    --------
    >>> finite_or_none(np.float32(0.5)), finite_or_none(float("nan")), finite_or_none(None)
    (0.5, None, None)
    """
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# ------------------------------------------------------------------------ bootstrap
def block_resampled_means(
    values: np.ndarray, resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the rows of ``values (m, P)`` and ``(resamples, P)`` means of resampled rows.

    All resamples are drawn in one call, ``rng.integers(0, m, size=(resamples, m))``
    (the draws of ``scipy.stats.bootstrap`` with its default ``batch``), so several
    cells can share one generator.
    """
    m = values.shape[0]
    draws = rng.integers(0, m, size=(resamples, m))
    return values.mean(axis=0), values[draws].mean(axis=1)


def resample_rows(seed: int, n: int, resamples: int) -> Iterator[np.ndarray]:
    """Row indices of each resample, ``(n,)`` int64: ``rng.integers(0, n, size=n)`` in order.

    Examples
    --------
    >>> [rows.tolist() for rows in resample_rows(0, 3, 2)]
    [[2, 1, 1], [0, 0, 0]]
    """
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, n, size=n)


def bootstrap_weights(
    statistic: Callable[[np.ndarray], np.ndarray], n: int, resamples: int, *, seed: int,
    chunk_entries: int = CHUNK_ENTRIES,
) -> np.ndarray:
    """A statistic of row weights over the resamples of :func:`resample_rows`.

    Parameters
    ----------
    statistic : callable
        ``(chunk, n)`` float64 row multiplicities (how often each row was drawn in
        each resample) -> ``(chunk, ...)`` values of the statistic.
    n, resamples, seed : int
        Rows of the sample, resamples (>= 1) and seed of the generator.
    chunk_entries : int
        Largest ``chunk * n`` handed to ``statistic`` at once (bounds the memory).

    Returns
    -------
    numpy.ndarray
        ``(resamples, ...)`` float64.

    Examples
    --------
    >>> x = np.array([1.0, 2.0, 3.0])
    >>> bootstrap_weights(lambda w: w @ x / 3, 3, 2, seed=0).tolist()
    [2.3333333333333335, 1.0]
    """
    rows = resample_rows(seed, n, resamples)
    chunk = max(1, min(resamples, chunk_entries // max(n, 1)))
    out: np.ndarray | None = None
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        weights = np.empty((stop - start, n))
        for b in range(stop - start):
            weights[b] = np.bincount(next(rows), minlength=n)
        values = statistic(weights)
        if out is None:
            out = np.empty((resamples, *np.shape(values)[1:]))
        out[start:stop] = values
    assert out is not None, "resamples must be at least 1"
    return out


# ------------------------------------------------------------------------ intervals
def min_resamples(confidence: float, comparisons: int = 1) -> int:
    """Fewest bootstrap resamples that can hold a percentile interval's level.

    A two-sided interval over ``comparisons`` Bonferroni-adjusted gaps has tail
    probability ``t = (1 - confidence) / (2 * comparisons)``; it needs
    ``resamples * t >= 1``, i.e. at least one resample expected beyond each end.

    Examples
    --------
    >>> min_resamples(0.95), min_resamples(0.9), min_resamples(0.95, 3)
    (40, 20, 120)
    """
    return math.ceil(round(2 * comparisons / (1.0 - confidence), 9))


def percentile_interval(
    samples: np.ndarray, confidence: float, *, comparisons: int = 1, axis: int | None = None
) -> tuple[Any, Any]:
    """Percentile bootstrap interval ``(low, high)`` of resampled values.

    The ``[alpha / 2, 1 - alpha / 2]`` quantiles (``numpy.nanquantile``, linear: a NaN,
    undefined in a resample, is skipped), ``alpha = (1 - confidence) / comparisons``
    (Bonferroni: ``comparisons`` intervals hold ``confidence`` together). ``axis``: of the
    resamples (``None``: all values). ``(low, high)`` are floats, or arrays of the other
    axes (NaN where every resample is).

    Examples
    --------
    >>> [round(float(v), 9) for v in percentile_interval(np.arange(101.0), 0.9)]
    [5.0, 95.0]
    """
    alpha = (1.0 - confidence) / comparisons
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(samples, [alpha / 2, 1 - alpha / 2], axis=axis)
    return low, high


def compared_pairs(n_groups: int, reference: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(i, j)`` of compared groups: all ``i < j``, or each group vs ``reference``.

    Examples
    --------
    >>> [a.tolist() for a in compared_pairs(3, None)], [a.tolist() for a in compared_pairs(3, 1)]
    ([[0, 0, 1], [1, 2, 2]], [[0, 2], [1, 1]])
    """
    if reference is None:
        first, second = np.triu_indices(n_groups, k=1)
        return first, second
    others = np.array([g for g in range(n_groups) if g != reference], dtype=np.int64)
    return others, np.full(len(others), reference, dtype=np.int64)


def signed_gaps(values: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], kind: str) -> np.ndarray:
    """``(..., K)`` signed gaps of ``values (..., G)`` over ``pairs``; 0 is parity.

    ``kind`` ``"difference"``: ``m_i - m_j``. ``"ratio"``: ``m_i / m_j - 1`` if
    ``m_i <= m_j`` else ``1 - m_j / m_i`` (so ``1 - |gap|`` is the ratio, <= 1); both 0
    (0/0) is undefined (NaN), not parity. A NaN value gives NaN gaps.
    """
    a = values[..., pairs[0]]
    b = values[..., pairs[1]]
    if kind == "difference":
        return a - b
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.where(a <= b, a / b - 1.0, 1.0 - b / a)
    gap = np.where((a == 0) & (b == 0), np.nan, gap)
    return np.where(np.isnan(a) | np.isnan(b), np.nan, gap)


def worst_gap(gaps: np.ndarray, kind: str) -> float:
    """The worst absolute gap as a difference (or ``1 - |gap|`` as a ratio); NaN if none."""
    defined = gaps[~np.isnan(gaps)]
    if defined.size == 0:
        return math.nan
    worst = float(np.max(np.abs(defined)))
    return worst if kind == "difference" else 1.0 - worst


def folded_interval(
    point_gaps: np.ndarray, sampled_gaps: np.ndarray, kind: str, confidence: float
) -> list[float] | None:
    """Interval of :func:`worst_gap` from Bonferroni intervals of the ``K`` signed gaps, folded.

    ``point_gaps (K,)`` and ``sampled_gaps (resamples, K)``. Each usable gap ``k`` gets the
    :func:`percentile_interval` ``[lo_k, hi_k]`` at level ``1 - (1 - confidence) / K``; a
    difference's interval is ``[max_k dist(0, [lo_k, hi_k]), max_k max(|lo_k|, |hi_k|)]``, a
    ratio's one minus that, reversed: it contains 0 (ratio 1) exactly when every gap's
    interval does, and if all gaps are covered, so is the disparity. ``None`` when no gap is
    usable (undefined in the sample or in every resample) or the resamples are too few for
    the Bonferroni level (:func:`min_resamples`).
    """
    usable = ~np.isnan(point_gaps) & ~np.all(np.isnan(sampled_gaps), axis=0)
    if not usable.any():
        return None
    if len(sampled_gaps) < min_resamples(confidence, int(usable.sum())):
        return None
    low, high = percentile_interval(
        sampled_gaps[:, usable], confidence, comparisons=int(usable.sum()), axis=0
    )
    near = np.where((low <= 0) & (high >= 0), 0.0, np.minimum(np.abs(low), np.abs(high)))
    far = np.maximum(np.abs(low), np.abs(high))
    if kind == "difference":
        return [float(np.max(near)), float(np.max(far))]
    return [1.0 - float(np.max(far)), 1.0 - float(np.max(near))]


# ------------------------------------------------------------- binomial and ratio
def wilson_interval(
    successes: int, n: int, confidence: float = 0.95, *, z: float | None = None
) -> list[float] | None:
    """Wilson score interval of a binomial share ``successes / n``.

    ``0 <= successes <= n``; ``z``, the normal quantile ``1 - (1 - confidence) / 2``, may
    be given instead of ``confidence``. ``[lower, upper]`` clipped to ``[0, 1]``; None when
    ``n`` is 0.

    Examples
    --------
    >>> [round(v, 4) for v in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> [round(v, 4) for v in wilson_interval(8, 20, z=1.959964)]
    [0.2188, 0.6134]
    >>> wilson_interval(0, 0) is None
    True
    """
    if n <= 0:
        return None
    z = two_sided_z(confidence) if z is None else z
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def two_sided_z(confidence: float) -> float:
    """The normal quantile ``1 - (1 - confidence) / 2`` of a two-sided interval.

    Examples
    --------
    >>> round(two_sided_z(0.95), 6)
    1.959964
    """
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def clopper_pearson_interval(
    successes: int, n: int, confidence: float = 0.95
) -> list[float] | None:
    """Exact (Clopper-Pearson) binomial interval of ``successes / n``; None when ``n`` is 0.

    Examples
    --------
    >>> [round(v, 4) for v in clopper_pearson_interval(2, 10)]
    [0.0252, 0.5561]
    """
    from scipy.stats import beta

    if n <= 0:
        return None
    alpha = 1 - confidence
    lower = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    upper = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1,
                                                      n - successes))
    return [lower, upper]


def katz_interval(x_g: int, n_g: int, x_b: int, n_b: int, z: float
                  ) -> tuple[float, float] | None:
    """Katz log interval of ``(x_g/n_g) / (x_b/n_b)``; ``None`` when a count selected is 0.

    ``exp(ln IR +- z sqrt(1/x_g - 1/n_g + 1/x_b - 1/n_b))``.

    Examples
    --------
    >>> [round(x, 4) for x in katz_interval(20, 100, 40, 100, 1.959964)]
    [0.3158, 0.7918]
    """
    if x_g <= 0 or x_b <= 0 or n_g <= 0 or n_b <= 0:
        return None
    ratio = (x_g / n_g) / (x_b / n_b)
    se = math.sqrt(1 / x_g - 1 / n_g + 1 / x_b - 1 / n_b)
    return ratio * math.exp(-z * se), ratio * math.exp(z * se)

