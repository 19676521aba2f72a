"""Impact-ratio tables in the form NYC Local Law 144 and the EEOC four-fifths rule use.

Per category column and their intersection: each category's counts, selection rate,
impact ratio against the most-selected category, the exact-arithmetic ``flagged``
(:mod:`promptaudit.ratios`), the Fisher p-value, the standard-deviation analysis
(:func:`standard_deviation_test`) and the shortfall (:func:`selections_to_four_fifths`),
side by side and never merged into a verdict. The rules (selection vs scoring mode,
unknown values, the 2% rule, the reference, which rows get which figure) and the result
layout are defined in docs/bias-audit.md.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact

from promptaudit.errors import DataError
from promptaudit.ratios import exact_threshold, ratio_at_least
from promptaudit.spec import BiasAuditMode
from promptaudit.stats import (
    compared_pairs,
    folded_interval,
    min_resamples,
    resample_rows,
    signed_gaps,
)

__all__ = [
    "BiasAuditMode",
    "INTERSECTION_SEPARATOR",
    "compute_bias_audit",
    "min_impact_ratio",
    "selections_to_four_fifths",
    "standard_deviation_test",
    "SIGNIFICANCE_SD",
    "SMALL_SAMPLE_N",
]

logger = logging.getLogger(__name__)

#: Standard deviations below the reference at which ``significant_2sd`` is set.
SIGNIFICANCE_SD = 2.0

#: Fewer people than this in a category and the reference together: ``small_sample``.
SMALL_SAMPLE_N = 30

#: ``z_note`` when the pooled rate is 0 or 1.
NOTE_Z_UNDEFINED = (
    "z-score undefined: {who} selected in both this category and the reference "
    "(pooled rate {pooled}), so the difference has no variance"
)

#: Joins feature names ("gender & race") and category names ("female & Black").
INTERSECTION_SEPARATOR = " & "


NO_SCORES_MESSAGE = (
    "bias_audit.mode: scoring needs a favourable-outcome score for every row, but no "
    "scores were given; use mode: selection or pass scores"
)
LENGTH_MESSAGE = "bias_audit: {what} has {got} rows but the categories have {n}"
BAD_SCORE_MESSAGE = (
    "bias_audit: score at row {row} is {value!r}; every score must be a finite number"
)
EXCLUDE_BELOW_MESSAGE = (
    "bias_audit.exclude_below: {value!r} is not allowed; allowed: 0 <= value < 0.5"
)
THRESHOLD_MESSAGE = "bias_audit.threshold: {value!r} is not allowed; allowed: 0 < value <= 1"
NO_CATEGORIES_MESSAGE = "bias_audit.categories: give at least one category column"


def compute_bias_audit(
    categories: pd.DataFrame, *, selected: Sequence[bool] | np.ndarray | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    mode: BiasAuditMode | str = BiasAuditMode.SELECTION, exclude_below: float = 0.02,
    unknown_values: Sequence[str] = ("unknown",), threshold: float = 0.8,
) -> dict:
    """Selection rates, impact ratios and Fisher p-values per category and intersection.

    Parameters
    ----------
    categories : pandas.DataFrame
        ``(n_rows, n_features)``: one column per category (sensitive feature), in
        table order. Missing values are allowed and counted as unknown.
    selected : array-like of bool, optional
        ``(n_rows,)``: whether the tool selected the row (``selection`` mode).
    scores : array-like of float, optional
        ``(n_rows,)``: the favourable-outcome score (``scoring`` mode).
    mode : BiasAuditMode or str
        ``selection`` or ``scoring``.
    exclude_below : float
        Share of all rows under which a category is left out of impact ratios,
        ``0 <= exclude_below < 0.5``.
    unknown_values : sequence of str
        Category values that mean "unknown" (besides missing values).
    threshold : float
        Impact ratios strictly below it are ``flagged``, ``0 < threshold <= 1``.

    Returns
    -------
    dict
        The ``bias_audit`` section without intervals (layout in docs/bias-audit.md).

    Raises
    ------
    DataError
        Scoring mode without scores, a non-finite score, or arrays whose length does
        not match ``categories``.

    Examples
    --------
    >>> frame = pd.DataFrame({"sex": ["f", "f", "m", "m"]})
    >>> out = compute_bias_audit(frame, selected=[True, False, True, True], exclude_below=0)
    >>> [(r["group"], r["rate"], r["impact_ratio"]) for r in out["tables"]["sex"]["rows"]]
    [('f', 0.5, 0.5), ('m', 1.0, 1.0)]
    """
    mode = BiasAuditMode(mode)
    _check_settings(categories, exclude_below, threshold)
    n_rows = len(categories)
    chosen, median = _selected(mode, n_rows, selected, scores)
    unknown = {str(value).strip() for value in unknown_values}
    tables = {
        name: _table(name, codes, chosen, n_rows, exclude_below, threshold)
        for name, codes in _table_codes(categories, unknown).items()
    }
    warnings = [message for table in tables.values() for message in table.pop("warnings")]
    for message in warnings:
        logger.warning("%s", message)
    return {
        "mode": mode.value,
        "categories": [str(column) for column in categories.columns],
        "threshold": float(threshold),
        "exclude_below": float(exclude_below),
        "unknown_values": sorted(unknown),
        "n_rows": n_rows,
        "n_selected": int(chosen.sum()),
        "median_score": median,
        "tables": tables,
        "min_impact_ratio": min_impact_ratio(tables),
        "warnings": warnings,
    }


def _table_codes(categories: pd.DataFrame, unknown: set[str]) -> dict[str, list[str | None]]:
    """Table name -> category per row (``None``: unknown): each column, then their intersection."""
    codes = {
        str(column): _category_codes(categories[column], unknown) for column in categories.columns
    }
    if len(codes) >= 2:  # the intersection: unknown where any part is
        codes[INTERSECTION_SEPARATOR.join(codes)] = [
            None if None in parts else INTERSECTION_SEPARATOR.join(parts)
            for parts in zip(*codes.values(), strict=True)
        ]
    return codes


def min_impact_ratio(tables: Mapping[str, Mapping[str, Any]]) -> float | None:
    """Smallest impact ratio over the non-excluded categories of every table.

    ``None`` when there is no table or any table has no ``min_impact_ratio`` (no
    defined ratio, or fewer than two categories compared): a gate on it fails.
    """
    values = [table.get("min_impact_ratio") for table in tables.values()]
    if not values or any(value is None for value in values):
        return None
    return float(min(values))


# ----------------------------------------------------------------------- helpers
def _check_settings(categories: pd.DataFrame, exclude_below: float, threshold: float) -> None:
    if categories.shape[1] == 0:
        raise DataError(NO_CATEGORIES_MESSAGE)
    if not isinstance(exclude_below, int | float) or not 0 <= exclude_below < 0.5:
        raise DataError(EXCLUDE_BELOW_MESSAGE.format(value=exclude_below))
    if not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise DataError(THRESHOLD_MESSAGE.format(value=threshold))


def _selected(
    mode: BiasAuditMode, n_rows: int, selected, scores
) -> tuple[np.ndarray, float | None]:
    """``(n_rows,)`` bool selection and the median score (scoring mode)."""
    if mode is BiasAuditMode.SELECTION:
        if selected is None:
            raise DataError("bias_audit.mode: selection needs the selected rows; none were given")
        chosen = np.asarray(selected, dtype=bool).reshape(-1)
        if len(chosen) != n_rows:
            raise DataError(LENGTH_MESSAGE.format(what="selected", got=len(chosen), n=n_rows))
        return chosen, None
    if scores is None:
        raise DataError(NO_SCORES_MESSAGE)
    values = np.asarray(scores, dtype=float).reshape(-1)
    if len(values) != n_rows:
        raise DataError(LENGTH_MESSAGE.format(what="scores", got=len(values), n=n_rows))
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(BAD_SCORE_MESSAGE.format(row=row, value=float(values[row])))
    median = float(np.median(values))
    return values > median, median  # strictly above: a score equal to the median is not


def _category_codes(values: pd.Series, unknown: set[str]) -> list[str | None]:
    """Category name per row, ``None`` for missing or unknown values."""
    out: list[str | None] = []
    for value in values.tolist():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            out.append(None)
            continue
        text = str(value).strip()
        out.append(None if not text or text in unknown else text)
    return out


def _table(
    feature: str, codes: list[str | None], chosen: np.ndarray, n_rows: int, exclude_below: float,
    threshold: float,
) -> dict:
    """One table: a row per category, its reference, impact ratios, tests and warnings."""
    known = np.array([code is not None for code in codes], dtype=bool)
    rows = _category_rows(codes, chosen, n_rows, exclude_below)
    compared = [row for row in rows if not row["excluded"]]
    reference = max(
        compared, default=None,
        key=lambda row: (Fraction(row["n_selected"], row["n"]), row["n"], _reverse(row["group"])),
    )
    warnings = _compare_with_reference(feature, compared, reference, exclude_below, threshold)
    defined = [row["impact_ratio"] for row in compared if row["impact_ratio"] is not None]
    table_min = None
    if defined and len(compared) < 2:
        warnings.append(
            f"bias audit {feature}: only one category ({reference['group']!r}) is at or above "
            f"{exclude_below:.2%} of the data; nothing is compared, so there is no impact ratio "
            "to gate on"
        )
    elif defined:
        table_min = float(min(defined))
    _add_significance(rows, reference)
    unknown_count = int((~known).sum())
    unknown_selected = int(chosen[~known].sum())
    return {
        "feature": feature,
        "unknown_count": unknown_count,
        "unknown_selected": unknown_selected,
        "unknown_rate": unknown_selected / unknown_count if unknown_count else None,
        "reference_group": None if reference is None else reference["group"],
        "reference_rate": None if reference is None else reference["rate"],
        "min_impact_ratio": table_min,
        "rows": rows,
        "warnings": warnings,
    }


def _category_rows(
    codes: list[str | None], chosen: np.ndarray, n_rows: int, exclude_below: float
) -> list[dict[str, Any]]:
    """A row per known category, in name order: counts, rate, share and exclusion."""
    code_array = np.array([code if code is not None else "" for code in codes], dtype=object)
    rows = []
    for group in sorted({code for code in codes if code is not None}):
        mask = code_array == group
        n = int(mask.sum())
        n_selected = int(chosen[mask].sum())
        excluded = Fraction(n, n_rows) < exact_threshold(exclude_below)
        rows.append({
            "group": group, "n": n, "n_selected": n_selected, "rate": n_selected / n,
            "share": n / n_rows, "excluded": excluded, "impact_ratio": None, "flagged": False,
            "p_value": None,
            "note": (
                f"left out of impact ratios: {n} of {n_rows} rows ({n / n_rows:.2%}) is under "
                f"{exclude_below:.2%} of the data" if excluded else None
            ),
        })
    return rows


def _compare_with_reference(
    feature: str, compared: list[dict[str, Any]], reference: dict[str, Any] | None,
    exclude_below: float, threshold: float,
) -> list[str]:
    """Set each compared row's impact ratio, flag and Fisher p-value; the warnings."""
    if reference is None:
        return [
            f"bias audit {feature}: every category is under {exclude_below:.2%} of the data; "
            "no impact ratio was computed"
        ]
    warnings = []
    if reference["rate"] == 0:
        warnings.append(
            f"bias audit {feature}: no category was selected (the highest rate is 0); "
            "every impact ratio is undefined"
        )
        for row in compared:
            row["note"] = "impact ratio undefined: no category was selected"
    for row in compared:
        if reference["rate"] > 0:
            row["impact_ratio"] = row["rate"] / reference["rate"]
            # decided on the counts, exactly: a ratio of exactly 4/5 is not under 0.8
            row["flagged"] = not ratio_at_least(
                row["n_selected"], row["n"], reference["n_selected"], reference["n"], threshold
            )
        if row is not reference:
            row["p_value"] = _fisher_p(row, reference)
    return warnings


