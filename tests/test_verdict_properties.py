"""Property suites for the verdict core (issue 22), checked against plain reference code.

(a) gate status over random per-feature values and intervals (min and max gates, any
    number of features, either policy, point or bound) against the three-state rule
    written out plainly here;
(b) ratio-versus-threshold decisions against exact ``fractions.Fraction`` arithmetic,
    plus a brute force over every small count pair;
(c) impact-ratio tables (bias_audit) against a direct pandas computation over random
    categories with unknowns, missing values and tiny groups.

The example count comes from the Hypothesis profile in ``conftest.py`` (small by
default, ``--hypothesis-profile nightly`` for many more).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptaudit.bias_audit import INTERSECTION_SEPARATOR, compute_bias_audit
from promptaudit.gates import evaluate_gates
from promptaudit.ratios import exact_threshold, rate_ratio, ratio_at_least

# ------------------------------------------------------------------ (a) gate status

#: Values on a coarse grid, so values, interval ends and thresholds often coincide.
GRID = st.integers(0, 20).map(lambda k: k / 20)


@st.composite
def feature_figures(draw):
    value = draw(st.one_of(st.none(), GRID)) if draw(st.integers(0, 9)) == 0 else draw(GRID)
    interval = None
    if draw(st.booleans()):
        lo, hi = sorted((draw(GRID), draw(GRID)))
        interval = [lo, hi]
    return value, interval


def reference_status(figures, op, threshold, *, expected, use_bound):
    """The rule as the issue states it, written without the implementation's helpers."""

    def ok(x):
        return x >= threshold if op == ">=" else x <= threshold

    if use_bound:  # every feature's conservative end must pass; a missing one fails
        ends = [None if iv is None else (iv[0] if op == ">=" else iv[1]) for _, iv in figures]
        return "pass" if ends and all(e is not None and ok(e) for e in ends) else "fail"
    verdicts = []
    for value, interval in figures:
        evidence = [value] + (list(interval) if interval is not None else [])
        if value is None:
            verdicts.append("fail")
        elif all(not ok(x) for x in evidence):
            verdicts.append("fail")  # wholly on the failing side: decisive
        elif all(ok(x) for x in evidence) and (interval is not None or not expected):
            verdicts.append("pass")  # wholly on the passing side (with the interval asked for)
        elif not ok(value) and interval is None:
            verdicts.append("fail")
        else:
            verdicts.append("inconclusive")
    if "fail" in verdicts:
        return "fail"
    if "inconclusive" in verdicts:
        return "inconclusive"
    return "pass"


def _result(figures, metric, bootstrap):
    higher = metric.endswith("ratio")
    names = [f"f{i}" for i in range(len(figures))]
    values = [v for v, _ in figures]
    if any(v is None for v in values):
        worst, worst_interval = None, None
    else:
        index = (np.argmin if higher else np.argmax)(values)
        worst, worst_interval = values[index], figures[index][1]
    return {
        "task": {"n_examples": 500},
        "fairness": {
            "bootstrap": bootstrap, "confidence": 0.95,
            "by_feature": {
                name: {"disparities": {metric: v}, "disparity_intervals": {metric: iv}}
                for name, (v, iv) in zip(names, figures, strict=True)
            },
            "disparities": {metric: worst},
            "disparity_intervals": {metric: worst_interval},
        },
    }


@given(
    figures=st.lists(feature_figures(), min_size=1, max_size=5),
    metric=st.sampled_from(["demographic_parity_ratio", "demographic_parity_difference"]),
    op=st.sampled_from(["min", "max"]),
    threshold=GRID,
    policy=st.sampled_from(["fail", "pass"]),
    bootstrap=st.sampled_from([0, 1000]),
    use_bound=st.booleans(),
)
def test_property_gate_status_follows_the_three_state_rule(
    figures, metric, op, threshold, policy, bootstrap, use_bound
):
    result = _result(figures, metric, bootstrap)
    gate = {"metric": metric, op: threshold, "use_bound": use_bound}
    entry = evaluate_gates([gate], result, inconclusive=policy)[0]
    symbol = ">=" if op == "min" else "<="
    expected = reference_status(figures, symbol, threshold, expected=bootstrap > 0,
                                use_bound=use_bound)
    assert entry["status"] == expected, (figures, entry["message"])
    assert entry["passed"] is (expected == "pass" or (expected == "inconclusive"
                                                      and policy == "pass"))
    if expected != "inconclusive":
        assert entry["rows_to_decide"] is None
    # a feature gate reads exactly that feature
    for index, figure in enumerate(figures):
        alone = evaluate_gates([{**gate, "feature": f"f{index}"}], result,
                               inconclusive=policy)[0]
        assert alone["status"] == reference_status(
            [figure], symbol, threshold, expected=bootstrap > 0, use_bound=use_bound)


