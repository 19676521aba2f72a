"""Tests for promptaudit.fairness: values checked against fairlearn and by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equal_opportunity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_negative_rate,
    true_positive_rate,
)

from promptaudit.errors import InputError
from promptaudit.fairness import (
    DISPARITY_DIRECTIONS,
    ERR_BOOTSTRAP,
    ERR_COLUMN,
    ERR_CONFIDENCE,
    ERR_EMPTY,
    ERR_LABEL_VALUE,
    ERR_LENGTH,
    ERR_METRIC,
    ERR_MISSING,
    ERR_ONE_GROUP,
    ERR_REFERENCE,
    ERR_REFERENCE_FEATURE,
    ERR_SCORE_VALUE,
    ERR_TUPLE_MISSING,
    GROUP_METRICS,
    compute_counterfactual,
    compute_group_fairness,
)
from promptaudit.stats import min_resamples

FAIRLEARN_DISPARITIES = {
    "demographic_parity_difference": demographic_parity_difference,
    "demographic_parity_ratio": demographic_parity_ratio,
    "equalized_odds_difference": equalized_odds_difference,
    "equalized_odds_ratio": equalized_odds_ratio,
    "equal_opportunity_difference": equal_opportunity_difference,
    "equal_opportunity_ratio": equal_opportunity_ratio,
}
FAIRLEARN_METRICS = {
    "selection_rate": selection_rate,
    "accuracy": skm.accuracy_score,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
    "true_negative_rate": true_negative_rate,
    "false_negative_rate": false_negative_rate,
}


@pytest.fixture(scope="module")
def data():
    """400 rows, gender (2 groups) and race (3 groups), with a real gender gap."""
    rng = np.random.default_rng(7)
    n = 400
    gender = rng.choice(["female", "male"], n)
    race = rng.choice(["Asian", "Black", "White"], n)
    y_true = rng.integers(0, 2, n)
    p_accept = np.where(gender == "male", 0.65, 0.35)
    y_pred = (rng.random(n) < p_accept).astype(int)
    y_score = np.clip(0.5 * y_pred + 0.5 * rng.random(n), 0, 1)
    frame = pd.DataFrame({"gender": gender, "race": race})
    return {"y_true": y_true, "y_pred": y_pred, "y_score": y_score, "sf": frame}


@pytest.fixture(scope="module")
def result(data):
    return compute_group_fairness(
        data["y_pred"],
        sensitive_features=data["sf"],
        y_true=data["y_true"],
        y_score=data["y_score"],
        bootstrap=1200,
        seed=3,
    )


def _resampled_rates(codes, n_groups, y_pred, bootstrap, seed):
    """Selection rate per group in each resample, the documented way, by hand."""
    rng = np.random.default_rng(seed)
    out = np.full((bootstrap, n_groups), np.nan)
    for b in range(bootstrap):
        idx = rng.integers(0, len(y_pred), size=len(y_pred))
        for g in range(n_groups):
            rows = idx[codes[idx] == g]
            if len(rows):
                out[b, g] = y_pred[rows].mean()
    return out


# ------------------------------------------------------------------ group metrics


def test_group_metrics_match_fairlearn_metric_frame(data, result):
    for feature in ("gender", "race"):
        frame = MetricFrame(
            metrics=FAIRLEARN_METRICS,
            y_true=data["y_true"],
            y_pred=data["y_pred"],
            sensitive_features=data["sf"][feature],
        )
        entry = result["by_feature"][feature]
        assert list(entry["by_group"]) == sorted(data["sf"][feature].unique())
        for group, row in entry["by_group"].items():
            mask = data["sf"][feature].to_numpy() == group
            assert row["count"] == int(mask.sum())
            assert row["small"] is False
            assert row["mean_score"] == pytest.approx(data["y_score"][mask].mean())
            for metric in FAIRLEARN_METRICS:
                assert row[metric] == pytest.approx(frame.by_group.loc[group, metric])


def test_disparities_match_fairlearn_functions(data, result):
    for feature in ("gender", "race"):
        disparities = result["by_feature"][feature]["disparities"]
        for name, function in FAIRLEARN_DISPARITIES.items():
            expected = function(
                data["y_true"], data["y_pred"], sensitive_features=data["sf"][feature]
            )
            assert disparities[name] == pytest.approx(expected), (feature, name)
        accuracy = MetricFrame(
            metrics=skm.accuracy_score,
            y_true=data["y_true"],
            y_pred=data["y_pred"],
            sensitive_features=data["sf"][feature],
        )
        assert disparities["accuracy_difference"] == pytest.approx(accuracy.difference())
    assert set(DISPARITY_DIRECTIONS) == set(result["disparities"])
    assert DISPARITY_DIRECTIONS["demographic_parity_ratio"] == "higher_is_better"
    assert DISPARITY_DIRECTIONS["equalized_odds_difference"] == "lower_is_better"


def test_worst_over_features(result):
    for name, direction in DISPARITY_DIRECTIONS.items():
        features = ("gender", "race", "gender & race")
        assert list(result["by_feature"]) == list(features)  # the intersection is a feature
        values = {f: result["by_feature"][f]["disparities"][name] for f in features}
        pick = min if direction == "higher_is_better" else max
        worst_feature = pick(values, key=values.get)
        assert result["disparities"][name] == values[worst_feature]
        assert result["worst_feature"][name] == worst_feature
        expected_interval = result["by_feature"][worst_feature]["disparity_intervals"][name]
        assert result["disparity_intervals"][name] == expected_interval
    # The built-in gap is by gender; the intersection (finer groups) shows it wider still.
    assert result["worst_feature"]["demographic_parity_difference"] == "gender & race"


def test_intersection_matches_fairlearn_with_two_features(data, result):
    entry = result["intersection"]
    assert entry["feature"] == "gender & race"
    expected_counts = pd.crosstab(data["sf"]["gender"], data["sf"]["race"])
    for group, row in entry["by_group"].items():
        gender, race = group.split(" & ")
        assert row["count"] == expected_counts.loc[gender, race]
    expected = demographic_parity_difference(
        data["y_true"], data["y_pred"], sensitive_features=data["sf"][["gender", "race"]]
    )
    assert entry["disparities"]["demographic_parity_difference"] == pytest.approx(expected)
    expected = equalized_odds_ratio(
        data["y_true"], data["y_pred"], sensitive_features=data["sf"][["gender", "race"]]
    )
    assert entry["disparities"]["equalized_odds_ratio"] == pytest.approx(expected)
    single = compute_group_fairness(
        data["y_pred"], sensitive_features=data["sf"][["gender"]], bootstrap=0
    )
    assert single["intersection"] is None
    no_joint = compute_group_fairness(
        data["y_pred"], sensitive_features=data["sf"], bootstrap=0, intersection=False
    )
    assert no_joint["intersection"] is None


def test_result_shape_and_json(result):
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert set(result) == {
        "sensitive_features",
        "positive_label_index",
        "reference_group",
        "confidence",
        "bootstrap",
        "min_group_size",
        "metrics",
        "by_feature",
        "intersection",
        "disparities",
        "disparity_intervals",
        "worst_feature",
        "undefined",
        "warnings",
    }
    entry = result["by_feature"]["gender"]
    assert set(entry) == {
        "feature",
        "reference_group",
        "by_group",
        "intervals",
        "disparities",
        "disparity_intervals",
        "small_groups",
        "exact_disparities",
        "undefined",
    }
    assert result["reference_group"] == "between_groups"
    assert result["sensitive_features"] == ["gender", "race"]
    assert result["metrics"] == list(GROUP_METRICS)
    assert result["warnings"] == []


# ------------------------------------------------------------------ reference group


def test_named_reference_group_by_hand(data):
    out = compute_group_fairness(
        data["y_pred"],
        sensitive_features=data["sf"],
        y_true=data["y_true"],
        reference_group={"race": "White"},
        bootstrap=0,
    )
    race = out["by_feature"]["race"]
    assert race["reference_group"] == "White"
    assert out["by_feature"]["gender"]["reference_group"] == "between_groups"
    groups = race["by_group"]
    ref = groups["White"]
    others = [groups[g] for g in ("Asian", "Black")]
    sel = [g["selection_rate"] for g in others]
    assert race["disparities"]["demographic_parity_difference"] == pytest.approx(
        max(abs(s - ref["selection_rate"]) for s in sel)
    )
    assert race["disparities"]["demographic_parity_ratio"] == pytest.approx(
        min(min(s / ref["selection_rate"], ref["selection_rate"] / s) for s in sel)
    )
    eod = max(
        abs(g[m] - ref[m]) for g in others for m in ("true_positive_rate", "false_positive_rate")
    )
    assert race["disparities"]["equalized_odds_difference"] == pytest.approx(eod)
    # The intersection needs a reference for every feature; otherwise between groups.
    assert out["intersection"]["reference_group"] == "between_groups"

    both = compute_group_fairness(
        data["y_pred"],
        sensitive_features=data["sf"],
        reference_group={"race": "White", "gender": "male"},
        bootstrap=0,
    )
    assert both["intersection"]["reference_group"] == "male & White"
    assert both["reference_group"] == {"race": "White", "gender": "male"}


def test_reference_group_errors(data):
    with pytest.raises(InputError) as err:
        compute_group_fairness(
            data["y_pred"], sensitive_features=data["sf"], reference_group="male", bootstrap=0
        )
    assert str(err.value) == ERR_REFERENCE.format(
        group="male", column="race", groups="Asian, Black, White"
    )
    with pytest.raises(InputError) as err:
        compute_group_fairness(
            data["y_pred"], sensitive_features=data["sf"], reference_group={"age": "old"}
        )
    assert str(err.value) == ERR_REFERENCE_FEATURE.format(column="age", features="gender, race")


# ------------------------------------------------------------------ bootstrap


def test_group_intervals_by_hand(data, result):
    codes = (
        data["sf"]["race"].to_numpy()[:, None] == np.array(["Asian", "Black", "White"])
    ).argmax(1)
    rates = _resampled_rates(codes, 3, data["y_pred"], bootstrap=1200, seed=3)
    low, high = np.nanquantile(rates, [0.025, 0.975], axis=0)
    intervals = result["by_feature"]["race"]["intervals"]
    for g, group in enumerate(("Asian", "Black", "White")):
        assert intervals[group]["selection_rate"] == pytest.approx([low[g], high[g]])


def test_disparity_interval_by_hand_two_groups(data, result):
    codes = (data["sf"]["gender"].to_numpy() == "male").astype(int)
    rates = _resampled_rates(codes, 2, data["y_pred"], bootstrap=1200, seed=3)
    # Two groups: one signed gap female - male, plain percentile interval, folded.
    low, high = np.nanquantile(rates[:, 0] - rates[:, 1], [0.025, 0.975])
    assert high < 0  # women are selected less in every plausible resample
    got = result["by_feature"]["gender"]["disparity_intervals"]
    assert got["demographic_parity_difference"] == pytest.approx([-high, -low])
    ratio_gap = rates[:, 0] / rates[:, 1] - 1.0  # female rate is the smaller one throughout
    r_low, r_high = np.nanquantile(ratio_gap, [0.025, 0.975])
    assert got["demographic_parity_ratio"] == pytest.approx([1 + r_low, 1 + r_high])


def test_disparity_interval_bonferroni_many_groups(data, result):
    codes = (
        data["sf"]["race"].to_numpy()[:, None] == np.array(["Asian", "Black", "White"])
    ).argmax(1)
    rates = _resampled_rates(codes, 3, data["y_pred"], bootstrap=1200, seed=3)
    pairs = [(0, 1), (0, 2), (1, 2)]
    alpha = 0.05 / len(pairs)
    near, far = [], []
    for i, j in pairs:
        low, high = np.nanquantile(rates[:, i] - rates[:, j], [alpha / 2, 1 - alpha / 2])
        near.append(0.0 if low <= 0 <= high else min(abs(low), abs(high)))
        far.append(max(abs(low), abs(high)))
    got = result["by_feature"]["race"]["disparity_intervals"]["demographic_parity_difference"]
    assert got == pytest.approx([max(near), max(far)])


def test_intervals_contain_point_estimates(result):
    for entry in [*result["by_feature"].values(), result["intersection"]]:
        for group, metrics in entry["intervals"].items():
            for metric, (low, high) in metrics.items():
                value = entry["by_group"][group][metric]
                assert low <= value <= high, (entry["feature"], group, metric)
        for name, interval in entry["disparity_intervals"].items():
            if interval is None:  # too few resamples for this many comparisons
                assert entry["feature"] == "gender & race"
                continue
            low, high = interval
            assert low <= entry["disparities"][name] <= high, (entry["feature"], name)


def test_bootstrap_is_seeded(data):
    kwargs = dict(sensitive_features=data["sf"][["race"]], y_true=data["y_true"], bootstrap=100)
    first = compute_group_fairness(data["y_pred"], seed=3, **kwargs)
    assert compute_group_fairness(data["y_pred"], seed=3, **kwargs) == first
    other = compute_group_fairness(data["y_pred"], seed=4, **kwargs)
    assert other["by_feature"]["race"]["intervals"] != first["by_feature"]["race"]["intervals"]
    assert other["disparities"] == first["disparities"]


def test_bootstrap_zero_disables_intervals(data):
    out = compute_group_fairness(data["y_pred"], sensitive_features=data["sf"], bootstrap=0)
    assert out["disparity_intervals"] is None
    for entry in [*out["by_feature"].values(), out["intersection"]]:
        assert entry["intervals"] is None
        assert entry["disparity_intervals"] is None


def test_confidence_widens_intervals(data):
    kwargs = dict(sensitive_features=data["sf"][["gender"]], bootstrap=300, seed=1)
    narrow = compute_group_fairness(data["y_pred"], confidence=0.5, **kwargs)
    wide = compute_group_fairness(data["y_pred"], confidence=0.99, **kwargs)
    n_low, n_high = narrow["by_feature"]["gender"]["intervals"]["female"]["selection_rate"]
    w_low, w_high = wide["by_feature"]["gender"]["intervals"]["female"]["selection_rate"]
    assert w_low < n_low < n_high < w_high


def test_clean_predictions_interval_includes_zero():
    """Equal selection rates by construction: the DPD interval reaches 0, ratio 1."""
    gender = np.repeat(["female", "male"], 200)
    y_pred = np.tile(np.r_[np.ones(100), np.zeros(100)], 2).astype(int)
    out = compute_group_fairness(
        y_pred, sensitive_features=pd.DataFrame({"gender": gender}), bootstrap=300
    )
    assert out["disparities"]["demographic_parity_difference"] == 0.0
    assert out["disparity_intervals"]["demographic_parity_difference"][0] == 0.0
    assert out["disparity_intervals"]["demographic_parity_ratio"][1] == 1.0


# ------------------------------------------------------------------ label-free, small, undefined


def test_label_free_path(data):
    out = compute_group_fairness(
        data["y_pred"], sensitive_features=data["sf"], y_score=data["y_score"], bootstrap=600
    )
    assert out["metrics"] == ["selection_rate", "mean_score"]
    assert set(out["disparities"]) == {"demographic_parity_difference", "demographic_parity_ratio"}
    row = out["by_feature"]["gender"]["by_group"]["female"]
    assert set(row) == {"count", "small", "selection_rate", "mean_score"}
    assert set(out["by_feature"]["gender"]["intervals"]["female"]) == {
        "selection_rate",
        "mean_score",
    }
    expected = max(
        demographic_parity_difference(data["y_pred"], data["y_pred"], sensitive_features=sf)
        for sf in (data["sf"]["gender"], data["sf"]["race"], data["sf"])
    )
    assert out["disparities"]["demographic_parity_difference"] == pytest.approx(expected)
    assert out["warnings"] == [
        "no true labels were given, so accuracy, true_positive_rate, false_positive_rate, "
        "true_negative_rate, false_negative_rate and the label-based disparities (equalized "
        "odds, equal opportunity, accuracy difference) are not computed"
    ]
    quiet = compute_group_fairness(
        data["y_pred"], sensitive_features=data["sf"], metrics=["selection_rate"], bootstrap=0
    )
    assert quiet["warnings"] == []


def test_small_groups_are_flagged_and_warned():
    rng = np.random.default_rng(0)
    groups = np.array(["a"] * 100 + ["b"] * 100 + ["c"] * 10)
    y_true = rng.integers(0, 2, 210)
    y_pred = rng.integers(0, 2, 210)
    out = compute_group_fairness(
        y_pred,
        sensitive_features=pd.DataFrame({"site": groups}),
        y_true=y_true,
        metrics=["selection_rate", "accuracy"],
        bootstrap=0,
        min_group_size=30,
    )
    entry = out["by_feature"]["site"]
    assert entry["small_groups"] == ["c"]
    assert entry["by_group"]["c"]["small"] is True
    assert entry["by_group"]["a"]["small"] is False
    assert out["warnings"] == [
        "site: groups smaller than min_group_size 30: 'c' (10); demographic_parity_difference, "
        "demographic_parity_ratio, equalized_odds_difference, equalized_odds_ratio, "
        "equal_opportunity_difference, equal_opportunity_ratio, accuracy_difference depend on "
        "them and may be unreliable"
    ]
    # Reported, not dropped: the small group still enters the disparity.
    rates = [entry["by_group"][g]["selection_rate"] for g in "abc"]
    assert entry["disparities"]["demographic_parity_difference"] == pytest.approx(
        max(rates) - min(rates)
    )


def test_undefined_rates_are_null_and_left_out():
    # Group "b" has no positive true labels: TPR is undefined there (fairlearn says 0).
    y_true = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 0, 1, 0, 1, 1, 0, 0])
    sf = pd.DataFrame({"g": ["a", "a", "a", "a", "b", "b", "b", "b"]})
    out = compute_group_fairness(
        y_pred, sensitive_features=sf, y_true=y_true, bootstrap=20, min_group_size=0
    )
    entry = out["by_feature"]["g"]
    assert entry["by_group"]["b"]["true_positive_rate"] is None
    assert entry["by_group"]["b"]["false_negative_rate"] is None
    assert entry["by_group"]["a"]["true_positive_rate"] == 0.5
    assert entry["disparities"]["equal_opportunity_difference"] is None
    # Equalized odds needs both rates: the FPR gap alone (|1/2 - 2/4| = 0) is not parity.
    assert entry["disparities"]["equalized_odds_difference"] is None
    assert entry["undefined"]["equalized_odds_difference"] == (
        "fewer than two groups have a defined true positive rate"
    )
    assert (
        "g: group 'b' has no examples with a positive true label, so its true_positive_rate and "
        "false_negative_rate are undefined (null) and left out of the disparities"
    ) in out["warnings"]
    assert json.dumps(out, allow_nan=False)


def test_all_zero_selection_is_undefined_as_in_fairlearn():
    sf = pd.DataFrame({"g": ["a", "a", "b", "b"]})
    y_true = [1, 0, 1, 0]
    out = compute_group_fairness(
        [0, 0, 0, 0], sensitive_features=sf, y_true=y_true, bootstrap=100
    )
    # fairlearn: 0/0 is NaN, not parity; the difference is defined (0).
    with np.errstate(invalid="ignore", divide="ignore"):
        assert math.isnan(demographic_parity_ratio(y_true, [0] * 4, sensitive_features=sf["g"]))
        assert math.isnan(equal_opportunity_ratio(y_true, [0] * 4, sensitive_features=sf["g"]))
        assert math.isnan(equalized_odds_ratio(y_true, [0] * 4, sensitive_features=sf["g"]))
    assert demographic_parity_difference(y_true, [0] * 4, sensitive_features=sf["g"]) == 0.0
    disparities = out["disparities"]
    assert disparities["demographic_parity_ratio"] is None
    assert disparities["equal_opportunity_ratio"] is None
    assert disparities["equalized_odds_ratio"] is None
    assert disparities["demographic_parity_difference"] == 0.0
    assert out["disparity_intervals"]["demographic_parity_ratio"] is None
    assert out["undefined"]["demographic_parity_ratio"] == (
        "g: every group's selection rate is 0, so the ratio is 0/0"
    )
    assert (
        "g: demographic_parity_ratio is undefined (null): every group's selection rate is 0, "
        "so the ratio is 0/0; it is not parity, and a gate on it fails"
    ) in out["warnings"]
    assert json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("y_pred", [[1, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
def test_degenerate_ratios_match_fairlearn(y_pred):
    """Ratios defined where fairlearn's are finite, undefined (None) where they are NaN."""
    sf = pd.Series(["a", "a", "a", "b", "b", "b"])
    y_true = [1, 0, 0, 1, 0, 0]
    out = compute_group_fairness(
        y_pred, sensitive_features=sf.to_frame("g"), y_true=y_true, bootstrap=0
    )
    for name in ("demographic_parity_ratio", "equal_opportunity_ratio", "equalized_odds_ratio"):
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = FAIRLEARN_DISPARITIES[name](y_true, y_pred, sensitive_features=sf)
        got = out["disparities"][name]
        if math.isnan(expected):
            assert got is None, name
        else:
            assert got == pytest.approx(expected), name


