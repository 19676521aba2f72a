"""Gates: thresholds -> verdicts, checked on a hand-made result whose numbers are known."""

from __future__ import annotations

import copy
import math

import pytest

from promptaudit.errors import SpecError
from promptaudit.gates import evaluate_gates, metric_value, rows_to_decide
from promptaudit.spec import GateSpec

#: A result with two features; ``disparities`` is the worst over them, as the contract says.
RESULT = {
    "task": {"accuracy": 0.75, "balanced_accuracy": 0.7},
    "fairness": {
        "by_feature": {
            "gender": {
                "disparities": {"demographic_parity_ratio": 0.9,
                                "demographic_parity_difference": 0.05,
                                "equalized_odds_difference": 0.12},
                "disparity_intervals": {"demographic_parity_ratio": [0.7, 1.0],
                                        "demographic_parity_difference": [0.0, 0.15],
                                        "equalized_odds_difference": [0.02, 0.3]},
            },
            "race": {
                "disparities": {"demographic_parity_ratio": 0.6,
                                "demographic_parity_difference": 0.25,
                                "equalized_odds_difference": None},
                "disparity_intervals": {"demographic_parity_ratio": [0.4, 0.85],
                                        "demographic_parity_difference": [0.1, 0.4],
                                        "equalized_odds_difference": None},
            },
        },
        "disparities": {"demographic_parity_ratio": 0.6, "demographic_parity_difference": 0.25,
                        "equalized_odds_difference": 0.12, "equal_opportunity_difference": None},
        "disparity_intervals": {"demographic_parity_ratio": [0.4, 0.85],
                                "demographic_parity_difference": [0.1, 0.4],
                                "equalized_odds_difference": [0.02, 0.3]},
        "counterfactual": {"flip_rate": 0.04, "mean_abs_delta": 0.02},
        "bootstrap": 1000,
        "confidence": 0.95,
    },
}


def _point_only(result: dict) -> dict:
    """The same result without uncertainty (bootstrap 0): verdicts on point values."""
    out = copy.deepcopy(result)
    fairness = out["fairness"]
    fairness["bootstrap"] = 0
    fairness["disparity_intervals"] = None
    for block in fairness["by_feature"].values():
        block["disparity_intervals"] = None
    return out


#: RESULT without intervals: gates decide on the point value alone.
POINT_ONLY = _point_only(RESULT)


def one(gate: dict, result: dict = RESULT) -> dict:
    entries = evaluate_gates([gate], result)
    assert len(entries) == 1
    return entries[0]


def test_min_gate_on_the_worst_value():
    entry = one({"metric": "demographic_parity_ratio", "min": 0.8}, POINT_ONLY)
    assert entry == {
        "metric": "demographic_parity_ratio", "feature": None, "op": ">=", "threshold": 0.8,
        "value": 0.6, "bound": "point", "interval": None, "status": "fail", "passed": False,
        "rows_to_decide": None, "rows_unit": None,
        "message": "demographic_parity_ratio (worst over features) = 0.6 (point) FAILS >= 0.8",
    }
    # >= is inclusive
    assert one({"metric": "demographic_parity_ratio", "min": 0.6}, POINT_ONLY)["passed"]


def test_max_gate_on_the_worst_value():
    entry = one({"metric": "demographic_parity_difference", "max": 0.3}, POINT_ONLY)
    assert (entry["op"], entry["value"], entry["passed"]) == ("<=", 0.25, True)
    assert entry["message"] == ("demographic_parity_difference (worst over features) = 0.25 "
                                "(point) passes <= 0.3")
    assert one({"metric": "demographic_parity_difference", "max": 0.25}, POINT_ONLY)["passed"]
    assert not one({"metric": "demographic_parity_difference", "max": 0.2499},
                   POINT_ONLY)["passed"]


def test_min_and_max_make_two_verdicts():
    entries = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.5, "max": 0.55}],
                             POINT_ONLY)
    assert [(e["op"], e["threshold"], e["value"], e["passed"]) for e in entries] == [
        (">=", 0.5, 0.6, True), ("<=", 0.55, 0.6, False)]


def test_feature_gate_reads_that_feature_not_the_worst():
    gender = one({"metric": "demographic_parity_ratio", "min": 0.8, "feature": "gender"},
                 POINT_ONLY)
    race = one({"metric": "demographic_parity_ratio", "min": 0.8, "feature": "race"}, POINT_ONLY)
    assert (gender["value"], gender["passed"]) == (0.9, True)
    assert (race["value"], race["passed"]) == (0.6, False)
    assert gender["message"] == "demographic_parity_ratio for gender = 0.9 (point) passes >= 0.8"


