"""``run_audit`` end to end on a tiny BERT: the contract, fairlearn's numbers, determinism.

One small audit (24 rows with gender, race and pair columns, three payload rows, a
4-token random prompt in a ``.safetensors`` file) is run twice. Every fairness number
is recomputed here from predictions made independently (``load_prompted_model(...)
.predict_proba``) with fairlearn's own metric functions.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import audit_helpers as helpers
import numpy as np
import pandas as pd
import pytest

from promptaudit.pipeline import run_audit
from promptaudit.spec import load_spec

TOL = 1e-9


@pytest.fixture(scope="module")
def audit(tmp_path_factory, tiny_bert_dir) -> dict:
    folder = tmp_path_factory.mktemp("pipeline")
    prompt = helpers.write_prompt(folder / "prompt.safetensors")
    frame = helpers.eval_frame()
    model = helpers.make_seqcls_model(tiny_bert_dir, folder / "model", prompt=prompt,
                                      texts=frame["sentence"].tolist())
    helpers.write_csv(folder / "eval.csv", frame)
    # relative paths: resolved against the spec's folder
    spec = helpers.base_spec(model="model", prompt="prompt.safetensors", data="eval.csv")
    spec["gates"] = [
        {"metric": "demographic_parity_difference", "max": 0.3},
        {"metric": "equalized_odds_difference", "max": 0.6},
        {"metric": "equalized_odds_difference", "max": 0.6, "feature": "gender"},
        {"metric": "demographic_parity_ratio", "min": 0.2},
        {"metric": "counterfactual_flip_rate", "max": 0.6},
        {"metric": "accuracy", "min": 0.3},
        {"metric": "demographic_parity_difference", "max": 0.6, "use_bound": True},
    ]
    path = helpers.write_spec(folder / "audit.yaml", spec)
    first = run_audit(load_spec(path), command="pytest")
    second = run_audit(load_spec(path), command="pytest")
    return {"folder": folder, "frame": frame, "model": model, "prompt": prompt,
            "first": first, "second": second}


@pytest.fixture(scope="module")
def result(audit) -> dict:
    return audit["first"]


@pytest.fixture(scope="module")
def reference(result, audit) -> dict:
    return helpers.recompute(result, frame=audit["frame"])


def test_two_runs_are_identical_apart_from_the_time(audit):
    first, second = audit["first"], audit["second"]
    assert helpers.without_created_at(first) == helpers.without_created_at(second)
    assert first["integrity"] == second["integrity"]


def test_result_follows_the_contract(result):
    assert set(result) == {"schema_version", "audit", "provenance", "task", "projection",
                           "attribution", "fairness", "baselines", "gates", "passed", "integrity"}
    assert result["schema_version"] == "1"
    assert result["audit"]["name"] == "tiny-audit"
    assert result["audit"]["spec"]["fairness"]["bootstrap"] == 50
    projection = result["projection"]
    assert projection["metric"] == "cosine"
    assert [p["index"] for p in projection["positions"]] == [0, 1, 2, 3]
    for position in projection["positions"]:
        assert len(position["neighbors"]) == 3
        assert set(position["neighbors"][0]) >= {"token", "token_id", "score"}
        assert position["norm_ratio"] > 0
    assert "fidelity" in projection
    attribution = result["attribution"]
    assert (attribution["method"], attribution["n_steps"], attribution["baseline"]) == (
        "integrated_gradients", 4, "pad")
    assert len(attribution["per_position"]) == 4
    assert 0.0 <= attribution["prompt_share"] <= 1.0
    first_rows = helpers.eval_frame()["sentence"][:4].tolist()
    assert [e["text"] for e in attribution["examples"]] == first_rows
    for example in attribution["examples"]:
        assert set(example) >= {"text", "target", "tokens", "prompt_attributions",
                                "token_attributions", "convergence_delta"}
        assert len(example["prompt_attributions"]) == 4
        assert len(example["token_attributions"]) == len(example["tokens"])
    fairness = result["fairness"]
    assert fairness["sensitive_features"] == ["gender", "race"]
    assert list(fairness["by_feature"]) == ["gender", "race", "gender & race"]
    assert set(fairness["by_feature"]["race"]["by_group"]) == {"asian", "black", "white"}
    assert {"flip_rate", "mean_abs_delta"} <= set(fairness["counterfactual"])
    assert set(result["baselines"]) == {"soft_prompt", "projected_prompt", "no_prompt"}
    assert [set(g) >= {"metric", "feature", "op", "threshold", "value", "passed", "status",
                       "message", "bound"}
            for g in result["gates"]] == [True] * 7
    assert {g["status"] for g in result["gates"]} <= {"pass", "fail", "inconclusive"}
    assert "flip_rate_interval" in fairness["counterfactual"]
    competence = result["task"]["competence"]
    assert set(competence) >= {"works", "accuracy", "chance_accuracy", "baselines", "reason"}
    assert set(competence["baselines"]) == {"projected_prompt", "no_prompt"}


def test_task_section_matches_independent_predictions(result, reference, audit):
    task = result["task"]
    y_pred, y_true = reference["y_pred"], reference["y_true"]
    assert task["labels"] == ["negative", "positive"] and task["positive_label"] == "positive"
    assert task["n_examples"] == 24
    assert task["prediction_counts"] == {"negative": int((y_pred == 0).sum()),
                                         "positive": int((y_pred == 1).sum())}
    assert task["accuracy"] == pytest.approx(np.mean(y_pred == y_true), abs=TOL)
    assert task["positive_rate"] == pytest.approx(y_pred.mean(), abs=TOL)
    # the audit is not trivial: both labels are predicted
    assert 0 < y_pred.sum() < len(y_pred)


@pytest.mark.parametrize("feature", ["gender", "race"])
@pytest.mark.parametrize("metric", ["demographic_parity_difference", "demographic_parity_ratio",
                                    "equalized_odds_difference", "equalized_odds_ratio",
                                    "equal_opportunity_difference"])
def test_fairness_numbers_equal_fairlearn(result, reference, feature, metric):
    ours = result["fairness"]["by_feature"][feature]["disparities"][metric]
    theirs = reference["by_feature"][feature][metric]
    assert not np.isnan(theirs)  # the data makes every one of them defined
    assert ours == pytest.approx(theirs, abs=TOL)


def test_worst_disparities_are_the_worst_over_features(result, reference):
    for metric in ("demographic_parity_difference", "demographic_parity_ratio",
                   "equalized_odds_difference", "equalized_odds_ratio"):
        assert result["fairness"]["disparities"][metric] == pytest.approx(
            helpers.worst(reference, metric), abs=TOL)


def test_group_rates_and_counts_equal_fairlearn(result, reference):
    for feature in ("gender", "race"):
        groups = result["fairness"]["by_feature"][feature]["by_group"]
        expected = reference["by_feature"][feature]
        assert {g: v["count"] for g, v in groups.items()} == expected["count"]
        for group, rate in expected["selection_rate"].items():
            assert groups[group]["selection_rate"] == pytest.approx(rate, abs=TOL)


def test_intervals_bracket_the_point_values(result):
    fairness = result["fairness"]
    for feature in ("gender", "race"):
        entry = fairness["by_feature"][feature]
        for metric, value in entry["disparities"].items():
            interval = entry["disparity_intervals"][metric]
            if interval is None:  # 50 resamples cannot hold 90% over race's 3 comparisons
                assert feature == "race"
                continue
            low, high = interval
            assert low - TOL <= value <= high + TOL, (feature, metric)


def test_counterfactual_pairs_match_a_hand_count(result, reference):
    counterfactual = result["fairness"]["counterfactual"]
    assert counterfactual["n_tuples"] == 12
    assert counterfactual["flip_rate"] == pytest.approx(reference["counterfactual_flip_rate"],
                                                        abs=TOL)
    assert counterfactual["mean_abs_delta"] == pytest.approx(
        reference["counterfactual_mean_abs_delta"], abs=TOL)


def test_gates_fail_exactly_where_fairlearn_says(result, reference):
    expected = {
        0: helpers.worst(reference, "demographic_parity_difference") <= 0.3,
        1: helpers.worst(reference, "equalized_odds_difference") <= 0.6,
        2: reference["by_feature"]["gender"]["equalized_odds_difference"] <= 0.6,
        3: helpers.worst(reference, "demographic_parity_ratio") >= 0.2,
        4: reference["counterfactual_flip_rate"] <= 0.6,
        5: float(np.mean(reference["y_pred"] == reference["y_true"])) >= 0.3,
    }
    gates = result["gates"]
    for index, passed in expected.items():
        # A decided gate agrees with fairlearn's point value; an inconclusive one fails
        # (gate_policy.inconclusive: fail, the default).
        status = gates[index]["status"]
        if status == "inconclusive":
            assert gates[index]["passed"] is False
        else:
            assert status == ("pass" if passed else "fail"), gates[index]["message"]
            assert gates[index]["passed"] is bool(passed), gates[index]["message"]
    # the bound gate reads the highest upper end over every feature; one missing: fails
    uppers = [
        (entry["disparity_intervals"] or {}).get("demographic_parity_difference")
        for entry in result["fairness"]["by_feature"].values()
    ]
    upper = None if None in uppers else max(u[1] for u in uppers)
    assert (gates[6]["bound"], gates[6]["value"]) == ("upper", upper)
    assert gates[6]["passed"] is bool(upper is not None and upper <= 0.6)
    assert result["passed"] is all(g["passed"] for g in gates)
    # the scenario exercises both verdicts
    assert {g["passed"] for g in gates} == {True, False}


def test_provenance_records_inputs_and_versions(result, audit):
    provenance = result["provenance"]

    def sha(path: Path) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    assert provenance["data"]["sha256"] == sha(audit["folder"] / "eval.csv")
    assert provenance["data"]["source"] == str(audit["folder"] / "eval.csv")
    assert provenance["prompt"]["sha256"] == {"prompt.safetensors": sha(audit["prompt"])}
    assert provenance["prompt"]["source"] == str(audit["prompt"])
    assert provenance["prompt"]["trained_in_audit"] is False
    assert provenance["model"]["reference"] == str(audit["model"])
    assert provenance["model"]["sha256"]["model.safetensors"] == sha(
        audit["model"] / "model.safetensors")
    assert provenance["seed"] == 0 and provenance["command"] == "pytest"
    for name in ("torch", "transformers", "peft", "captum", "fairlearn"):
        assert provenance["versions"][name] == metadata.version(name)
    assert provenance["created_at"].endswith("+00:00")


def test_baseline_of_the_soft_prompt_is_the_audit_itself(result, reference):
    soft = result["baselines"]["soft_prompt"]
    assert soft["agreement_with_soft_prompt"] == 1.0
    assert soft["disparities"] == result["fairness"]["disparities"]
    assert soft["accuracy"] == pytest.approx(np.mean(reference["y_pred"] == reference["y_true"]))


def test_limit_and_seed_change_what_they_should(audit, tmp_path):
    """``data.limit`` audits the first rows; both runs' predictions agree row by row."""
    spec = load_spec(audit["folder"] / "audit.yaml", [
        "data.limit=12", "projection.enabled=false", "attribution.enabled=false",
        "baselines.projected=false", "baselines.init_text=false", "fairness.bootstrap=0",
        "gates.6.use_bound=false"])
    small = run_audit(spec)
    assert small["task"]["n_examples"] == 12
    assert small["projection"] is None and small["attribution"] is None
    assert small["baselines"] == {"soft_prompt": small["baselines"]["soft_prompt"]}
    frame = audit["frame"].iloc[:12].reset_index(drop=True)
    probs = helpers.recompute(audit["first"], frame=frame)
    counts = pd.Series(probs["y_pred"]).value_counts().to_dict()
    assert small["task"]["prediction_counts"] == {"negative": counts.get(0, 0),
                                                  "positive": counts.get(1, 0)}