def test_multiclass_positive_label_index(data):
    rng = np.random.default_rng(1)
    y_pred = rng.integers(0, 3, 400)
    y_true = rng.integers(0, 3, 400)
    out = compute_group_fairness(
        y_pred,
        sensitive_features=data["sf"][["race"]],
        y_true=y_true,
        positive_label_index=2,
        bootstrap=0,
    )
    expected = equalized_odds_difference(
        (y_true == 2).astype(int), (y_pred == 2).astype(int), sensitive_features=data["sf"]["race"]
    )
    assert out["by_feature"]["race"]["disparities"]["equalized_odds_difference"] == pytest.approx(
        expected
    )
    assert out["positive_label_index"] == 2


def test_metric_selection(data):
    out = compute_group_fairness(
        data["y_pred"],
        sensitive_features=data["sf"][["race"]],
        y_true=data["y_true"],
        metrics=["accuracy"],
        bootstrap=10,
    )
    assert set(out["by_feature"]["race"]["by_group"]["White"]) == {"count", "small", "accuracy"}
    assert len(out["disparities"]) == len(DISPARITY_DIRECTIONS)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y_pred": []}, ERR_EMPTY),
        (
            {"y_true": [0, 1]},
            ERR_LENGTH.format(name="y_true", got=2, reference="y_pred", expected=4),
        ),
        (
            {"y_score": [0.5] * 5},
            ERR_LENGTH.format(name="y_score", got=5, reference="y_pred", expected=4),
        ),
        (
            {"sensitive_features": pd.DataFrame({"gender": ["f", "m", "f"]})},
            ERR_LENGTH.format(name="sensitive_features", got=3, reference="y_pred", expected=4),
        ),
        ({"features": ["race"]}, ERR_COLUMN.format(column="race", available="gender, age")),
        (
            {"sensitive_features": pd.DataFrame({"gender": ["f", None, "m", "m"]})},
            ERR_MISSING.format(column="gender", row=1),
        ),
        (
            {"sensitive_features": pd.DataFrame({"gender": ["f", "m", np.nan, "m"]})},
            ERR_MISSING.format(column="gender", row=2),
        ),
        (
            {"sensitive_features": pd.DataFrame({"gender": ["f", "m", "m", " "]})},
            ERR_MISSING.format(column="gender", row=3),
        ),
        (
            {"sensitive_features": pd.DataFrame({"gender": ["f", "f", "f", "f"]})},
            ERR_ONE_GROUP.format(column="gender", group="f"),
        ),
        (
            {"metrics": ["selection_rate", "recall"]},
            ERR_METRIC.format(name="recall", allowed=", ".join(GROUP_METRICS)),
        ),
        ({"confidence": 1.0}, ERR_CONFIDENCE.format(value=1.0)),
        ({"bootstrap": -1}, ERR_BOOTSTRAP.format(value=-1)),
        ({"y_pred": [1, 0, 0.5, 1]}, ERR_LABEL_VALUE.format(name="y_pred", value=0.5, row=2)),
        (
            {"y_score": [0.1, 1.2, 0.3, 0.4]},
            ERR_SCORE_VALUE.format(name="y_score", value=1.2, row=1),
        ),
    ],
)
def test_input_errors(kwargs, message):
    arguments = {
        "y_pred": [1, 0, 1, 1],
        "sensitive_features": pd.DataFrame({"gender": ["f", "m", "f", "m"], "age": list("yoyo")}),
        "bootstrap": 0,
    }
    arguments.update(kwargs)
    y_pred = arguments.pop("y_pred")
    with pytest.raises(InputError) as err:
        compute_group_fairness(y_pred, **arguments)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ counterfactual


