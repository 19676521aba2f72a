"""`compare`: metric-by-metric before/after on hand-made results, and its regression gate."""

from __future__ import annotations

import json

import pytest
from audit_helpers import (
    HAND_MADE_FAIRNESS,
    HAND_MADE_PROVENANCE,
    HAND_MADE_TASK,
    hand_made_counterfactual,
    hand_made_gate,
)
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.compare import compare_results, comparison_html, comparison_markdown
from promptaudit.errors import InputError
from promptaudit.result import AuditResult


def _result(*, accuracy, dp_ratio, eod, flip, name="a", prompt="p", passed=True) -> dict:
    return AuditResult(
        audit={"name": name, "spec": {"prompt": {"path": prompt},
                                      "gates": [{"metric": "counterfactual_flip_rate",
                                                 "max": 0.05}]}},
        provenance=HAND_MADE_PROVENANCE,
        task={**HAND_MADE_TASK, "accuracy": accuracy, "balanced_accuracy": None},
        fairness={
            **HAND_MADE_FAIRNESS,
            "disparities": {"demographic_parity_ratio": dp_ratio, "equalized_odds_difference": eod},
            "counterfactual": hand_made_counterfactual(flip, None),
        },
        gates=[hand_made_gate("counterfactual_flip_rate", passed=passed,
                              message="counterfactual_flip_rate: 0.1 <= 0.05")],
        passed=passed,
    ).to_dict()


BEFORE = _result(accuracy=0.80, dp_ratio=0.60, eod=0.20, flip=0.10, name="before", passed=False)


def _row(comparison, metric):
    return next(r for r in comparison["metrics"] if r["metric"] == metric)


def test_changes_are_direction_aware():
    after = _result(accuracy=0.79, dp_ratio=0.85, eod=0.05, flip=0.12, name="after")
    comparison = compare_results(BEFORE, after)
    acc = _row(comparison, "accuracy")
    assert acc["change"] == pytest.approx(-0.01) and acc["worse_by"] == pytest.approx(0.01)
    assert acc["verdict"] == "worse"
    dp = _row(comparison, "demographic_parity_ratio")  # higher is better
    assert dp["verdict"] == "improved" and dp["worse_by"] == pytest.approx(-0.25)
    eod = _row(comparison, "equalized_odds_difference")  # lower is better
    assert eod["verdict"] == "improved" and eod["worse_by"] == pytest.approx(-0.15)
    flip = _row(comparison, "counterfactual_flip_rate")
    assert flip["verdict"] == "worse" and flip["worse_by"] == pytest.approx(0.02)
    assert _row(comparison, "balanced_accuracy")["verdict"] == "not comparable"
    assert comparison["passed"] is True and comparison["max_regression"] is None


def test_regression_gate_threshold():
    after = _result(accuracy=0.79, dp_ratio=0.85, eod=0.05, flip=0.12, name="after")
    assert compare_results(BEFORE, after, max_regression=0.05)["passed"] is True
    strict = compare_results(BEFORE, after, max_regression=0.015)
    assert strict["regressed"] == ["counterfactual_flip_rate"]  # worse by 0.02; accuracy by 0.01
    assert strict["passed"] is False
    assert compare_results(BEFORE, BEFORE, max_regression=0.0)["passed"] is True


def test_undefined_after_fails_closed():
    after = _result(accuracy=0.80, dp_ratio=None, eod=0.20, flip=0.10, name="after")
    comparison = compare_results(BEFORE, after, max_regression=0.5)
    assert _row(comparison, "demographic_parity_ratio")["verdict"] == "undefined after"
    assert comparison["regressed"] == ["demographic_parity_ratio"]
    with pytest.raises(InputError, match="max-regression"):
        compare_results(BEFORE, after, max_regression=-1)


def test_renderings_escape_user_text():
    evil = _result(accuracy=0.8, dp_ratio=0.6, eod=0.2, flip=0.1, name="x",
                   prompt="<script>alert(1)</script>|*")
    comparison = compare_results(BEFORE, evil)
    page = comparison_html(comparison)
    assert "<script>" not in page and "&lt;script&gt;" in page
    markdown = comparison_markdown(comparison)
    assert "<script>" not in markdown and "\\|" in markdown
    assert "| accuracy | higher | 0.8000 | 0.8000 | point-only | +0.0000 | unchanged |" in markdown


def test_gate_cells_say_inconclusive_and_how_it_counted():
    gates = [
        hand_made_gate("demographic_parity_ratio", passed=True, message="", value=0.86,
                       status="inconclusive"),
        hand_made_gate("counterfactual_flip_rate", passed=False, message="", value=0.12,
                       status="fail", op="<=", threshold=0.05),
    ]
    after = {**_result(accuracy=0.8, dp_ratio=0.86, eod=0.2, flip=0.12, name="after"),
             "gates": gates}
    markdown = comparison_markdown(compare_results(BEFORE, after))
    assert "| INCONCLUSIVE, counted as pass (0.8600) |" in markdown
    assert "| - | FAIL (0.1200) |" in markdown
    assert "| FAIL (undefined) | - |" in markdown  # BEFORE's entry has no status (early results)


def _write(path, result):
    path.write_text(json.dumps(result))
    return path


def test_cli_compare_writes_files_and_gates(tmp_path):
    before = _write(tmp_path / "before.json", BEFORE)
    after = _write(tmp_path / "after.json",
                   _result(accuracy=0.70, dp_ratio=0.85, eod=0.05, flip=0.02, name="after"))
    runner = CliRunner()
    ok = runner.invoke(app, ["compare", str(before), str(after), "--out", str(tmp_path / "cmp")])
    assert ok.exit_code == 0, ok.output
    for name in ("comparison.html", "comparison.md", "comparison.json"):
        assert (tmp_path / "cmp" / name).is_file()
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert _row(saved, "accuracy")["after"] == pytest.approx(0.70)
    gated = runner.invoke(app, ["compare", str(before), str(after), "--max-regression", "0.05"])
    assert gated.exit_code == 1 and "regressed: accuracy" in gated.output


def test_cli_compare_rejects_an_edited_result(tmp_path):
    edited = dict(BEFORE, passed=True)
    before = _write(tmp_path / "before.json", BEFORE)
    after = _write(tmp_path / "after.json", edited)
    outcome = CliRunner().invoke(app, ["compare", str(before), str(after)])
    assert outcome.exit_code == 2 and "integrity hash" in outcome.output
