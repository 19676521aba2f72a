"""Bias audit (NYC LL144 / EEOC four-fifths form): every figure against a hand count.

Small tables whose selection rates, impact ratios, exclusions and unknown counts are
worked out by hand in the comments; p-values against ``scipy.stats.fisher_exact``
called here directly; category names with HTML, Markdown and spreadsheet-formula
payloads through every output; the spec's bad inputs exit 2 with one line; and one
tiny end-to-end audit whose table is recomputed from independent predictions.
"""

from __future__ import annotations

import csv
import io
import math
import re

import audit_helpers as helpers
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import fisher_exact
from typer.testing import CliRunner

from promptaudit.bias_audit import compute_bias_audit, min_impact_ratio
from promptaudit.cli import app
from promptaudit.data import MISSING_GROUP, check_sensitive_columns
from promptaudit.errors import DataError, SpecError
from promptaudit.gates import evaluate_gates
from promptaudit.report import render_html, render_markdown, write_reports
from promptaudit.report._bias_audit import bias_audit_csv
from promptaudit.spec import parse_spec

TOL = 1e-12


def rows_by_group(table: dict) -> dict[str, dict]:
    return {row["group"]: row for row in table["rows"]}


def fisher(a_sel: int, a_n: int, b_sel: int, b_n: int) -> float:
    return float(fisher_exact([[a_sel, a_n - a_sel], [b_sel, b_n - b_sel]]).pvalue)


# ------------------------------------------------------------------ hand tables
@pytest.fixture(scope="module")
def hiring() -> tuple[pd.DataFrame, np.ndarray]:
    """100 rows. gender: female 40 (12 selected), male 50 (25), nonbinary 1 (1),
    missing 4 (None, NaN, "", "  "; 2 selected), "unknown" 5 (3 selected).
    race: A 60 (30 selected) / B 40 (13 selected) over the same rows.
    """
    gender = (["female"] * 40 + ["male"] * 50 + ["nonbinary"]
              + [None, float("nan"), "", "  "] + ["unknown"] * 5)
    selected = np.array(
        [True] * 12 + [False] * 28          # female 12/40
        + [True] * 25 + [False] * 25        # male 25/50
        + [True]                            # nonbinary 1/1
        + [True, True, False, False]        # missing 2/4
        + [True, True, True, False, False]  # unknown 3/5
    )
    race = ["A" if i % 5 < 3 else "B" for i in range(100)]  # 60 A, 40 B
    return pd.DataFrame({"gender": gender, "race": race}), selected


@pytest.fixture(scope="module")
def hiring_audit(hiring) -> dict:
    frame, selected = hiring
    return compute_bias_audit(frame, selected=selected, exclude_below=0.02)


def test_selection_rates_ratios_and_flags_by_hand(hiring_audit):
    table = hiring_audit["tables"]["gender"]
    rows = rows_by_group(table)
    assert list(rows) == ["female", "male", "nonbinary"]  # unknowns are not rows
    # nonbinary: 1 of 100 rows = 1% < 2%: excluded although its rate (1.0) is highest
    assert rows["nonbinary"]["excluded"] is True
    assert rows["nonbinary"]["impact_ratio"] is None and rows["nonbinary"]["p_value"] is None
    assert rows["nonbinary"]["rate"] == 1.0 and rows["nonbinary"]["n"] == 1
    assert "1 of 100 rows" in rows["nonbinary"]["note"]
    # reference: male 25/50 = 0.5; female 12/40 = 0.3 -> 0.3 / 0.5 = 0.6 < 0.8
    assert table["reference_group"] == "male"
    assert table["reference_rate"] == 0.5
    assert (rows["male"]["n"], rows["male"]["n_selected"]) == (50, 25)
    assert (rows["female"]["n"], rows["female"]["n_selected"]) == (40, 12)
    assert abs(rows["female"]["rate"] - 0.3) < TOL
    assert abs(rows["female"]["impact_ratio"] - 0.6) < TOL
    assert rows["female"]["flagged"] is True and rows["male"]["flagged"] is False
    assert rows["male"]["impact_ratio"] == 1.0 and rows["male"]["p_value"] is None
    # missing (4) and "unknown" (5) are counted, not tabled: 9 rows, 2 + 3 selected
    assert table["unknown_count"] == 9 and table["unknown_selected"] == 5
    assert hiring_audit["n_rows"] == 100 and hiring_audit["n_selected"] == 12 + 25 + 1 + 2 + 3