@pytest.mark.parametrize(("gate", "bound", "value", "passed"), [
    # a min gate reads the lower end, a max gate the upper end of the interval
    ({"metric": "demographic_parity_ratio", "min": 0.5}, "lower", 0.4, False),
    ({"metric": "demographic_parity_ratio", "min": 0.4}, "lower", 0.4, True),
    ({"metric": "demographic_parity_difference", "max": 0.3}, "upper", 0.4, False),
    ({"metric": "demographic_parity_difference", "max": 0.4}, "upper", 0.4, True),
    ({"metric": "demographic_parity_ratio", "min": 0.65, "feature": "gender"}, "lower", 0.7, True),
    ({"metric": "equalized_odds_difference", "max": 0.2, "feature": "gender"}, "upper", 0.3, False),
])
def test_use_bound_reads_the_conservative_end(gate, bound, value, passed):
    point = one(gate)
    entry = one({**gate, "use_bound": True})
    assert (entry["bound"], entry["value"], entry["passed"]) == (bound, value, passed)
    assert point["bound"] == "point"


def test_use_bound_with_both_thresholds_reads_each_end():
    entries = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.3, "max": 0.8,
                               "use_bound": True}], RESULT)
    # The most conservative end over all features: gender's upper end 1.0, not the worst
    # feature's (race) 0.85.
    assert [(e["bound"], e["value"], e["passed"]) for e in entries] == [
        ("lower", 0.4, True), ("upper", 1.0, False)]


def test_point_passes_but_bound_fails():
    # gender's ratio is 0.9 (passes 0.8), its interval's lower end 0.7 does not
    gate = {"metric": "demographic_parity_ratio", "min": 0.8, "feature": "gender"}
    assert one(gate, POINT_ONLY)["passed"]
    assert one(gate)["status"] == "inconclusive"
    assert not one({**gate, "use_bound": True})["passed"]


@pytest.mark.parametrize("gate", [
    {"metric": "equalized_odds_difference", "max": 0.5, "feature": "race"},  # value None
    {"metric": "equal_opportunity_difference", "max": 0.5},                   # value None
    {"metric": "equalized_odds_ratio", "min": 0.0},                           # key absent
    {"metric": "demographic_parity_ratio", "min": 0.0, "feature": "age"},     # feature absent
    {"metric": "equalized_odds_difference", "max": 1.0, "feature": "race", "use_bound": True},
])
def test_a_missing_value_fails(gate):
    entry = one(gate)
    assert entry["value"] is None and entry["passed"] is False
    assert "= not computed" in entry["message"] and "FAILS" in entry["message"]


def test_use_bound_without_an_interval_fails_even_if_the_point_passes():
    result = {"fairness": {"disparities": {"demographic_parity_ratio": 0.95},
                           "disparity_intervals": {"demographic_parity_ratio": None}}}
    gate = {"metric": "demographic_parity_ratio", "min": 0.8}
    assert one(gate, result)["passed"]
    entry = one({**gate, "use_bound": True}, result)
    assert (entry["bound"], entry["value"], entry["passed"]) == ("lower", None, False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, [0.5], {}])
def test_non_numbers_count_as_missing(bad):
    result = {"fairness": {"disparities": {"demographic_parity_ratio": bad}}}
    entry = one({"metric": "demographic_parity_ratio", "min": 0.0}, result)
    assert (entry["value"], entry["passed"]) == (None, False)


def test_task_and_counterfactual_metrics():
    accuracy = one({"metric": "accuracy", "min": 0.8})
    assert (accuracy["value"], accuracy["passed"]) == (0.75, False)
    assert accuracy["message"] == (
        "accuracy = 0.75 (point) FAILS >= 0.8 (point-only metric: it has no interval)"
    )
    assert one({"metric": "balanced_accuracy", "min": 0.7}, POINT_ONLY)["passed"]
    flips = one({"metric": "counterfactual_flip_rate", "max": 0.05}, POINT_ONLY)
    assert (flips["value"], flips["passed"]) == (0.04, True)
    assert flips["message"] == "counterfactual_flip_rate = 0.04 (point) passes <= 0.05"
    # With bootstrap on, a passing value whose interval is missing is not proven.
    assert one({"metric": "counterfactual_flip_rate", "max": 0.05})["status"] == "inconclusive"
    delta = one({"metric": "counterfactual_mean_abs_delta", "max": 0.01})
    assert (delta["value"], delta["passed"]) == (0.02, False)
    assert not one({"metric": "counterfactual_flip_rate", "max": 1.0}, {"fairness": {}})["passed"]