def test_counterfactual_definitions_by_hand():
    # Tuple 0: original (male) + female + nonbinary variant; tuple 1: original (female)
    # + male; tuple 2 is a singleton and is ignored.
    tuple_ids = [0, 0, 0, 1, 1, 2]
    y_pred = [1, 0, 1, 1, 1, 0]
    y_score = [0.9, 0.3, 0.7, 0.6, 0.8, 0.1]
    groups = ["male", "female", "nonbinary", "female", "male", "male"]
    out = compute_counterfactual(tuple_ids, y_pred, y_score, groups=groups)
    assert out["n_tuples"] == 2
    assert out["flip_rate"] == 0.5  # tuple 0 flips, tuple 1 does not
    assert out["mean_abs_delta"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.6)) / 2)
    assert out["by_group"] == {
        "female": {"flip_rate": 1.0, "mean_abs_delta": pytest.approx(0.6), "count": 1},
        "male": {"flip_rate": 0.0, "mean_abs_delta": pytest.approx(0.2), "count": 1},
        "nonbinary": {"flip_rate": 0.0, "mean_abs_delta": pytest.approx(0.2), "count": 1},
    }


def test_counterfactual_reference_is_first_row_in_input_order():
    # Tuple "b" starts at row 1 even though its rows are interleaved with "a".
    out = compute_counterfactual(
        ["a", "b", "a", "b"], [1, 0, 0, 0], [0.8, 0.2, 0.4, 0.5], groups=["x", "x", "y", "y"]
    )
    assert out["by_group"]["y"]["count"] == 2
    assert out["by_group"]["y"]["flip_rate"] == 0.5
    assert out["by_group"]["y"]["mean_abs_delta"] == pytest.approx((0.4 + 0.3) / 2)
    assert "x" not in out["by_group"]


