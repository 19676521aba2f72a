"""promptaudit.stats against independent implementations.

The bootstrap is checked against ``scipy.stats.bootstrap`` (whose ``batch=1`` draws are
the resamples of :func:`resample_rows`) and against fairlearn's own ``MetricFrame(n_boot=,
ci_quantiles=)`` fed the very rows it resamples; the binomial and ratio intervals
against scipy's ``binomtest`` and ``relative_risk``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from fairlearn.metrics import MetricFrame, selection_rate, true_positive_rate
from scipy import stats as scipy_stats

from promptaudit import stats
from promptaudit.evaluation import assess_competence
from promptaudit.fairness import compute_counterfactual, compute_group_fairness
from promptaudit.stats import (
    block_resampled_means,
    bootstrap_weights,
    clopper_pearson_interval,
    finite_or_none,
    folded_interval,
    katz_interval,
    percentile_interval,
    resample_rows,
    wilson_interval,
)


def scipy_percentile_bootstrap(data, statistic, *, resamples, confidence, seed, **options):
    """``scipy.stats.bootstrap`` (percentile method) drawing one resample per call."""
    return scipy_stats.bootstrap(
        data, statistic, n_resamples=resamples, batch=1, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed), **options)


# ------------------------------------------------------------------ the resamples
def test_resample_rows_are_the_resamples_of_scipy_bootstrap():
    x = np.random.default_rng(1).normal(size=37)  # odd n: a draw size that matters
    means = np.array([x[rows].mean() for rows in resample_rows(5, len(x), 300)])
    reference = scipy_percentile_bootstrap((x,), np.mean, resamples=300, confidence=0.9, seed=5)
    np.testing.assert_allclose(means, reference.bootstrap_distribution, rtol=1e-12)
    low, high = percentile_interval(means, 0.9)
    ci = reference.confidence_interval
    assert [low, high] == pytest.approx([ci.low, ci.high], rel=1e-12)


def test_bootstrap_weights_gives_a_statistic_the_same_resamples_in_any_chunk():
    x = np.random.default_rng(2).random(41)
    reference = scipy_percentile_bootstrap((x,), np.mean, resamples=250, confidence=0.95, seed=3)
    weighted_mean = lambda weights: weights @ x / len(x)  # noqa: E731
    whole = bootstrap_weights(weighted_mean, len(x), 250, seed=3)
    chunked = bootstrap_weights(weighted_mean, len(x), 250, seed=3, chunk_entries=7 * len(x))
    np.testing.assert_allclose(whole, chunked, rtol=1e-13)  # the BLAS sums by block
    np.testing.assert_allclose(whole, reference.bootstrap_distribution, rtol=1e-12)


# ------------------------------------------------------------------ the stages' bootstraps
def test_flip_rate_interval_is_scipys_percentile_bootstrap_over_tuples():
    rng = np.random.default_rng(6)
    y_pred = rng.integers(0, 2, 2 * 75)  # 75 tuples of two rows
    ids = np.repeat(np.arange(75), 2)
    flips = (y_pred[0::2] != y_pred[1::2]).astype(float)
    got = compute_counterfactual(ids, y_pred, bootstrap=500, confidence=0.9, seed=11)
    ci = scipy_percentile_bootstrap(
        (flips,), np.mean, resamples=500, confidence=0.9, seed=11).confidence_interval
    assert got["flip_rate_interval"] == pytest.approx([ci.low, ci.high], rel=1e-12)


def test_competence_intervals_are_scipys_paired_bootstrap_of_balanced_accuracy():
    rng = np.random.default_rng(8)
    y_true = rng.integers(0, 3, 120)
    y_pred = np.where(rng.random(120) < 0.6, y_true, rng.integers(0, 3, 120))
    y_base = np.where(rng.random(120) < 0.4, y_true, rng.integers(0, 3, 120))
    got = assess_competence(y_true, y_pred, baselines={"init_text": y_base},
                            bootstrap=200, confidence=0.9, seed=13)

    def accuracy(true, pred):
        with warnings.catch_warnings():  # a resample may lack a class the model predicts
            warnings.simplefilter("ignore")
            return skm.balanced_accuracy_score(true, pred)

    options = dict(resamples=200, confidence=0.9, seed=13, paired=True, vectorized=False)
    alone = scipy_percentile_bootstrap((y_true, y_pred), accuracy, **options)
    gain = scipy_percentile_bootstrap(
        (y_true, y_pred, y_base), lambda t, p, b: accuracy(t, p) - accuracy(t, b), **options)
    for interval, reference in ((got["accuracy_interval"], alone),
                                (got["baseline_difference_intervals"]["init_text"], gain)):
        ci = reference.confidence_interval
        assert interval == pytest.approx([ci.low, ci.high], rel=1e-9, abs=1e-12)


def test_group_intervals_equal_fairlearns_bootstrap_on_its_own_resamples(monkeypatch):
    """fairlearn resamples rows with pandas ``sample`` seeded per resample; fed those rows,
    the vectorised bootstrap gives fairlearn's ``by_group_ci`` for every group and metric."""
    rng = np.random.default_rng(10)
    n, resamples, seed = 240, 60, 21
    race = pd.Series(rng.choice(["Asian", "Black", "White"], n), name="race")
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, 1 - y_true)
    y_score = rng.random(n)

    def fairlearn_rows(_seed, size, count):
        seeds = np.random.default_rng(seed).integers(
            0, np.iinfo(np.uint32).max, size=count, dtype=np.uint32)
        positions = pd.DataFrame({"row": np.arange(size)})
        for state in seeds:
            yield positions.sample(frac=1, replace=True, random_state=state)["row"].to_numpy()

    monkeypatch.setattr(stats, "resample_rows", fairlearn_rows)
    ours = compute_group_fairness(
        y_pred, sensitive_features=race.to_frame(), y_true=y_true, y_score=y_score,
        metrics=["selection_rate", "accuracy", "true_positive_rate", "mean_score"],
        bootstrap=resamples, seed=seed, intersection=False)["by_feature"]["race"]["intervals"]
    frame = MetricFrame(
        metrics={"selection_rate": selection_rate, "accuracy": skm.accuracy_score,
                 "true_positive_rate": true_positive_rate,
                 "mean_score": lambda y_t, y_p, y_score: float(np.mean(y_score))},
        y_true=y_true, y_pred=y_pred, sensitive_features=race,
        sample_params={"mean_score": {"y_score": y_score}},
        n_boot=resamples, ci_quantiles=[0.025, 0.975], random_state=seed)
    low, high = frame.by_group_ci
    for group in ("Asian", "Black", "White"):
        for metric in ("selection_rate", "accuracy", "true_positive_rate", "mean_score"):
            expected = [low.loc[group, metric], high.loc[group, metric]]
            assert ours[group][metric] == pytest.approx(expected, rel=1e-12), (group, metric)