def test_metric_value_reads_the_contract_paths():
    assert metric_value(RESULT, "demographic_parity_ratio") == (0.6, [0.4, 0.85])
    assert metric_value(RESULT, "demographic_parity_ratio", feature="gender") == (0.9, [0.7, 1.0])
    assert metric_value(RESULT, "accuracy") == (0.75, None)
    assert metric_value(RESULT, "counterfactual_flip_rate") == (0.04, None)
    assert metric_value({}, "demographic_parity_ratio") == (None, None)


def test_gate_specs_and_dicts_give_the_same_verdicts():
    gates = [{"metric": "demographic_parity_ratio", "min": 0.8},
             {"metric": "equalized_odds_difference", "max": 0.1, "feature": "gender"}]
    assert evaluate_gates(gates, RESULT) == evaluate_gates(
        [GateSpec.model_validate(g) for g in gates], RESULT)
    assert evaluate_gates([], RESULT) == []


@pytest.mark.parametrize(("gate", "expected"), [
    ({"metric": "demographic_parity_ration", "min": 0.8},
     "gates.1.metric: unknown gate metric 'demographic_parity_ration' (did you mean "
     "'demographic_parity_ratio'?)"),
    ({"metric": "accuracy", "mn": 0.8}, "gates.1.mn: Extra inputs are not permitted"),
    ({"metric": "accuracy"}, "gates.1: gate on accuracy: give 'min' or 'max'"),
])
def test_an_invalid_gate_dict_is_a_spec_error_naming_it(gate, expected):
    with pytest.raises(SpecError) as info:
        evaluate_gates([{"metric": "accuracy", "min": 0.5}, gate], RESULT)
    assert str(info.value).startswith(expected)


# ------------------------------------------------------------ three verdict states


@pytest.mark.parametrize(("gate", "status"), [
    # race: 0.6 in [0.4, 0.85]; gender: 0.9 in [0.7, 1.0]
    ({"metric": "demographic_parity_ratio", "min": 0.3}, "pass"),          # every interval clears
    ({"metric": "demographic_parity_ratio", "min": 0.8}, "inconclusive"),  # race straddles
    ({"metric": "demographic_parity_ratio", "min": 0.9}, "fail"),  # 0.6 fails, race hi 0.85 too
    ({"metric": "demographic_parity_ratio", "min": 0.95, "feature": "race"}, "fail"),
    ({"metric": "demographic_parity_ratio", "min": 0.65, "feature": "gender"}, "pass"),
    ({"metric": "demographic_parity_difference", "max": 0.05}, "fail"),    # race lo 0.1 > 0.05
])
def test_status_reads_the_interval(gate, status):
    entry = one(gate)
    assert entry["status"] == status
    assert entry["passed"] is (status == "pass")


def test_inconclusive_policy_decides_passed():
    gate = {"metric": "demographic_parity_ratio", "min": 0.8}
    closed = one(gate)
    opened = evaluate_gates([gate], RESULT, inconclusive="pass")[0]
    assert closed["status"] == opened["status"] == "inconclusive"
    assert (closed["passed"], opened["passed"]) == (False, True)
    assert closed["message"].startswith(
        "demographic_parity_ratio (worst over features) = 0.6 (point) is INCONCLUSIVE "
        "against >= 0.8: 95% intervals straddle it for gender (0.9) [0.7, 1]; "
        "race (0.6) [0.4, 0.85]")
    assert closed["message"].endswith("fails under gate_policy.inconclusive: fail")
    with pytest.raises(SpecError, match="gate_policy.inconclusive: 'maybe' is not allowed"):
        evaluate_gates([gate], RESULT, inconclusive="maybe")


def test_rows_to_decide_by_hand():
    # n' = n ((z + z_power) h / (z |value - threshold|))^2, z = 1.959964 (95%), z_0.8 = 0.841621.
    # Both features straddle 0.8: race 0.6 in [0.4, 0.85] (h = 0.85 - 0.6 on the threshold's
    # side, gap 0.2) and gender 0.9 in [0.7, 1.0] (h = 0.2, gap 0.1); the gate needs both.
    result = copy.deepcopy(RESULT)
    result["task"]["n_examples"] = 400
    entry = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.8}], result)[0]
    z, zp = 1.959963984540054, 0.8416212335729143
    race = math.ceil(400 * ((z + zp) * 0.25 / (z * 0.2)) ** 2)
    gender = math.ceil(400 * ((z + zp) * 0.2 / (z * 0.1)) ** 2)
    assert (race, gender) == (1278, 3270)
    assert entry["rows_to_decide"] == max(race, gender)
    assert entry["rows_unit"] == "rows"
    assert "about 3270 rows would decide it" in entry["message"]
    assert rows_to_decide(0.6, 0.85, 0.8, 400, confidence=0.95) == race
    assert rows_to_decide(0.8, 0.7, 0.8, 100, confidence=0.95) is None