def test_regression_fail_hidden_behind_inconclusive_worst():
    # the case, as the property suite's reference reads it
    figures = [(0.5, [0.29, 0.77]), (0.356, [0.0, 1.0])]
    result = _result(figures, "demographic_parity_ratio", 1000)
    entry = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.8}], result,
                           inconclusive="pass")[0]
    assert reference_status(figures, ">=", 0.8, expected=True, use_bound=False) == "fail"
    assert (entry["status"], entry["passed"]) == ("fail", False)


@pytest.mark.parametrize(("figures", "feature", "status"), [
    # found by the suite on the old code: a present interval was ignored when the point
    # passed and the audit had not asked for intervals (bootstrap 0); it is read now
    ([(0.05, [0.0, 0.0])], None, "inconclusive"),
    ([(None, None), (0.05, [0.0, 0.0])], "f1", "inconclusive"),
    ([(None, None), (0.05, [0.0, 0.0])], None, "fail"),
])
def test_regression_found_counterexamples(figures, feature, status):
    result = _result(figures, "demographic_parity_ratio", 0)
    gate = {"metric": "demographic_parity_ratio", "min": 0.05}
    if feature:
        gate["feature"] = feature
    assert evaluate_gates([gate], result)[0]["status"] == status


# ------------------------------------------------------------------ (b) ratio decisions

DECIMALS = st.integers(1, 100).map(lambda k: k / 100)


@given(
    n1=st.integers(1, 10**6), n2=st.integers(1, 10**6),
    a=st.floats(0, 1), b=st.floats(0, 1),
    threshold=st.one_of(DECIMALS, st.sampled_from([0.8, 0.75, 0.9, 1.0, 0.5, 0.333])),
)
def test_property_ratio_at_least_is_exact(n1, n2, a, b, threshold):
    s1 = round(a * n1)
    s2 = max(1, round(b * n2))
    truth = Fraction(s1, n1) / Fraction(s2, n2) >= Fraction(str(threshold))
    assert ratio_at_least(s1, n1, s2, n2, threshold) is truth
    assert rate_ratio(s1, n1, s2, n2) == Fraction(s1 * n2, s2 * n1)


@given(k=st.integers(1, 9), scale=st.integers(1, 400))
def test_property_a_ratio_equal_to_the_threshold_meets_it(k, scale):
    # s1/n1 = (k/10) * (s2/n2) exactly: (k * scale) / (10 * scale) against scale / scale
    threshold = k / 10
    assert ratio_at_least(k * scale, 10 * scale, scale, scale, threshold)
    assert not ratio_at_least(k * scale - 1, 10 * scale, scale, scale, threshold)


def test_exact_threshold_reads_the_written_decimal():
    assert exact_threshold(0.8) == Fraction(4, 5) != Fraction(0.8)
    assert exact_threshold(0.1 + 0.2) == Fraction("0.30000000000000004")
    assert exact_threshold(1) == 1 and exact_threshold(Fraction(2, 3)) == Fraction(2, 3)
    with pytest.raises(ValueError):
        exact_threshold(float("nan"))


@pytest.mark.parametrize(("limit", "threshold"), [(30, 0.8), (15, 0.75), (15, 0.9), (15, 0.5)])
def test_brute_force_small_counts(limit, threshold):
    """Every ``(s1, n1, s2, n2)`` with counts up to ``limit``: exact, where floats are not."""
    t = Fraction(str(threshold))
    float_wrong = exact_wrong = 0
    for n1 in range(1, limit + 1):
        for s1 in range(n1 + 1):
            for n2 in range(1, limit + 1):
                for s2 in range(1, n2 + 1):
                    truth = s1 * n2 * t.denominator >= t.numerator * s2 * n1
                    float_wrong += ((s1 / n1) / (s2 / n2) >= threshold) is not truth
                    exact_wrong += ratio_at_least(s1, n1, s2, n2, threshold) is not truth
    assert exact_wrong == 0
    if threshold == 0.8:
        assert float_wrong == 232  # the old float comparison: 232 wrong decisions up to 30


# ------------------------------------------------------------------ (c) impact-ratio tables

CATEGORY = st.one_of(
    st.sampled_from(["a", "b", "c", " a ", "d", "e"]),
    st.sampled_from(["unknown", " unknown", "", "  ", None, float("nan")]),
)


