"""Like for like (`comparability.result_differences`), `compare --allow-different` and the
interval-aware regression rule, on hand-made results whose figures are known."""

from __future__ import annotations

import copy
import json

import pytest
from audit_helpers import HAND_MADE_FAIRNESS, HAND_MADE_PROVENANCE, HAND_MADE_TASK
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.comparability import result_differences
from promptaudit.compare import compare_results, comparison_markdown, regression_status
from promptaudit.errors import InputError
from promptaudit.result import AuditResult

runner = CliRunner()


def _competence(over: float, interval: list[float], baselines: dict) -> dict:
    return {
        "works": True, "measure": "balanced_accuracy", "accuracy": 0.7,
        "accuracy_interval": [0.65, 0.75], "chance_accuracy": 0.5, "baselines": baselines,
        "best_baseline": next(iter(baselines)), "accuracy_over_baseline": over,
        "accuracy_over_baseline_interval": interval, "reason": "",
    }


def _result(*, over=0.044, interval=(0.02, 0.07), baselines=None, sha="a" * 64, n=100,
            labels=("no", "yes"), positive="yes", dp_ratio=0.7, name="r") -> dict:
    provenance = copy.deepcopy(HAND_MADE_PROVENANCE)
    provenance["data"] = {"source": "eval.csv", "sha256": sha}
    task = {**HAND_MADE_TASK, "labels": list(labels), "positive_label": positive,
            "n_examples": n, "accuracy": 0.7, "balanced_accuracy": 0.7, "max_length": 64,
            "accuracy_over_baseline": over,
            "competence": _competence(over, list(interval), baselines or {"init_text": 0.66})}
    fairness = {**HAND_MADE_FAIRNESS, "disparities": {"demographic_parity_ratio": dp_ratio}}
    return AuditResult(
        audit={"name": name, "spec": {"prompt": {"path": name}}},
        provenance=provenance, task=task, fairness=fairness, gates=[], passed=True,
    ).to_dict()


def test_like_for_like_results_have_no_difference():
    assert result_differences(_result(), _result(over=0.01, dp_ratio=0.9, name="other")) == []


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"sha": "b" * 64}, "the evaluation data differ: sha256 " + "a" * 64),
        ({"n": 90}, "the evaluation data differ in size: 100 rows before, 90 after"),
        ({"labels": ("yes", "no")}, "the labels differ: [no, yes] before, [yes, no] after"),
        ({"positive": "no"}, "the positive label differs: yes before, no after"),
        ({"baselines": {"no_prompt": 0.5}},
         "the baselines differ: [init_text] before, [no_prompt] after"),
    ],
)
def test_each_difference_is_one_sentence(changes, sentence):
    found = result_differences(_result(), _result(**changes))
    assert len(found) == 1 and found[0].startswith(sentence), found


def test_features_groups_model_and_max_length_are_checked():
    before, after = _result(), _result()
    after["provenance"]["model"]["reference"] = "other-model"
    after["task"]["max_length"] = 128
    before["fairness"]["sensitive_features"] = ["gender"]
    after["fairness"]["sensitive_features"] = ["gender", "race"]
    found = result_differences(before, after)
    assert "the sensitive features differ: [gender] before, [gender, race] after" in found
    assert "the base model differs: tiny before, other-model after" in found
    assert "max_length differs: 64 before, 128 after" in found
    before["fairness"]["sensitive_features"] = after["fairness"]["sensitive_features"] = ["g"]
    before["fairness"]["by_feature"] = {"g": {"by_group": {"a": {}, "b": {}}}}
    after["fairness"]["by_feature"] = {"g": {"by_group": {"a": {}, "c": {}}}}
    assert "the groups of g differ: [a, b] before, [a, c] after" in result_differences(
        before, after)