def test_p_values_equal_scipy_fisher_exact(hiring_audit):
    rows = rows_by_group(hiring_audit["tables"]["gender"])
    assert abs(rows["female"]["p_value"] - fisher(12, 40, 25, 50)) < TOL
    race = hiring_audit["tables"]["race"]
    counts = {}
    frame_race = ["A" if i % 5 < 3 else "B" for i in range(100)]
    # recount race by hand from the selection vector of the fixture
    selected = ([True] * 12 + [False] * 28 + [True] * 25 + [False] * 25 + [True]
                + [True, True, False, False] + [True, True, True, False, False])
    for group in ("A", "B"):
        picked = [s for s, g in zip(selected, frame_race, strict=True) if g == group]
        counts[group] = (sum(picked), len(picked))
    race_rows = rows_by_group(race)
    for group in ("A", "B"):
        assert (race_rows[group]["n_selected"], race_rows[group]["n"]) == counts[group]
    high, low = sorted(counts, key=lambda g: counts[g][0] / counts[g][1], reverse=True)
    assert race["reference_group"] == high
    assert abs(race_rows[low]["impact_ratio"]
               - (counts[low][0] / counts[low][1]) / (counts[high][0] / counts[high][1])) < TOL
    assert abs(race_rows[low]["p_value"] - fisher(*counts[low], *counts[high])) < TOL


def test_intersection_is_keyed_by_joined_names(hiring_audit):
    assert list(hiring_audit["tables"]) == ["gender", "race", "gender & race"]
    table = hiring_audit["tables"]["gender & race"]
    rows = rows_by_group(table)
    assert set(rows) == {"female & A", "female & B", "male & A", "male & B", "nonbinary & A"}
    # a row is unknown in the intersection when its gender is: 9 rows
    assert table["unknown_count"] == 9
    assert sum(row["n"] for row in table["rows"]) == 91
    # nonbinary & A: 1 row of 100 -> excluded; the smallest ratio is over the others
    assert rows["nonbinary & A"]["excluded"] is True
    rates = {g: r["n_selected"] / r["n"] for g, r in rows.items() if not r["excluded"]}
    best = max(rates.values())
    for group, rate in rates.items():
        assert abs(rows[group]["impact_ratio"] - rate / best) < TOL
    assert abs(table["min_impact_ratio"] - min(rates.values()) / best) < TOL


def test_min_impact_ratio_is_the_smallest_over_tables(hiring_audit):
    per_table = [t["min_impact_ratio"] for t in hiring_audit["tables"].values()]
    assert hiring_audit["min_impact_ratio"] == min(per_table)
    assert abs(hiring_audit["tables"]["gender"]["min_impact_ratio"] - 0.6) < TOL


def test_min_ratio_without_exclusions_equals_fairlearn_demographic_parity_ratio(hiring,
                                                                             hiring_audit):
    from fairlearn.metrics import demographic_parity_ratio

    frame, selected = hiring
    expected = demographic_parity_ratio(selected, selected, sensitive_features=frame["race"])
    assert abs(hiring_audit["tables"]["race"]["min_impact_ratio"] - expected) < TOL