def test_counterfactual_without_scores_or_tuples():
    out = compute_counterfactual([0, 0, 1, 1], [1, 1, 0, 1], None)
    assert out == {"flip_rate": 0.5, "mean_abs_delta": None, "n_tuples": 2, "by_group": {},
                   "flip_rate_interval": None, "confidence": 0.95, "warnings": []}
    none = compute_counterfactual([0, 1, 2], [1, 0, 1], [0.5, 0.5, 0.5])
    assert none == {"flip_rate": None, "mean_abs_delta": None, "n_tuples": 0, "by_group": {},
                    "flip_rate_interval": None, "confidence": 0.95, "warnings": []}
    assert json.dumps(none, allow_nan=False)


def test_counterfactual_errors():
    with pytest.raises(InputError) as err:
        compute_counterfactual([0, 0], [1, 0, 1], None)
    assert str(err.value) == ERR_LENGTH.format(
        name="tuple_ids", got=2, reference="y_pred", expected=3
    )
    with pytest.raises(InputError) as err:
        compute_counterfactual([0, None, 1], [1, 0, 1], None)
    assert str(err.value) == ERR_TUPLE_MISSING.format(row=1)


# ------------------------------------------------------------------ detection without a model


def _bag_of_words_predictions(train, evaluate):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = CountVectorizer(token_pattern=r"(?u)\b\w+\b", binary=True)
    features = vectorizer.fit_transform(train["text"])
    model = LogisticRegression(solver="liblinear").fit(features, train["label"] == "accept")
    return model.predict(vectorizer.transform(evaluate["text"])).astype(int)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_label_bias_is_detected(seed):
    """A classifier fit on biased labels shows a DPD interval excluding 0; a clean one does not."""
    from promptaudit.corpora import load_builtin_table

    evaluate = load_builtin_table("screening", seed=seed)
    y_true = (evaluate["label"] == "accept").astype(int)
    intervals = {}
    for name in ("screening-train", "screening-train-biased"):
        y_pred = _bag_of_words_predictions(load_builtin_table(name, seed=seed), evaluate)
        out = compute_group_fairness(
            y_pred,
            sensitive_features=evaluate[["gender", "race"]],
            y_true=y_true,
            bootstrap=1000,
            intersection=False,
            seed=seed,
        )
        gender = out["by_feature"]["gender"]
        intervals[name] = gender["disparity_intervals"]["demographic_parity_difference"]
        if name == "screening-train-biased":
            rates = {g: v["selection_rate"] for g, v in gender["by_group"].items()}
            assert rates["female"] < rates["male"]
        # Race was never biased: its interval reaches 0 either way.
        assert (
            out["by_feature"]["race"]["disparity_intervals"]["demographic_parity_difference"][0]
            == 0.0
        )
    assert intervals["screening-train"][0] == 0.0
    assert intervals["screening-train-biased"][0] > 0.0
    assert not math.isnan(intervals["screening-train-biased"][1])