def test_compare_of_different_data_exits_2_naming_the_difference(tmp_path):
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(_result()))
    after.write_text(json.dumps(_result(sha="b" * 64, n=90)))
    out = runner.invoke(app, ["compare", str(before), str(after), "--out", str(tmp_path / "c")])
    assert out.exit_code == 2, out.output
    assert "not like for like: the evaluation data differ: sha256" in out.output
    assert "and 1 more difference" in out.output and "--allow-different" in out.output
    assert not (tmp_path / "c").exists()  # nothing written
    out = runner.invoke(app, ["compare", str(before), str(after), "--allow-different"])
    assert out.exit_code == 0, out.output
    assert "warning: not like for like: the evaluation data differ in size" in out.output
    assert "| accuracy † |" in out.output and "Not like for like" in out.output


def test_allow_different_marks_only_the_rows_a_difference_affects():
    """The issue's mitigated adapter: init_text baseline before, no_prompt after."""
    before = _result(over=0.044)
    after = _result(over=0.143, baselines={"no_prompt": 0.5})
    with pytest.raises(InputError, match="the baselines differ"):
        compare_results(before, after)
    comparison = compare_results(before, after, allow_different=True)
    marked = {row["metric"] for row in comparison["metrics"] if row["differences"]}
    assert marked == {"accuracy_over_baseline"}
    assert "| accuracy_over_baseline † |" in comparison_markdown(comparison)


def test_a_regression_inside_the_interval_reads_inconclusive():
    """The issue's biased -> clean: 0.044 -> -0.019 with interval [-0.047, 0.005]."""
    before = _result(over=0.044, interval=(0.02, 0.07))
    after = _result(over=-0.019, interval=(-0.047, 0.005))
    comparison = compare_results(before, after, max_regression=0.05)
    row = next(r for r in comparison["metrics"] if r["metric"] == "accuracy_over_baseline")
    assert row["regression"] == "inconclusive" and row["regressed"] is False
    assert comparison["regressed"] == []
    assert comparison["inconclusive_metrics"] == ["accuracy_over_baseline"]
    assert comparison["passed"] is False  # default policy: inconclusive fails closed
    assert compare_results(before, after, max_regression=0.05, inconclusive="pass")["passed"]
    assert "inconclusive" in comparison_markdown(comparison)
    beyond = _result(over=-0.019, interval=(-0.047, -0.010))
    decided = compare_results(before, beyond, max_regression=0.05)
    assert decided["regressed"] == ["accuracy_over_baseline"] and not decided["passed"]


def test_compare_cli_inconclusive_switch(tmp_path):
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(_result(over=0.044)))
    after.write_text(json.dumps(_result(over=-0.019, interval=(-0.047, 0.005))))
    args = ["compare", str(before), str(after), "--max-regression", "0.05"]
    out = runner.invoke(app, args)
    assert out.exit_code == 1 and "inconclusive" in out.output
    assert runner.invoke(app, [*args, "--inconclusive", "pass"]).exit_code == 0
    bad = runner.invoke(app, [*args, "--inconclusive", "maybe"])
    assert bad.exit_code == 2 and "--inconclusive 'maybe': allowed: fail, pass" in bad.output


@pytest.mark.parametrize(
    ("before", "after", "interval", "direction", "expected"),
    [
        (0.8, 0.79, [0.7, 0.9], "higher", "no"),  # within the tolerance
        (0.8, 0.7, [0.6, 0.78], "higher", "inconclusive"),  # 0.78 >= 0.8 - 0.05
        (0.8, 0.7, [0.6, 0.74], "higher", "regressed"),
        (0.8, 0.7, None, "higher", "regressed"),  # point-only: the point decides
        (0.1, 0.2, [0.14, 0.3], "lower", "inconclusive"),  # 0.14 <= 0.1 + 0.05
        (0.1, 0.2, [0.16, 0.3], "lower", "regressed"),
    ],
)
def test_regression_rule_by_hand(before, after, interval, direction, expected):
    assert regression_status(before, after, interval, direction=direction,
                             max_regression=0.05) == expected