def test_two_percent_rule_is_strictly_under_and_counts_unknown_rows():
    # 50 rows: "c" has exactly 1 row = 2% of 50 -> not under 2%, kept;
    # with 51 rows (one unknown added) 1/51 < 2% -> excluded.
    groups = ["a"] * 25 + ["b"] * 24 + ["c"]
    selected = [True] * 10 + [False] * 15 + [True] * 12 + [False] * 12 + [False]
    kept = compute_bias_audit(pd.DataFrame({"g": groups}), selected=selected)
    rows = rows_by_group(kept["tables"]["g"])
    assert rows["c"]["excluded"] is False and rows["c"]["impact_ratio"] == 0.0
    assert rows["c"]["flagged"] is True  # zero selected: ratio 0, flagged
    assert abs(rows["c"]["p_value"] - fisher(0, 1, 12, 24)) < TOL
    dropped = compute_bias_audit(pd.DataFrame({"g": groups + ["unknown"]}),
                                 selected=selected + [True])
    rows = rows_by_group(dropped["tables"]["g"])
    assert rows["c"]["excluded"] is True and rows["c"]["impact_ratio"] is None
    assert dropped["tables"]["g"]["unknown_count"] == 1
    # b: 12/24 = 0.5 is the reference; a: 10/25 = 0.4 -> 0.8, exactly at the threshold: not flagged
    assert dropped["tables"]["g"]["reference_group"] == "b"
    assert abs(rows["a"]["impact_ratio"] - 0.8) < TOL and rows["a"]["flagged"] is False


def test_category_with_zero_selected():
    frame = pd.DataFrame({"g": ["x"] * 6 + ["y"] * 4})
    selected = [True, True, False, True, False, False] + [False] * 4
    out = compute_bias_audit(frame, selected=selected, exclude_below=0)
    rows = rows_by_group(out["tables"]["g"])
    assert rows["y"]["rate"] == 0.0 and rows["y"]["impact_ratio"] == 0.0
    assert rows["y"]["flagged"] is True
    assert abs(rows["y"]["p_value"] - fisher(0, 4, 3, 6)) < TOL
    assert out["min_impact_ratio"] == 0.0


def test_nobody_selected_leaves_every_ratio_undefined_and_the_gate_fails():
    frame = pd.DataFrame({"g": ["x"] * 5 + ["y"] * 5})
    out = compute_bias_audit(frame, selected=[False] * 10, exclude_below=0)
    table = out["tables"]["g"]
    assert all(row["impact_ratio"] is None for row in table["rows"])
    assert all(row["flagged"] is False for row in table["rows"])
    assert table["min_impact_ratio"] is None and out["min_impact_ratio"] is None
    assert any("no category was selected" in w for w in out["warnings"])
    gates = evaluate_gates([{"metric": "min_impact_ratio", "min": 0.0}], {"bias_audit": out})
    assert gates[0]["passed"] is False and gates[0]["value"] is None


def test_a_single_compared_category_gives_no_gate_value():
    frame = pd.DataFrame({"g": ["x"] * 99 + ["y"]})  # y: 1% -> excluded, x alone
    out = compute_bias_audit(frame, selected=[True] * 50 + [False] * 50)
    assert out["tables"]["g"]["min_impact_ratio"] is None
    assert any("only one category" in w for w in out["warnings"])
    assert min_impact_ratio(out["tables"]) is None


def test_reference_ties_break_by_size_then_name():
    frame = pd.DataFrame({"g": ["b"] * 4 + ["a"] * 4 + ["c"] * 8})
    selected = [True, True, False, False] * 2 + [True] * 4 + [False] * 4
    out = compute_bias_audit(frame, selected=selected, exclude_below=0)
    assert out["tables"]["g"]["reference_group"] == "c"  # 0.5 for all; c is largest
    out = compute_bias_audit(frame.iloc[:8], selected=selected[:8], exclude_below=0)
    assert out["tables"]["g"]["reference_group"] == "a"  # same rate and size: by name


def test_scoring_mode_counts_only_scores_strictly_above_the_median():
    # scores of 7 rows; median 0.5 (three rows sit on it and do not count as above)
    scores = [0.1, 0.5, 0.5, 0.9, 0.5, 0.7, 0.2]
    groups = ["f", "f", "f", "f", "m", "m", "m"]
    out = compute_bias_audit(pd.DataFrame({"g": groups}), scores=scores, mode="scoring",
                             exclude_below=0)
    assert out["median_score"] == 0.5 and out["mode"] == "scoring"
    rows = rows_by_group(out["tables"]["g"])
    # f: only 0.9 is above -> 1/4; m: only 0.7 -> 1/3 (reference)
    assert (rows["f"]["n_selected"], rows["m"]["n_selected"]) == (1, 1)
    assert out["tables"]["g"]["reference_group"] == "m"
    assert abs(rows["f"]["impact_ratio"] - (1 / 4) / (1 / 3)) < TOL
    assert abs(rows["f"]["p_value"] - fisher(1, 4, 1, 3)) < TOL


