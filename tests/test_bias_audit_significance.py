"""Bias audit, standard-deviation analysis and shortfall (issue 25, items 1-3).

The z-scores and their p-values against a hand formula and against statsmodels'
pooled two-proportion z-test; the shortfall against a brute-force search with exact
fractions over every small count; the degenerate, reference and excluded rows; the
unknown category disclosed as a row in the result, CSV, HTML and Markdown; and the
whole analysis against ``aedt-audit`` 0.3.0 (an independent LL144/EEOC package, a dev
dependency) on the same rows.
"""

from __future__ import annotations

import csv
import io
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from promptaudit.bias_audit import (
    compute_bias_audit,
    selections_to_four_fifths,
    standard_deviation_test,
)
from promptaudit.report import render_html, render_markdown
from promptaudit.report._bias_audit import bias_audit_csv


def rows_by_group(table: dict) -> dict[str, dict]:
    return {row["group"]: row for row in table["rows"]}


def hand_z(x_g: int, n_g: int, x_b: int, n_b: int) -> float:
    """Castaneda/Hazelwood: (p_g - p_b) / sqrt(P(1-P)(1/n_g + 1/n_b)), P pooled."""
    pooled = (x_g + x_b) / (n_g + n_b)
    return (x_g / n_g - x_b / n_b) / math.sqrt(pooled * (1 - pooled) * (1 / n_g + 1 / n_b))


@pytest.fixture(scope="module")
def screening() -> tuple[pd.DataFrame, np.ndarray]:
    """200 rows. gender: male 80 (48 selected) reference, female 90 (27), other 22 (9),
    tiny 3 (3; 1.5% of the rows: excluded), unknown 5 (2 selected).
    race (independent of gender): A/B/C by row index."""
    counts = [("male", 80, 48), ("female", 90, 27), ("other", 22, 9), ("tiny", 3, 3),
              ("unknown", 5, 2)]
    gender, selected = [], []
    for name, n, chosen in counts:
        gender += [name] * n
        selected += [True] * chosen + [False] * (n - chosen)
    race = ["ABC"[(i * 7) % 3] for i in range(len(gender))]
    return pd.DataFrame({"gender": gender, "race": race}), np.array(selected)


@pytest.fixture(scope="module")
def screening_audit(screening) -> dict:
    frame, selected = screening
    return compute_bias_audit(frame, selected=selected, exclude_below=0.02)


