"""One figure, one verdict: min_impact_ratio states its uncertainty as the DP ratio does,
point-only metrics say so, and the competence headline never says "not below" a baseline
it is below."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptaudit.bias_audit import compute_bias_audit, with_impact_ratio_intervals
from promptaudit.evaluation import assess_competence
from promptaudit.fairness import compute_group_fairness
from promptaudit.gates import evaluate_gates


def _screening(n_a: int = 40, n_b: int = 40, sel_a: int = 20, sel_b: int = 14):
    """Two groups; group a selected 20/40 (0.5), group b 14/40 (0.35): ratio 0.7."""
    groups = ["a"] * n_a + ["b"] * n_b
    picked = [1] * sel_a + [0] * (n_a - sel_a) + [1] * sel_b + [0] * (n_b - sel_b)
    return pd.DataFrame({"g": groups}), np.array(picked)


def _both(frame, picked, *, bootstrap=400, seed=3):
    fairness = compute_group_fairness(
        picked, sensitive_features=frame, positive_label_index=1, metrics=["selection_rate"],
        bootstrap=bootstrap, confidence=0.95, min_group_size=1, seed=seed,
    )
    audit = compute_bias_audit(frame, selected=picked == 1, exclude_below=0.0)
    audit = with_impact_ratio_intervals(audit, frame, selected=picked == 1, bootstrap=bootstrap,
                                        confidence=0.95, seed=seed)
    return fairness, audit


def test_impact_ratio_interval_equals_the_dp_ratio_interval_on_the_same_rates():
    frame, picked = _screening()
    fairness, audit = _both(frame, picked)
    dp = fairness["disparities"]["demographic_parity_ratio"]
    assert audit["min_impact_ratio"] == pytest.approx(dp) == pytest.approx(14 / 40 / (20 / 40))
    dp_interval = fairness["disparity_intervals"]["demographic_parity_ratio"]
    assert dp_interval is not None
    np.testing.assert_allclose(audit["min_impact_ratio_interval"], dp_interval, rtol=0, atol=1e-12)
    np.testing.assert_allclose(audit["tables"]["g"]["impact_ratio_interval"], dp_interval)
    assert audit["interval_confidence"] == 0.95 and audit["interval_bootstrap"] == 400


def test_the_same_point_value_gets_the_same_verdict():
    """The issue: DP ratio 0.7169 INCONCLUSIVE while min_impact_ratio 0.7169 FAIL."""
    frame, picked = _screening()
    fairness, audit = _both(frame, picked)
    result = {"fairness": {**fairness}, "bias_audit": audit, "task": {"n_examples": 80}}
    entries = evaluate_gates(
        [{"metric": "demographic_parity_ratio", "min": 0.8},
         {"metric": "min_impact_ratio", "min": 0.8}],
        result,
    )
    assert entries[0]["value"] == pytest.approx(entries[1]["value"])
    assert entries[0]["status"] == entries[1]["status"] == "inconclusive"
    assert entries[1]["interval"] == pytest.approx(entries[0]["interval"])
    assert "interval" in entries[1]["message"] and "point-only" not in entries[1]["message"]


def test_impact_ratio_interval_by_hand_with_one_resample_set():
    """Percentile interval of the ratio gap, checked against a direct numpy bootstrap."""
    frame, picked = _screening(30, 30, 15, 9)
    _, audit = _both(frame, picked, bootstrap=200, seed=7)
    rng = np.random.default_rng(7)
    gaps = []
    for _ in range(200):
        rows = rng.integers(0, 60, size=60)
        a = picked[rows][rows < 30].mean() if (rows < 30).any() else np.nan
        b = picked[rows][rows >= 30].mean() if (rows >= 30).any() else np.nan
        gaps.append(a / b - 1 if a <= b else 1 - b / a)  # pair (a, b): signed ratio gap
    lo, hi = np.nanquantile(gaps, [0.025, 0.975])
    near = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
    far = max(abs(lo), abs(hi))
    np.testing.assert_allclose(audit["min_impact_ratio_interval"], [1 - far, 1 - near])


def test_scoring_mode_and_two_features_get_intervals():
    frame = pd.DataFrame({"g": ["a", "b"] * 40, "h": ["x"] * 40 + ["y"] * 40})
    scores = np.linspace(0, 1, 80)
    audit = compute_bias_audit(frame, scores=scores, mode="scoring", exclude_below=0.0)
    audit = with_impact_ratio_intervals(audit, frame, scores=scores, bootstrap=200,
                                        confidence=0.9, seed=0)
    assert set(audit["tables"]) == {"g", "h", "g & h"}
    for table in audit["tables"].values():
        if table["min_impact_ratio"] is not None:
            lo, hi = table["impact_ratio_interval"]
            assert lo <= table["min_impact_ratio"] <= hi
    lo, hi = audit["min_impact_ratio_interval"]
    assert lo == min(t["impact_ratio_interval"][0] for t in audit["tables"].values()
                     if t["impact_ratio_interval"])


def test_without_bootstrap_the_impact_ratio_is_point_only_and_says_so():
    frame, picked = _screening()
    audit = compute_bias_audit(frame, selected=picked == 1, exclude_below=0.0)
    audit = with_impact_ratio_intervals(audit, frame, selected=picked == 1, bootstrap=0,
                                        confidence=0.95, seed=0)
    assert audit["min_impact_ratio_interval"] is None
    from audit_helpers import HAND_MADE_FAIRNESS, HAND_MADE_PROVENANCE, HAND_MADE_TASK

    from promptaudit.report._bias_audit import bias_audit_view
    from promptaudit.result import AuditResult

    result = AuditResult(audit={"name": "x", "spec": {}}, provenance=HAND_MADE_PROVENANCE,
                         task=HAND_MADE_TASK, fairness=HAND_MADE_FAIRNESS, gates=[],
                         passed=True, bias_audit=audit).to_dict()
    assert "point-only" in bias_audit_view(result)["min_impact_ratio"]
    fairness, with_interval = _both(frame, picked)
    result["bias_audit"] = with_interval
    shown = bias_audit_view(AuditResult.from_dict(result) if hasattr(AuditResult, "from_dict")
                            else result)["min_impact_ratio"]
    assert "95% interval" in shown


def test_metrics_without_intervals_are_marked_point_only_in_the_gate_line():
    entry = evaluate_gates([{"metric": "accuracy", "min": 0.5}], {"task": {"accuracy": 0.7}})[0]
    assert entry["point_only"] is True
    assert entry["message"].endswith("(point-only metric: it has no interval)")
    dp = evaluate_gates([{"metric": "demographic_parity_ratio", "min": 0.5}],
                        {"fairness": {"disparities": {"demographic_parity_ratio": 0.7}}})[0]
    assert "point_only" not in dp and "point-only" not in dp["message"]


def test_competence_headline_says_below_within_the_uncertainty():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, size=200)
    baseline = np.where(rng.random(200) < 0.80, truth, 1 - truth)  # ~80% right
    prompt = baseline.copy()
    wrong = np.flatnonzero(prompt == truth)[:12]  # 12 new mistakes, 10 fixed ones: net -2
    fixed = np.flatnonzero(prompt != truth)[:10]
    prompt[wrong] = 1 - prompt[wrong]
    prompt[fixed] = 1 - prompt[fixed]
    out = assess_competence(truth, prompt, baselines={"init_text": baseline}, bootstrap=500)
    assert out["accuracy"] < out["baselines"]["init_text"]
    assert out["works"] is True  # the difference interval reaches above 0
    assert "not below" not in out["reason"]
    assert "below its best baseline init_text" in out["reason"]
    assert "within the uncertainty" in out["reason"]