def test_scoring_median_is_over_the_full_sample_unknowns_included():
    # without the two unknown rows the median would be 0.4; with them it is 0.6
    scores = [0.2, 0.4, 0.6, 0.8, 0.9, 0.95]
    groups = ["f", "f", "m", "m", None, "unknown"]
    out = compute_bias_audit(pd.DataFrame({"g": groups}), scores=scores, mode="scoring",
                             exclude_below=0)
    assert abs(out["median_score"] - 0.7) < TOL
    rows = rows_by_group(out["tables"]["g"])
    assert rows["f"]["n_selected"] == 0 and rows["m"]["n_selected"] == 1
    assert out["tables"]["g"]["unknown_count"] == 2
    assert out["tables"]["g"]["unknown_selected"] == 2


def test_scoring_without_scores_and_bad_settings_are_data_errors():
    frame = pd.DataFrame({"g": ["a", "b"]})
    with pytest.raises(DataError, match="scoring needs a favourable-outcome score"):
        compute_bias_audit(frame, selected=[True, False], mode="scoring")
    with pytest.raises(DataError, match="exclude_below"):
        compute_bias_audit(frame, selected=[True, False], exclude_below=0.5)
    with pytest.raises(DataError, match="finite"):
        compute_bias_audit(frame, scores=[0.1, float("nan")], mode="scoring")
    with pytest.raises(DataError, match="has 3 rows"):
        compute_bias_audit(frame, selected=[True, False, True])


# --------------------------------------------------------------------- spec + gate
def spec_dict(**extra) -> dict:
    spec = {
        "name": "ba",
        "prompt": {"path": "p"},
        "data": {"path": "d.csv", "sensitive_features": ["gender", "race"]},
        "bias_audit": {"categories": ["gender", "race"]},
    }
    spec.update(extra)
    return spec


def test_spec_defaults_and_yaml_dates():
    raw = yaml.safe_load(
        "audit_info: {date: 2026-11-28, distribution_date: 2026-01-05T10:00:00, "
        "data_source: '<b>ATS</b> export'}"
    )
    spec = parse_spec(spec_dict(**raw))
    assert spec.bias_audit.mode.value == "selection"
    assert (spec.bias_audit.exclude_below, spec.bias_audit.threshold) == (0.02, 0.8)
    assert spec.bias_audit.unknown_values == ["unknown"]
    assert spec.audit_info.date == "2026-11-28"
    assert spec.audit_info.distribution_date == "2026-01-05T10:00:00"
    assert spec.to_dict()["audit_info"]["data_source"] == "<b>ATS</b> export"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bias_audit": {"categories": ["age"]}},
         "bias_audit.categories: 'age' is not a sensitive feature; allowed: gender, race"),
        ({"bias_audit": {"categories": ["gender"], "exclude_below": 0.5}},
         "bias_audit.exclude_below: 0.5 is not allowed; allowed: 0 <= exclude_below < 0.5"),
        ({"bias_audit": {"categories": ["gender"], "exclude_below": -0.01}},
         "bias_audit.exclude_below: -0.01 is not allowed"),
        ({"bias_audit": {"categories": ["gender"], "threshold": 0}},
         "bias_audit.threshold: 0.0 is not allowed"),
        ({"bias_audit": {"categories": ["gender"], "mode": "ranking"}},
         "bias_audit.mode"),
        ({"bias_audit": {"categories": ["gender"], "treshold": 0.8}},
         "unknown key 'bias_audit.treshold' (did you mean 'threshold'?)"),
        ({"audit_info": {"dat": "2026-11-28"}},
         "unknown key 'audit_info.dat' (did you mean 'date'?)"),
        ({"bias_audit": None, "gates": [{"metric": "min_impact_ratio", "min": 0.8}]},
         "gates.0: min_impact_ratio needs a 'bias_audit' section"),
        ({"gates": [{"metric": "min_impact_ratio", "min": 0.8, "feature": "gender"}]},
         "'feature' applies only to group disparities"),
    ],
)
def test_bad_spec_is_one_line_spec_error(change, message):
    raw = spec_dict(**change)
    if raw.get("bias_audit") is None:
        raw.pop("bias_audit")
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, source="audit.yaml")
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith("audit.yaml: ")