# ------------------------------------------------------------ intersection identity, intervals


def test_intersection_groups_stay_distinct_whatever_their_names():
    # gender "a & b" with race "c" and gender "a" with race "b & c" both read "a & b & c".
    sf = pd.DataFrame({"gender": ["a & b", "a & b", "a", "a", "a", "a & b"],
                       "race": ["c", "c", "b & c", "b & c", "c", "b & c"]})
    y_pred = np.array([1, 1, 0, 0, 1, 0])
    out = compute_group_fairness(y_pred, sensitive_features=sf, bootstrap=0, min_group_size=0)
    joint = out["by_feature"]["gender & race"]
    assert joint is out["intersection"]
    assert len(joint["by_group"]) == 4  # four distinct (gender, race) pairs
    parts = {tuple(v.values()): name for name, v in joint["group_values"].items()}
    first, second = parts[("a & b", "c")], parts[("a", "b & c")]
    assert first != second
    assert joint["by_group"][first]["count"] == 2 and joint["by_group"][second]["count"] == 2
    assert joint["by_group"][first]["selection_rate"] == 1.0
    assert joint["by_group"][second]["selection_rate"] == 0.0
    assert parts[("a", "c")] == "a & c"  # names that cannot collide stay plain
    # fairlearn on the two columns (its own tuple identity) agrees
    expected = demographic_parity_difference(y_pred, y_pred, sensitive_features=sf)
    assert joint["disparities"]["demographic_parity_difference"] == pytest.approx(expected)