def _reverse(text: str) -> tuple[int, ...]:
    """Key that sorts names in reverse, so ``max`` picks the alphabetically first on ties."""
    return tuple(-ord(char) for char in text) + (0,)


def _fisher_p(row: Mapping[str, Any], reference: Mapping[str, Any]) -> float:
    """Two-sided Fisher exact test of the 2x2 table (selected, not selected) x (row, ref)."""
    table = [
        [row["n_selected"], row["n"] - row["n_selected"]],
        [reference["n_selected"], reference["n"] - reference["n_selected"]],
    ]
    return float(fisher_exact(table, alternative="two-sided").pvalue)


# ------------------------------------------------ standard-deviation analysis, shortfall
def standard_deviation_test(
    x_g: int, n_g: int, x_b: int, n_b: int
) -> tuple[float | None, float | None]:
    """Pooled two-proportion z-test of ``x_g / n_g`` against ``x_b / n_b``.

    ``z = (p_g - p_b) / sqrt(p (1 - p) (1/n_g + 1/n_b))`` with the pooled rate
    ``p = (x_g + x_b) / (n_g + n_b)``, no continuity correction.

    Parameters
    ----------
    x_g, n_g : int
        Selected and people in the category, ``0 <= x_g <= n_g``, ``n_g >= 1``.
    x_b, n_b : int
        The same for the reference.

    Returns
    -------
    tuple of (float or None, float or None)
        ``(z, two_sided_p)``; ``z`` is negative when the category's rate is the lower.
        ``(None, None)`` when the pooled rate is 0 or 1 (zero variance: undefined).

    Examples
    --------
    >>> z, p = standard_deviation_test(10, 50, 25, 50)
    >>> round(z, 4), round(p, 4)
    (-3.1449, 0.0017)
    >>> standard_deviation_test(0, 10, 0, 20)
    (None, None)
    """
    pooled_selected, pooled_n = x_g + x_b, n_g + n_b
    if pooled_n <= 0 or n_g <= 0 or n_b <= 0 or pooled_selected in (0, pooled_n):
        return None, None
    pooled = pooled_selected / pooled_n
    z = (x_g / n_g - x_b / n_b) / math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_g + 1.0 / n_b))
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def selections_to_four_fifths(x_g: int, n_g: int, x_b: int, n_b: int) -> int:
    """Extra selections the category needed for its rate to reach 4/5 of the reference's.

    The smallest ``x >= 0`` with ``5*(x_g + x)*n_b >= 4*x_b*n_g``, in integer arithmetic
    (floating point is off by one for counts such as ``x_b=3, n_b=4, n_g=5``); at most
    ``n_g - x_g``.

    Parameters
    ----------
    x_g, n_g : int
        Selected and people in the category (``n_g >= 1``).
    x_b, n_b : int
        Selected and people in the reference (``n_b >= 1``).

    Returns
    -------
    int
        0 when the category meets the line.

    Examples
    --------
    >>> selections_to_four_fifths(3, 5, 3, 4)   # 4/5 of 3/4 is 0.6 = 3/5: met
    0
    >>> selections_to_four_fifths(1, 10, 9, 10)
    7
    """
    needed = -(-4 * x_b * n_g // (5 * n_b))  # ceil(4 x_b n_g / (5 n_b))
    return max(0, needed - x_g)


def _add_significance(rows: list[dict], reference: Mapping[str, Any] | None) -> None:
    """Set ``z_score``, ``z_p_value``, ``significant_2sd``, ``small_sample``,
    ``selections_to_four_fifths`` and ``z_note`` on every row (docs/bias-audit.md)."""
    for row in rows:
        row.update(
            z_score=None, z_p_value=None, significant_2sd=None, small_sample=None,
            selections_to_four_fifths=None, z_note=None,
        )
        if reference is None or row["excluded"]:
            continue
        if row is reference:
            row["selections_to_four_fifths"] = 0
            row["z_note"] = "the reference: not compared with itself"
            continue
        x_g, n_g, x_b, n_b = row["n_selected"], row["n"], reference["n_selected"], reference["n"]
        z, p = standard_deviation_test(x_g, n_g, x_b, n_b)
        row["small_sample"] = n_g + n_b < SMALL_SAMPLE_N
        row["selections_to_four_fifths"] = selections_to_four_fifths(x_g, n_g, x_b, n_b)
        if z is None:
            pooled = (x_g + x_b) / (n_g + n_b)
            row["z_note"] = NOTE_Z_UNDEFINED.format(
                who="nobody" if pooled == 0 else "everybody", pooled=f"{pooled:g}"
            )
            continue
        row["z_score"] = z
        row["z_p_value"] = p
        row["significant_2sd"] = z <= -SIGNIFICANCE_SD
# ------------------------------------------------------------- uncertainty
def with_impact_ratio_intervals(
    audit: Mapping[str, Any], categories: pd.DataFrame, *,
    selected: Sequence[bool] | np.ndarray | None = None,
    scores: Sequence[float] | np.ndarray | None = None, bootstrap: int, confidence: float,
    seed: int,
) -> dict:
    """``audit`` (from :func:`compute_bias_audit`) with bootstrap intervals of its impact ratios.

    Computed as :mod:`promptaudit.fairness` computes a demographic-parity-ratio interval
    (same resamples, :func:`promptaudit.stats.folded_interval`), so one figure read from the
    same rates gets one verdict; docs/bias-audit.md ("Its interval") has the details.

    Parameters
    ----------
    audit : mapping
        The bias audit (its ``mode``, ``categories``, ``unknown_values`` and tables).
    categories : pandas.DataFrame
        ``(n_rows, n_features)``: the same category columns ``audit`` was computed from.
    selected, scores : array-like, optional
        ``(n_rows,)``: as given to :func:`compute_bias_audit` for its mode.
    bootstrap, confidence, seed : int, float, int
        Resamples (0: no interval), level and seed.

    Returns
    -------
    dict
        A copy of ``audit`` with ``impact_ratio_interval`` per table (``[lo, hi]`` or None),
        ``min_impact_ratio_interval``, ``interval_confidence`` and ``interval_bootstrap``.
    """
    out = copy.deepcopy(dict(audit))
    out["interval_confidence"] = float(confidence)
    out["interval_bootstrap"] = int(bootstrap)
    tables = out.get("tables") or {}
    for table in tables.values():
        table["impact_ratio_interval"] = None
    out["min_impact_ratio_interval"] = None
    n_rows = len(categories)
    if bootstrap <= 0 or n_rows == 0 or bootstrap < min_resamples(confidence):
        return out
    mode = BiasAuditMode(out.get("mode", "selection"))
    chosen, _ = _selected(mode, n_rows, selected, scores)
    values = None if mode is BiasAuditMode.SELECTION else np.asarray(scores, dtype=float)
    unknown = {str(value).strip() for value in out.get("unknown_values") or ()}
    layouts = _interval_layouts(tables, _table_codes(categories, unknown))
    if not layouts:
        return out
    sampled = _resampled_rates(layouts, chosen, values, bootstrap, seed)
    for name, (groups, _) in layouts.items():
        rates = {row["group"]: row["rate"] for row in tables[name]["rows"]}
        point = np.array([rates[group] for group in groups], dtype=float)
        pairs = compared_pairs(len(groups), None)
        interval = folded_interval(
            signed_gaps(point, pairs, "ratio"), signed_gaps(sampled[name], pairs, "ratio"),
            "ratio", confidence,
        )
        tables[name]["impact_ratio_interval"] = (
            None if interval is None else [float(interval[0]), float(interval[1])]
        )
    out["min_impact_ratio_interval"] = _worst_table_interval(out, layouts)
    return out


def _interval_layouts(
    tables: Mapping[str, Mapping[str, Any]], codes: Mapping[str, list[str | None]]
) -> dict[str, tuple[list[str], np.ndarray]]:
    """Tables with an impact ratio to bound -> (compared categories, ``(n_rows,)`` index
    of each row's category among them, -1 for rows not compared)."""
    layouts = {}
    for name, table in tables.items():
        compared = [row["group"] for row in table.get("rows") or [] if not row.get("excluded")]
        if table.get("min_impact_ratio") is None or len(compared) < 2 or name not in codes:
            continue
        index = {group: g for g, group in enumerate(compared)}
        layouts[name] = (
            compared,
            np.array([index.get(code, -1) if code is not None else -1 for code in codes[name]]),
        )
    return layouts


def _resampled_rates(
    layouts: Mapping[str, tuple[list[str], np.ndarray]], chosen: np.ndarray,
    scores: np.ndarray | None, bootstrap: int, seed: int,
) -> dict[str, np.ndarray]:
    """Table -> ``(bootstrap, G)`` selection rates of the compared categories per resample.

    ``scores`` (scoring mode): a row is selected when its score is above the
    resample's median; else ``chosen (n_rows,)``. A category absent from a resample is NaN.
    """
    n_rows = len(chosen)
    sampled = {name: np.full((bootstrap, len(groups)), np.nan) for name, (groups, _) in
               layouts.items()}
    for b, rows in enumerate(resample_rows(seed, n_rows, bootstrap)):
        weights = np.bincount(rows, minlength=n_rows).astype(float)
        picked = chosen if scores is None else scores > float(np.median(scores[rows]))
        for name, (groups, group_of) in layouts.items():
            member = group_of >= 0
            counts = np.bincount(group_of[member], weights=weights[member], minlength=len(groups))
            hits = np.bincount(group_of[member], weights=(weights * picked)[member],
                               minlength=len(groups))
            with np.errstate(divide="ignore", invalid="ignore"):
                sampled[name][b] = np.where(counts > 0, hits / counts, np.nan)
    return sampled


def _worst_table_interval(
    audit: Mapping[str, Any], layouts: Mapping[str, Any]
) -> list[float] | None:
    """``[lowest lower bound over tables, upper bound of the worst table]``, or None when the
    audit has no worst ratio or a table with a ratio lacks an interval."""
    tables = audit["tables"]
    intervals = [tables[name]["impact_ratio_interval"] for name in layouts]
    with_ratio = sum(1 for table in tables.values() if table.get("min_impact_ratio") is not None)
    if audit.get("min_impact_ratio") is None or len(layouts) != with_ratio or None in intervals:
        return None
    worst = min(layouts, key=lambda name: tables[name]["min_impact_ratio"])  # first if tied
    return [min(interval[0] for interval in intervals), tables[worst]["impact_ratio_interval"][1]]