def test_cli_validate_exits_2_on_a_category_that_is_not_sensitive(tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(spec_dict(bias_audit={"categories": ["gendr"]})))
    outcome = CliRunner().invoke(app, ["validate", str(path)], catch_exceptions=False)
    assert outcome.exit_code == 2
    assert outcome.stderr == (
        f"error: {path}: bias_audit.categories: 'gendr' is not a sensitive feature "
        "(did you mean 'gender'?); allowed: gender, race\n"
    )


def test_gate_reads_min_impact_ratio(hiring_audit):
    result = {"bias_audit": hiring_audit}
    passing, failing = evaluate_gates(
        [{"metric": "min_impact_ratio", "min": 0.5}, {"metric": "min_impact_ratio", "min": 0.8}],
        result,
    )
    assert passing["passed"] is True and failing["passed"] is False
    assert passing["value"] == hiring_audit["min_impact_ratio"]
    assert evaluate_gates([{"metric": "min_impact_ratio", "min": 0.1}], {})[0]["passed"] is False


# ------------------------------------------------------------------------- data
def test_missing_sensitive_values_allowed_only_for_bias_audit_columns():
    frame = pd.DataFrame({"gender": ["f", None, "m", ""], "race": ["a", "b", "a", "b"]})
    with pytest.raises(DataError, match="missing value at row 2"):
        check_sensitive_columns(frame, ["gender", "race"], source="d.csv")
    check_sensitive_columns(frame, ["gender", "race"], source="d.csv", allow_missing=["gender"])
    clash = frame.assign(gender=["f", None, MISSING_GROUP, "m"])
    with pytest.raises(DataError, match="also the value"):
        check_sensitive_columns(clash, ["gender"], source="d.csv", allow_missing=["gender"])
    empty = frame.assign(gender=[None, "", " ", None])
    with pytest.raises(DataError, match="no value in any row"):
        check_sensitive_columns(empty, ["gender"], source="d.csv", allow_missing=["gender"])


# ----------------------------------------------------------------------- reports
PAYLOADS = {
    "html": "<script>alert(1)</script>",
    "markdown": "**bold** | [x](http://e)",
    "formula": "=HYPERLINK(\"http://e\")",
    "plus": "+1+1",
    "at": "@SUM(A1)",
    "minus": "-2",
}