def test_undefined_disparity_fails_saying_why():
    result = {"fairness": {
        "bootstrap": 0,
        "disparities": {"demographic_parity_ratio": None},
        "undefined": {"demographic_parity_ratio":
                      "g: every group's selection rate is 0, so the ratio is 0/0"},
        "by_feature": {}}}
    entry = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.8}], result,
                           inconclusive="pass")[0]
    assert (entry["status"], entry["passed"]) == ("fail", False)
    assert entry["message"] == (
        "demographic_parity_ratio (worst over features) = undefined: g: every group's "
        "selection rate is 0, so the ratio is 0/0 (point) FAILS >= 0.8")


def test_gates_name_the_intersection_and_flip_interval():
    result = copy.deepcopy(RESULT)
    result["fairness"]["by_feature"]["gender & race"] = {
        "disparities": {"demographic_parity_ratio": 0.5},
        "disparity_intervals": {"demographic_parity_ratio": [0.3, 0.7]}}
    result["fairness"]["counterfactual"]["flip_rate_interval"] = [0.01, 0.08]
    joint = one({"metric": "demographic_parity_ratio", "min": 0.8, "feature": "gender & race"},
                result)
    assert (joint["value"], joint["status"]) == (0.5, "fail")
    # use_bound over every feature, the intersection included: lowest lower end 0.3.
    assert one({"metric": "demographic_parity_ratio", "min": 0.2, "use_bound": True},
               result)["value"] == 0.3
    flips = one({"metric": "counterfactual_flip_rate", "max": 0.05, "use_bound": True}, result)
    assert (flips["bound"], flips["value"], flips["passed"]) == ("upper", 0.08, False)
    assert one({"metric": "counterfactual_flip_rate", "max": 0.05}, result)["status"] == (
        "inconclusive")


def test_an_inconclusive_worst_value_gate_names_every_undecided_feature():
    result = copy.deepcopy(RESULT)
    race = result["fairness"]["by_feature"]["race"]
    race["disparities"]["demographic_parity_ratio"] = 0.8
    race["disparity_intervals"]["demographic_parity_ratio"] = [0.5, 0.95]
    result["fairness"]["disparities"]["demographic_parity_ratio"] = 0.8
    result["fairness"]["disparity_intervals"]["demographic_parity_ratio"] = [0.5, 0.95]
    entry = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.75}], result)[0]
    assert entry["status"] == "inconclusive"
    # gender 0.9 in [0.7, 1] and race 0.8 in [0.5, 0.95] both straddle 0.75
    assert ("95% intervals straddle it for gender (0.9) [0.7, 1]; race (0.8) [0.5, 0.95]"
            in entry["message"]), entry["message"]


# ------------------------------------------- issue 22: every feature counts (three-state rule)


def _two_features(metric: str, cohort: tuple, site: tuple) -> dict:
    """A result with ``cohort`` and ``site`` as ``(value, interval)``, the worst as the contract."""
    higher = metric.endswith("ratio")
    worst = min if higher else max
    values = {"cohort": cohort, "site": site}
    name = worst(values, key=lambda k: values[k][0])
    return {
        "task": {"n_examples": 600},
        "fairness": {
            "bootstrap": 1000, "confidence": 0.95,
            "by_feature": {k: {"disparities": {metric: v}, "disparity_intervals": {metric: i}}
                           for k, (v, i) in values.items()},
            "disparities": {metric: values[name][0]},
            "disparity_intervals": {metric: values[name][1]},
        },
    }


@pytest.mark.parametrize("policy", ["fail", "pass"])
def test_a_decisive_failure_is_not_hidden_behind_an_inconclusive_worst_feature(policy):
    # The case: cohort 0.50 in [0.29, 0.77] fails 0.8 outright; site 0.356 in [0, 1]
    # is the worst value but straddles. Old code: INCONCLUSIVE (and exit 0 under pass).
    result = _two_features("demographic_parity_ratio", (0.5, [0.29, 0.77]), (0.356, [0.0, 1.0]))
    entry = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.8}], result,
                           inconclusive=policy)[0]
    assert (entry["status"], entry["passed"], entry["value"]) == ("fail", False, 0.356)
    assert entry["rows_to_decide"] is None
    assert "cohort (0.5) (interval [0.29, 0.77]) fails it decisively" in entry["message"]
    # the same data gated on the feature fails too
    alone = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.8,
                             "feature": "cohort"}], result, inconclusive=policy)[0]
    assert alone["status"] == "fail"