def test_too_few_resamples_give_no_interval_and_say_so(data):
    one = compute_group_fairness(
        data["y_pred"], sensitive_features=data["sf"][["gender"]], bootstrap=1
    )
    entry = one["by_feature"]["gender"]
    assert entry["intervals"] is None and entry["disparity_intervals"] is None
    assert one["disparity_intervals"] is None or all(
        v is None for v in one["disparity_intervals"].values())
    assert any("bootstrap 1 is too few resamples for 95% intervals: at least 40" in w
               for w in one["warnings"])
    assert min_resamples(0.95) == 40 and min_resamples(0.95, 3) == 120
    enough = compute_group_fairness(
        data["y_pred"], sensitive_features=data["sf"][["gender"]], bootstrap=40
    )
    low, high = enough["disparity_intervals"]["demographic_parity_difference"]
    assert low <= enough["disparities"]["demographic_parity_difference"] <= high


def test_flip_rate_interval_resamples_tuples():
    rng = np.random.default_rng(2)
    n_tuples = 150
    ids = np.repeat(np.arange(n_tuples), 2)
    y_pred = rng.integers(0, 2, 2 * n_tuples)
    out = compute_counterfactual(ids, y_pred, bootstrap=400, confidence=0.9, seed=7)
    flips = (y_pred[0::2] != y_pred[1::2]).astype(float)
    assert out["flip_rate"] == pytest.approx(flips.mean())
    draws = np.random.default_rng(7)
    means = [flips[draws.integers(0, n_tuples, size=n_tuples)].mean() for _ in range(400)]
    assert out["flip_rate_interval"] == pytest.approx(
        list(np.quantile(means, [0.05, 0.95])), abs=1e-12)
    # scipy's percentile bootstrap of the mean over tuples agrees up to Monte Carlo error
    from scipy.stats import bootstrap

    scipy_ci = bootstrap((flips,), np.mean, confidence_level=0.9, n_resamples=4000,
                         method="percentile", random_state=0).confidence_interval
    assert out["flip_rate_interval"][0] == pytest.approx(scipy_ci.low, abs=0.02)
    assert out["flip_rate_interval"][1] == pytest.approx(scipy_ci.high, abs=0.02)
    assert compute_counterfactual(ids, y_pred)["flip_rate_interval"] is None  # bootstrap 0
    few = compute_counterfactual(ids, y_pred, bootstrap=3)
    assert few["flip_rate_interval"] is None
    assert "too few resamples" in few["warnings"][0]