@pytest.fixture(scope="module")
def payload_result() -> dict:
    groups = [PAYLOADS[k] for k in ("html", "markdown", "formula", "plus", "at", "minus")]
    frame = pd.DataFrame({"group <i>": [g for g in groups for _ in range(5)]})
    selected = [i % 5 < (1 + i // 5 % 3) for i in range(30)]
    audit = compute_bias_audit(frame, selected=selected, exclude_below=0)
    return {
        "schema_version": "1",
        "audit": {"name": "payload", "audit_info": {
            "date": "2026-11-28", "data_source": "<img src=x onerror=alert(2)>",
            "test_data_statement": "*made* | by [us](http://e)"}},
        "task": {"positive_label": "accept"},
        "gates": [],
        "passed": True,
        "bias_audit": audit,
    }


def test_html_escapes_category_names_and_audit_info(payload_result):
    page = render_html(payload_result)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "group &lt;i&gt;" in page and "<i>" not in page
    start = page.index('id="bias-audit"')
    assert start < page.index('id="summary"')  # at the top of the report
    assert "Bias audit summary" in page and "2026-11-28" in page


def test_markdown_escapes_category_names_and_audit_info(payload_result):
    text = render_markdown(payload_result)
    assert "### Bias audit summary" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    assert r"\*\*bold\*\* \| \[x\](http://e)" in text
    assert r"\*made\* \| by \[us\](http://e)" in text
    table_lines = [line for line in text.splitlines() if line.startswith("| ")]
    # every table row keeps its column count: no payload adds a cell
    widths = {len(re.split(r"(?<!\\)\|", line)) for line in table_lines}
    assert widths == {4, 14}  # 12 columns: 7 four-fifths + 5 standard-deviation analysis


def test_csv_neutralises_formulas_and_round_trips(payload_result):
    text = bias_audit_csv(payload_result)
    rows = list(csv.DictReader(io.StringIO(text)))
    groups = [row["group"] for row in rows if row["kind"] == "category"]
    expected = {"'" + v if v[0] in "=+-@" else v for v in PAYLOADS.values()}
    assert set(groups) == expected and len(groups) == len(expected)
    # only numbers written by the audit (negative z-scores) may start with "-"
    numeric = {"z_score"}
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows
                   for column, cell in row.items() if column not in numeric)
    assert all(float(row["z_score"]) < 0 for row in rows if row["z_score"].startswith("-"))
    table = payload_result["bias_audit"]["tables"]["group <i>"]
    for row, source in zip([r for r in rows if r["kind"] == "category"], table["rows"],
                           strict=True):
        assert int(row["n"]) == source["n"] and int(row["n_selected"]) == source["n_selected"]
        assert float(row["rate"]) == source["rate"]
        if source["impact_ratio"] is None:
            assert row["impact_ratio"] == ""
        else:
            assert float(row["impact_ratio"]) == source["impact_ratio"]
        if source["p_value"] is not None:
            assert math.isclose(float(row["p_value"]), source["p_value"], rel_tol=0, abs_tol=0)
    unknown = [r for r in rows if r["kind"] == "unknown"]
    assert len(unknown) == 1 and unknown[0]["n"] == "0"


def test_write_reports_adds_the_csv_only_with_a_bias_audit(payload_result, tmp_path):
    paths = write_reports(payload_result, tmp_path / "with", name="audit")
    assert paths["bias_audit"].name == "audit.bias_audit.csv"
    assert paths["bias_audit"].read_text(encoding="utf-8") == bias_audit_csv(payload_result)
    plain = {k: v for k, v in payload_result.items() if k != "bias_audit"}
    paths = write_reports(plain, tmp_path / "without", name="audit")
    assert "bias_audit" not in paths
    assert not (tmp_path / "without" / "audit.bias_audit.csv").exists()


def test_tables_keep_their_order_after_a_json_round_trip(hiring_audit):
    import json

    result = {"audit": {"name": "h"}, "gates": [], "passed": True, "bias_audit": hiring_audit}
    loaded = json.loads(json.dumps(result, sort_keys=True))
    assert list(loaded["bias_audit"]["tables"]) == ["gender", "gender & race", "race"]
    text = render_markdown(loaded)
    assert text.index("**gender**") < text.index("**race**") < text.index(
        "**gender &amp; race**")
    lines = bias_audit_csv(loaded).splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == (
        ["gender"] * 4 + ["race"] * 3 + ["gender & race"] * 6)


def test_report_explains_excluded_unknown_and_undefined_in_words(hiring_audit):
    result = {"audit": {"name": "h"}, "gates": [], "passed": True, "bias_audit": hiring_audit}
    text = render_markdown(result)
    assert "nonbinary: left out of impact ratios: 1 of 100 rows (1.00%) is under 2.00%" in text
    assert "9 rows have an unknown gender (missing or 'unknown')" in text
    assert "Not stated in this audit's audit\\_info" in text
    result["audit"]["audit_info"] = {"date": "2026-11-28", "data_source": "s",
                                     "distribution_date": "2026-01-01", "data_kind": "Test data"}
    text = render_markdown(result)
    assert ("Not stated in this audit's audit\\_info: why test data was used and how it was "
            "made.") in text
    none = compute_bias_audit(pd.DataFrame({"g": ["x", "y"] * 3}), selected=[False] * 6,
                              exclude_below=0)
    page = render_html({"audit": {"name": "n"}, "gates": [], "passed": True, "bias_audit": none})
    assert "undefined (no impact ratio can be computed for at least one table)" in page
    assert "no category was selected" in page


# ----------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert_dir) -> dict:
    from promptaudit.pipeline import run_audit
    from promptaudit.spec import load_spec

    folder = tmp_path_factory.mktemp("bias-audit")
    prompt = helpers.write_prompt(folder / "prompt.safetensors")
    frame = helpers.eval_frame()
    model = helpers.make_seqcls_model(tiny_bert_dir, folder / "model", prompt=prompt,
                                      texts=frame["sentence"].tolist())
    frame.loc[[5, 9], "race"] = ""  # missing: unknown in the bias audit
    frame.loc[11, "race"] = "unknown"
    helpers.write_csv(folder / "eval.csv", frame)
    spec = helpers.base_spec(model=str(model), prompt=str(prompt), data="eval.csv")
    spec["attribution"]["enabled"] = False
    spec["projection"]["enabled"] = False
    spec["fairness"]["bootstrap"] = 0
    spec["bias_audit"] = {"categories": ["gender", "race"], "exclude_below": 0.05}
    spec["audit_info"] = {"date": "2026-11-28", "data_source": "tiny test set"}
    spec["gates"] = [{"metric": "min_impact_ratio", "min": 0.0}]
    path = helpers.write_spec(folder / "audit.yaml", spec)
    path.write_text(path.read_text().replace("date: '2026-11-28'", "date: 2026-11-28"))
    result = run_audit(load_spec(path), command="pytest")
    return {"result": result, "frame": frame}


def test_pipeline_bias_audit_matches_independent_predictions(tiny_run):
    result, frame = tiny_run["result"], tiny_run["frame"]
    reference = helpers.recompute(result, frame=frame)
    selected = reference["y_pred"] == 1  # "positive" is the favourable label
    audit = result["bias_audit"]
    race = audit["tables"]["race"]
    assert race["unknown_count"] == 3
    assert race["unknown_selected"] == int(selected[[5, 9, 11]].sum())
    for row in race["rows"]:
        mask = (frame["race"] == row["group"]).to_numpy()
        assert row["n"] == int(mask.sum()) and row["n_selected"] == int(selected[mask].sum())
    assert audit["tables"]["gender & race"]["unknown_count"] == 3
    assert result["gates"][0]["metric"] == "min_impact_ratio"
    assert result["gates"][0]["value"] == audit["min_impact_ratio"]
    assert result["audit"]["audit_info"] == {"date": "2026-11-28", "data_source": "tiny test set"}
    # group fairness keeps the two missing rows as their own group and says so
    groups = result["fairness"]["by_feature"]["race"]["by_group"]
    assert groups[MISSING_GROUP]["count"] == 2 and groups["unknown"]["count"] == 1
    assert any("2 rows have no value for sensitive feature 'race'" in w
               for w in result["fairness"]["warnings"])


def test_an_exact_four_fifths_ratio_is_not_flagged():
    # issue 22: 20/30 against 25/30 is exactly 4/5; the float ratio is 0.7999999999999999
    frame = pd.DataFrame({"group": ["A"] * 30 + ["B"] * 30})
    selected = [True] * 20 + [False] * 10 + [True] * 25 + [False] * 5
    rows = compute_bias_audit(frame, selected=selected)["tables"]["group"]["rows"]
    a = rows[0]
    assert (a["group"], a["impact_ratio"]) == ("A", 0.7999999999999999)
    assert a["flagged"] is False
    # one fewer selected in A (19/30: ratio 0.76) is flagged
    selected[0] = False
    rows = compute_bias_audit(frame, selected=selected)["tables"]["group"]["rows"]
    assert rows[0]["flagged"] is True