# ------------------------------------------------------------------ intervals
def test_folded_interval_of_one_gap_is_its_percentile_interval_folded():
    sampled = np.random.default_rng(3).normal(0.2, 0.05, size=(400, 1))
    low, high = np.quantile(sampled[:, 0], [0.025, 0.975])
    assert folded_interval(np.array([0.2]), sampled, "difference", 0.95) == pytest.approx(
        [low, high])
    crossing = sampled - 0.2
    low, high = np.quantile(crossing[:, 0], [0.025, 0.975])
    assert folded_interval(np.array([0.0]), crossing, "difference", 0.95) == pytest.approx(
        [0.0, max(-low, high)])
    assert folded_interval(np.array([0.2]), sampled[:39], "difference", 0.95) is None


@pytest.mark.parametrize("successes, n", [(0, 7), (3, 10), (45, 50), (12, 12), (230, 1000)])
def test_binomial_intervals_equal_scipys(successes, n):
    result = scipy_stats.binomtest(successes, n)
    wilson = result.proportion_ci(confidence_level=0.9, method="wilson")
    exact = result.proportion_ci(confidence_level=0.9, method="exact")
    assert wilson_interval(successes, n, 0.9) == pytest.approx([wilson.low, wilson.high])
    assert clopper_pearson_interval(successes, n, 0.9) == pytest.approx([exact.low, exact.high])


def test_katz_interval_equals_scipys_relative_risk():
    z = float(scipy_stats.norm.ppf(0.975))
    reference = scipy_stats.contingency.relative_risk(18, 60, 30, 55).confidence_interval(0.95)
    assert katz_interval(18, 60, 30, 55, z) == pytest.approx((reference.low, reference.high))
    assert katz_interval(0, 60, 30, 55, z) is None


def test_finite_or_none():
    assert finite_or_none(np.float32(0.25)) == 0.25 and finite_or_none(3) == 3.0
    assert [finite_or_none(v) for v in (None, np.nan, np.inf, -np.inf)] == [None] * 4


def test_block_resampled_means_are_scipy_default_batch_draws():
    values = np.random.default_rng(4).normal(size=(23, 3))
    point, means = block_resampled_means(values, 200, np.random.default_rng(9))
    reference = scipy_stats.bootstrap(
        (values,), np.mean, axis=0, n_resamples=200, method="percentile",
        rng=np.random.default_rng(9))
    np.testing.assert_allclose(point, values.mean(axis=0))
    np.testing.assert_allclose(means.T, reference.bootstrap_distribution, rtol=1e-12)