def test_a_max_gate_fails_on_any_decisive_feature():
    # site 0.4 in [0, 0.9] straddles 0.2 and is the worst; cohort 0.3 in [0.25, 0.35] fails.
    result = _two_features("demographic_parity_difference", (0.3, [0.25, 0.35]),
                           (0.4, [0.0, 0.9]))
    entry = evaluate_gates([{"metric": "demographic_parity_difference", "max": 0.2}], result,
                           inconclusive="pass")[0]
    assert (entry["status"], entry["passed"], entry["value"]) == ("fail", False, 0.4)


def test_rows_to_decide_comes_from_the_inconclusive_features_only():
    # cohort passes decisively (0.95 in [0.9, 1]); site straddles: 0.85 in [0.7, 0.95].
    result = _two_features("demographic_parity_ratio", (0.95, [0.9, 1.0]), (0.85, [0.7, 0.95]))
    entry = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.8}], result)[0]
    assert entry["status"] == "inconclusive"
    z, zp = 1.959963984540054, 0.8416212335729143
    assert entry["rows_to_decide"] == math.ceil(600 * ((z + zp) * 0.15 / (z * 0.05)) ** 2)
    # a passing worst value with a decisively failing other feature is impossible for a min
    # gate, but an undefined other feature fails the gate (fail closed)
    result["fairness"]["by_feature"]["cohort"]["disparities"]["demographic_parity_ratio"] = None
    entry = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.8}], result)[0]
    assert entry["status"] == "fail"


def test_use_bound_combines_every_feature_too():
    result = _two_features("demographic_parity_ratio", (0.5, [0.29, 0.77]), (0.356, [0.0, 1.0]))
    entry = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.2,
                             "use_bound": True}], result)[0]
    assert (entry["status"], entry["value"]) == ("fail", 0.0)
    result["fairness"]["by_feature"]["site"]["disparity_intervals"][
        "demographic_parity_ratio"] = None
    entry = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.2,
                             "use_bound": True}], result)[0]
    assert (entry["status"], entry["value"]) == ("fail", None)


# ------------------------------------------- issue 22: an exact 4/5 ratio meets 0.8


def _four_fifths_result() -> dict:
    """Group A 20 of 30 selected, B 25 of 30: every ratio is exactly 4/5."""
    import pandas as pd

    from promptaudit.bias_audit import compute_bias_audit
    from promptaudit.fairness import compute_group_fairness

    frame = pd.DataFrame({"group": ["A"] * 30 + ["B"] * 30})
    selected = [1] * 20 + [0] * 10 + [1] * 25 + [0] * 5
    fairness = compute_group_fairness(selected, sensitive_features=frame, bootstrap=0,
                                      min_group_size=1)
    bias = compute_bias_audit(frame, selected=[bool(x) for x in selected])
    return {"task": {"n_examples": 60}, "fairness": fairness, "bias_audit": bias}


@pytest.mark.parametrize("metric", ["demographic_parity_ratio", "min_impact_ratio"])
def test_an_exact_four_fifths_ratio_passes_a_min_08_gate(metric):
    result = _four_fifths_result()
    value, _ = metric_value(result, metric)
    assert value == (20 / 30) / (25 / 30) == 0.7999999999999999  # the float is under 0.8
    for gate in ({"metric": metric, "min": 0.8},
                 {"metric": metric, "min": 0.8, "feature": "group"}):
        if metric == "min_impact_ratio" and "feature" in gate:
            continue
        entry = evaluate_gates([gate], result)[0]
        assert (entry["status"], entry["passed"]) == ("pass", True), entry["message"]
    # just above 4/5 still fails
    entry = evaluate_gates([{"metric": metric, "min": 0.8000001}], result)[0]
    assert entry["status"] == "fail"


def test_a_hand_edited_value_keeps_its_float_verdict():
    # exact_disparities that do not agree with the float value are not used
    result = _four_fifths_result()
    block = result["fairness"]["by_feature"]["group"]
    block["disparities"]["demographic_parity_ratio"] = 0.7
    assert evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.8}],
                          result)[0]["status"] == "fail"