# ------------------------------------------------------------------ z and p
def test_z_and_p_equal_the_hand_formula(screening_audit):
    rows = rows_by_group(screening_audit["tables"]["gender"])
    female, other = rows["female"], rows["other"]
    # female 27/90 = 0.3 against male 48/80 = 0.6: pooled 75/170
    z = hand_z(27, 90, 48, 80)
    assert female["z_score"] == pytest.approx(z, rel=1e-12) and z < -3.9
    assert female["z_p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-12)
    assert female["significant_2sd"] is True and female["small_sample"] is False
    # other 9/22 against 48/80: about -1.6 SD, not significant
    z_other = hand_z(9, 22, 48, 80)
    assert other["z_score"] == pytest.approx(z_other, rel=1e-12) and -2 < z_other < -1
    assert other["significant_2sd"] is False


def test_z_and_p_equal_statsmodels_proportions_ztest(screening_audit):
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    table = screening_audit["tables"]["gender & race"]
    reference = rows_by_group(table)[table["reference_group"]]
    checked = 0
    for row in table["rows"]:
        if row["excluded"] or row is reference or row["z_score"] is None:
            continue
        z, p = proportion.proportions_ztest(
            [row["n_selected"], reference["n_selected"]], [row["n"], reference["n"]],
            alternative="two-sided", prop_var=False,
        )
        assert row["z_score"] == pytest.approx(z, rel=1e-9, abs=1e-12)
        assert row["z_p_value"] == pytest.approx(p, rel=1e-9, abs=1e-15)
        assert row["significant_2sd"] is bool(z <= -2)
        assert row["small_sample"] is (row["n"] + reference["n"] < 30)
        checked += 1
    assert checked >= 5


def test_small_sample_is_under_30_people_together():
    # a: 10 (2 selected), b: 19 (15 selected) -> 29 together: small; c: 11 -> 30: not small
    frame = pd.DataFrame({"g": ["a"] * 10 + ["b"] * 19 + ["c"] * 11})
    selected = [True] * 2 + [False] * 8 + [True] * 15 + [False] * 4 + [True] * 2 + [False] * 9
    rows = rows_by_group(compute_bias_audit(frame, selected=selected, exclude_below=0)
                         ["tables"]["g"])
    assert rows["a"]["small_sample"] is True and rows["c"]["small_sample"] is False


def test_reference_excluded_and_degenerate_rows_say_why(screening_audit):
    rows = rows_by_group(screening_audit["tables"]["gender"])
    male, tiny = rows["male"], rows["tiny"]
    assert screening_audit["tables"]["gender"]["reference_group"] == "male"
    assert male["z_score"] is None and male["significant_2sd"] is None
    assert male["selections_to_four_fifths"] == 0 and "reference" in male["z_note"]
    assert tiny["excluded"] is True
    assert all(tiny[k] is None for k in ("z_score", "z_p_value", "significant_2sd",
                                         "small_sample", "selections_to_four_fifths"))
    # nobody selected anywhere: the pooled rate is 0, the z-score is undefined, not 0
    frame = pd.DataFrame({"g": ["a"] * 10 + ["b"] * 10})
    rows = rows_by_group(compute_bias_audit(frame, selected=[False] * 20, exclude_below=0)
                         ["tables"]["g"])
    compared = [r for r in rows.values() if r["z_note"] and "undefined" in r["z_note"]]
    assert len(compared) == 1 and compared[0]["z_score"] is None
    assert compared[0]["z_p_value"] is None and compared[0]["significant_2sd"] is None
    assert "nobody" in compared[0]["z_note"]
    page = render_html({"audit": {"name": "n"}, "gates": [], "passed": True,
                        "bias_audit": compute_bias_audit(frame, selected=[False] * 20,
                                                         exclude_below=0)})
    assert "z-score undefined: nobody selected" in page  # the report says why, too
    # everybody selected: pooled rate 1
    rows = rows_by_group(compute_bias_audit(frame, selected=[True] * 20, exclude_below=0)
                         ["tables"]["g"])
    assert any(r["z_note"] and "everybody" in r["z_note"] for r in rows.values())


def test_significance_never_changes_the_four_fifths_flag():
    # a 40/100 against b 49/100: ratio 0.816 (not flagged) though z = -1.28;
    # c 3/5 against b: ratio 1.22; d 30/100: ratio 0.61 flagged and -2.8 SD
    frame = pd.DataFrame({"g": ["a"] * 100 + ["b"] * 100 + ["d"] * 100})
    selected = ([True] * 40 + [False] * 60 + [True] * 49 + [False] * 51
                + [True] * 30 + [False] * 70)
    rows = rows_by_group(compute_bias_audit(frame, selected=selected, exclude_below=0)
                         ["tables"]["g"])
    assert rows["a"]["flagged"] is False and rows["a"]["significant_2sd"] is False
    assert rows["d"]["flagged"] is True and rows["d"]["significant_2sd"] is True
    assert rows["a"]["p_value"] is not None  # Fisher kept beside the z-test


# ------------------------------------------------------------------ shortfall
def brute_force_shortfall(x_g: int, n_g: int, x_b: int, n_b: int) -> int | None:
    line = Fraction(4, 5) * Fraction(x_b, n_b)
    for extra in range(n_g - x_g + 1):
        if Fraction(x_g + extra, n_g) >= line:
            return extra
    return None


def test_shortfall_equals_brute_force_over_every_small_count():
    for n_g in range(1, 13):
        for n_b in range(1, 13):
            for x_g in range(n_g + 1):
                for x_b in range(n_b + 1):
                    expected = brute_force_shortfall(x_g, n_g, x_b, n_b)
                    # selecting everyone always reaches the line
                    assert expected is not None
                    assert selections_to_four_fifths(x_g, n_g, x_b, n_b) == expected


def test_shortfall_where_floating_point_is_off_by_one():
    # 4/5 of 3/4 is exactly 3/5: a category of 5 needs 3 selected, not 4
    assert 0.8 * 0.75 * 5 > 3  # floating point overshoots ...
    assert math.ceil(0.8 * 0.75 * 5) - 2 == 2  # ... so a float formula says 2
    assert selections_to_four_fifths(2, 5, 3, 4) == 1
    assert selections_to_four_fifths(3, 5, 3, 4) == 0


def test_shortfall_in_the_audit_rows(screening_audit):
    rows = rows_by_group(screening_audit["tables"]["gender"])
    # female 27/90 against 0.6: needs 0.48 * 90 = 43.2 -> 44 selected, 17 more
    assert rows["female"]["selections_to_four_fifths"] == 17
    # other 9/22: needs 0.48 * 22 = 10.56 -> 11, 2 more
    assert rows["other"]["selections_to_four_fifths"] == 2


def test_standard_deviation_test_is_symmetric_in_sign():
    z_low, p_low = standard_deviation_test(10, 50, 25, 50)
    z_high, p_high = standard_deviation_test(25, 50, 10, 50)
    assert z_low == pytest.approx(-z_high) and p_low == pytest.approx(p_high)


# ------------------------------------------------------------------ unknown row
def test_unknown_category_is_a_row_in_result_csv_html_and_markdown(screening_audit):
    table = screening_audit["tables"]["gender"]
    assert table["unknown_count"] == 5 and table["unknown_selected"] == 2
    assert table["unknown_rate"] == pytest.approx(0.4)
    assert "unknown" not in {row["group"] for row in table["rows"]}
    assert table["reference_group"] != "unknown"
    result = {"schema_version": "1", "audit": {"name": "t"},
              "task": {"positive_label": "yes"}, "gates": [], "passed": True,
              "bias_audit": screening_audit}
    rows = list(csv.DictReader(io.StringIO(bias_audit_csv(result))))
    unknown = [r for r in rows if r["kind"] == "unknown" and r["table"] == "gender"]
    assert [(u["n"], u["n_selected"], float(u["rate"])) for u in unknown] == [("5", "2", 0.4)]
    female = next(r for r in rows if r["table"] == "gender" and r["group"] == "female")
    assert float(female["z_score"]) == pytest.approx(hand_z(27, 90, 48, 80), rel=1e-12)
    assert female["selections_to_four_fifths"] == "17" and female["significant_2sd"] == "true"
    markdown = render_markdown(result)
    assert "| Unknown (not benchmarked) | 5 | 2 | 0.400 |" in markdown
    assert "z-score" in markdown and "Shortfall to 4/5 (people)" in markdown
    html = render_html(result)
    assert ('<th scope="row">Unknown <span class="flag">not benchmarked</span></th>'
            '<td class="num">5</td><td class="num">2</td><td class="num">0.400</td>') in html
    assert f"{hand_z(27, 90, 48, 80):.2f}" in html and "yes (2 SD or more below)" in html


# ------------------------------------------------------------------ aedt-audit peer
def test_equals_aedt_audit_on_the_same_rows(screening, screening_audit):
    aedt = pytest.importorskip("aedt_audit")
    frame, selected = screening
    data = frame.assign(selected=selected)
    data.loc[data["gender"] == "unknown", "gender"] = None  # aedt's unknown: missing
    compared = 0
    for name, by in (("gender", ["gender"]), ("race", ["race"])):
        rates = aedt.selection_rates(data, by=by, outcome="selected", min_category_share=0.02)
        theirs = aedt.significance(aedt.four_fifths(rates, by=by), by=by)
        theirs = {str(row[by[0]]): row for _, row in theirs.iterrows()}
        table = screening_audit["tables"][name]
        for row in table["rows"]:
            if row["excluded"] or row["group"] == table["reference_group"]:
                continue
            peer = theirs[row["group"]]
            assert row["z_score"] == pytest.approx(peer["z_score"], rel=1e-12, abs=1e-15)
            assert row["z_p_value"] == pytest.approx(peer["p_value"], rel=1e-12, abs=1e-15)
            assert row["significant_2sd"] is bool(peer["significant_2sd"])
            assert row["small_sample"] is bool(peer["small_sample"])
            assert row["selections_to_four_fifths"] == int(peer["selections_to_four_fifths"])
            assert row["flagged"] is bool(peer["adverse_impact_eeoc"])
            compared += 1
    assert compared == 4  # female, other; and two races
    # and a small-sample table with shortfalls, over random counts
    rng = np.random.default_rng(0)
    for _ in range(20):
        groups = rng.choice(list("pqrs"), size=int(rng.integers(12, 60)))
        chosen = rng.random(len(groups)) < rng.uniform(0.2, 0.8)
        ours = compute_bias_audit(pd.DataFrame({"g": groups}), selected=chosen,
                                  exclude_below=0)["tables"]["g"]
        peer_rates = aedt.selection_rates(pd.DataFrame({"g": groups, "s": chosen}), by=["g"],
                                          outcome="s", min_category_share=0)
        peer = aedt.significance(aedt.four_fifths(peer_rates, by=["g"]), by=["g"])
        peer = {str(r["g"]): r for _, r in peer.iterrows()}
        for row in ours["rows"]:
            if row["group"] == ours["reference_group"] or row["z_score"] is None:
                continue
            other = peer[row["group"]]
            assert row["z_score"] == pytest.approx(other["z_score"], rel=1e-12, abs=1e-15)
            assert row["z_p_value"] == pytest.approx(other["p_value"], rel=1e-12, abs=1e-15)
            assert row["small_sample"] is bool(other["small_sample"])
            assert row["significant_2sd"] is bool(other["significant_2sd"])
            assert row["selections_to_four_fifths"] == int(other["selections_to_four_fifths"])