def _pandas_table(codes: pd.Series, selected: pd.Series, n_rows: int, exclude_below: float,
                  threshold: float) -> dict:
    """One bias-audit table computed directly with pandas."""
    known = codes.notna()
    frame = pd.DataFrame({"group": codes[known], "selected": selected[known].astype(int)})
    table = frame.groupby("group")["selected"].agg(n="size", s="sum").reset_index()
    table["excluded"] = table["n"] / n_rows < exclude_below
    compared = table[~table["excluded"]]
    reference = None
    if len(compared):
        ordered = sorted(
            compared.itertuples(index=False),
            key=lambda r: (-Fraction(int(r.s), int(r.n)), -int(r.n), r.group),
        )
        reference = ordered[0]
    rows = {}
    for r in table.itertuples(index=False):
        ratio, flagged = None, False
        if not r.excluded and reference is not None and reference.s > 0:
            ratio = (r.s / r.n) / (reference.s / reference.n)
            flagged = Fraction(int(r.s), int(r.n)) / Fraction(
                int(reference.s), int(reference.n)) < Fraction(str(threshold))
        rows[r.group] = (int(r.n), int(r.s), bool(r.excluded), ratio, bool(flagged))
    defined = [row[3] for row in rows.values() if row[3] is not None]
    return {
        "rows": rows,
        "unknown_count": int((~known).sum()),
        "reference_group": None if reference is None else reference.group,
        "min_impact_ratio": min(defined) if defined and len(compared) >= 2 else None,
    }


def _normalise(values: list) -> pd.Series:
    def one(value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        text = str(value).strip()
        return None if text in ("", "unknown") else text
    return pd.Series([one(v) for v in values], dtype=object)


@given(
    rows=st.lists(st.tuples(CATEGORY, CATEGORY, st.booleans()), min_size=1, max_size=80),
    exclude_below=st.sampled_from([0.0, 0.02, 0.1, 0.3]),
    threshold=st.sampled_from([0.8, 0.5, 0.75, 1.0]),
)
def test_property_impact_ratio_tables_match_pandas(rows, exclude_below, threshold):
    first, second, chosen = zip(*rows, strict=True)
    frame = pd.DataFrame({"x": list(first), "y": list(second)})
    selected = pd.Series(chosen, dtype=bool)
    out = compute_bias_audit(frame, selected=selected.tolist(), exclude_below=exclude_below,
                             threshold=threshold)
    x, y = _normalise(list(first)), _normalise(list(second))
    joint = pd.Series([None if a is None or b is None else f"{a}{INTERSECTION_SEPARATOR}{b}"
                       for a, b in zip(x, y, strict=True)], dtype=object)
    n = len(rows)
    for name, codes in (("x", x), ("y", y), (f"x{INTERSECTION_SEPARATOR}y", joint)):
        expected = _pandas_table(codes, selected, n, exclude_below, threshold)
        table = out["tables"][name]
        assert table["unknown_count"] == expected["unknown_count"]
        assert table["reference_group"] == expected["reference_group"]
        got = {r["group"]: (r["n"], r["n_selected"], r["excluded"], r["impact_ratio"],
                            r["flagged"]) for r in table["rows"]}
        assert set(got) == set(expected["rows"])
        for group, (n_g, s_g, excluded, ratio, flagged) in expected["rows"].items():
            assert got[group][:3] == (n_g, s_g, excluded)
            assert (got[group][3] is None) is (ratio is None)
            if ratio is not None:
                assert got[group][3] == pytest.approx(ratio, rel=1e-12)
            assert got[group][4] is flagged, (group, got[group], expected)
        if expected["min_impact_ratio"] is None:
            assert table["min_impact_ratio"] is None
        else:
            assert table["min_impact_ratio"] == pytest.approx(expected["min_impact_ratio"])


def test_regression_four_fifths_table_with_an_unknown_and_a_tiny_group():
    # 20/30 against 25/30 (exactly 4/5), one unknown, one excluded singleton
    values = ["A"] * 30 + ["B"] * 30 + ["unknown", "C"]
    selected = [True] * 20 + [False] * 10 + [True] * 25 + [False] * 5 + [True, False]
    out = compute_bias_audit(pd.DataFrame({"g": values}), selected=selected)
    expected = _pandas_table(_normalise(values), pd.Series(selected), len(values), 0.02, 0.8)
    rows = {r["group"]: r for r in out["tables"]["g"]["rows"]}
    assert rows["A"]["flagged"] is expected["rows"]["A"][4] is False
    assert rows["C"]["excluded"] and out["tables"]["g"]["unknown_count"] == 1
