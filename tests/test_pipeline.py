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
import yaml
from sklearn.metrics import balanced_accuracy_score, classification_report

from promptaudit.errors import DataError
from promptaudit.evaluation import assess_competence, no_labels_competence
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


def _assert_schema_and_types(result: dict) -> None:
    """A real result validates against the published schema and reads back unchanged."""
    import json

    import jsonschema

    from promptaudit.result import AuditResult

    schema_path = Path(__file__).resolve().parent.parent / "docs" / "result.schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(result)]
    assert errors == []
    assert AuditResult.from_dict(result).to_dict() == result


def test_result_matches_the_published_schema(result):
    _assert_schema_and_types(result)


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
    _assert_schema_and_types(small)
    assert small["task"]["n_examples"] == 12
    assert small["projection"] is None and small["attribution"] is None
    assert small["baselines"] == {"soft_prompt": small["baselines"]["soft_prompt"]}
    frame = audit["frame"].iloc[:12].reset_index(drop=True)
    probs = helpers.recompute(audit["first"], frame=frame)
    counts = pd.Series(probs["y_pred"]).value_counts().to_dict()
    assert small["task"]["prediction_counts"] == {"negative": counts.get(0, 0),
                                                  "positive": counts.get(1, 0)}


# ------------------------------------------------------------ competence and reports


def test_competence_equals_sklearn_on_independent_predictions(result, reference, audit):
    from promptaudit.prompted_model import load_prompted_model

    task = result["task"]
    competence = task["competence"]
    y_true, y_pred = reference["y_true"], reference["y_pred"]
    assert competence["accuracy"] == pytest.approx(
        balanced_accuracy_score(y_true, y_pred), abs=TOL)
    assert competence["chance_accuracy"] == 0.5
    spec = result["audit"]["spec"]
    prompted, _, _ = load_prompted_model(
        spec["model"]["base"], spec["prompt"]["path"], task=spec["model"]["task"],
        labels=spec["model"]["labels"], device="cpu", max_length=spec["model"]["max_length"])
    bare = prompted.with_prompt(None).predict_proba(audit["frame"]["sentence"].tolist())
    assert competence["baselines"]["no_prompt"] == pytest.approx(
        balanced_accuracy_score(y_true, bare.argmax(axis=1)), abs=TOL)
    assert competence["baselines"]["projected_prompt"] == (
        result["baselines"]["projected_prompt"]["balanced_accuracy"])
    best = max(0.5, *competence["baselines"].values())
    assert task["accuracy_over_baseline"] == pytest.approx(competence["accuracy"] - best)
    assert isinstance(competence["works"], bool) and competence["reason"]


def test_a_constant_predictor_never_works_and_imbalance_does_not_break_a_real_one():
    rng = np.random.default_rng(0)
    y_true = (rng.random(400) < 0.1).astype(int)  # 10% positives
    constant = assess_competence(y_true, np.zeros(400, dtype=int), bootstrap=200)
    assert float(np.mean(y_true == 0)) > 0.85          # plain accuracy would look good
    assert constant["accuracy"] == 0.5 == constant["chance_accuracy"]
    assert constant["works"] is False
    assert "cannot be told from chance" in constant["reason"]
    real = y_true.copy()
    flip = rng.random(400) < 0.1
    real[flip] = 1 - real[flip]                        # 90% right on both classes
    good = assess_competence(y_true, real, baselines={"no_prompt": np.zeros(400, dtype=int)},
                             bootstrap=200)
    assert good["works"] is True
    assert good["accuracy"] == pytest.approx(balanced_accuracy_score(y_true, real))
    assert good["best_baseline"] == "chance"  # the constant baseline is no better than chance
    worse = assess_competence(y_true, real, baselines={"projected_prompt": y_true},
                              bootstrap=200)
    assert worse["works"] is False and "worse than its baseline projected_prompt" in (
        worse["reason"])
    assert no_labels_competence()["works"] is None


def test_competence_interval_by_hand():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 120)
    y_pred = np.where(rng.random(120) < 0.6, y_true, rng.integers(0, 3, 120))
    out = assess_competence(y_true, y_pred, bootstrap=100, confidence=0.9, seed=5)
    draws = np.random.default_rng(5)
    values = []
    for _ in range(100):
        rows = draws.integers(0, 120, size=120)
        values.append(balanced_accuracy_score(y_true[rows], y_pred[rows]))
    assert out["accuracy_interval"] == pytest.approx(
        list(np.quantile(values, [0.05, 0.95])), abs=1e-12)
    assert out["chance_accuracy"] == pytest.approx(1 / 3)
    few = assess_competence(y_true, y_pred, bootstrap=5)
    assert few["accuracy_interval"] is None  # 5 resamples cannot hold 95%


def test_classification_report_equals_sklearn(result, reference, audit):
    frame = audit["frame"]
    labels = ["negative", "positive"]
    y_true, y_pred = reference["y_true"], reference["y_pred"]
    expected = classification_report(y_true, y_pred, labels=[0, 1], target_names=labels,
                                      output_dict=True, zero_division=np.nan)
    _assert_report(result["task"]["classification_report"], expected)
    by_group = result["task"]["classification_report_by_group"]
    assert list(by_group) == ["gender", "race", "gender & race"]
    for group in ("female", "male"):
        rows = (frame["gender"] == group).to_numpy()
        expected = classification_report(y_true[rows], y_pred[rows], labels=[0, 1],
                                          target_names=labels, output_dict=True,
                                          zero_division=np.nan)
        _assert_report(by_group["gender"][group], expected)
    rows = ((frame["gender"] == "male") & (frame["race"] == "asian")).to_numpy()
    expected = classification_report(y_true[rows], y_pred[rows], labels=[0, 1],
                                      target_names=labels, output_dict=True, zero_division=np.nan)
    _assert_report(by_group["gender & race"]["male & asian"], expected)


def _assert_report(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, dict):
            for stat, number in value.items():
                ours = got[key][stat]
                if np.isnan(number):
                    assert ours is None, (key, stat)
                else:
                    assert ours == pytest.approx(number, abs=TOL), (key, stat)
        else:
            assert got[key] == pytest.approx(value, abs=TOL)


# ------------------------------------------------------------ input refused before model work


def _spec_with(audit, tmp_path, change) -> Path:
    spec = yaml.safe_load((audit["folder"] / "audit.yaml").read_text())
    change(spec)
    return helpers.write_spec(audit["folder"] / f"{tmp_path.name}.yaml", spec)


def test_reference_group_per_feature_must_exist(audit, tmp_path):
    def change(spec):
        spec["fairness"]["reference_group"] = {"gender": "male", "race": "purple"}
    with pytest.raises(DataError) as info:
        run_audit(load_spec(_spec_with(audit, tmp_path, change)))
    assert str(info.value) == (
        "fairness.reference_group.race: 'purple' is not a group of sensitive feature 'race' "
        f"in {audit['folder'] / 'eval.csv'}; groups: asian, black, white")


@pytest.mark.parametrize("missing", ["", None])
def test_counterfactual_group_column_refuses_missing_values(audit, tmp_path, missing):
    frame = audit["frame"].copy()
    frame["variant"] = ["a", "b"] * 12
    frame.loc[5, "variant"] = missing
    data = helpers.write_csv(tmp_path / "eval.csv", frame)

    def change(spec):
        spec["data"]["path"] = str(data)
        spec["counterfactuals"] = {"pair_column": "pair_id", "group_column": "variant"}
    with pytest.raises(DataError) as info:
        run_audit(load_spec(_spec_with(audit, tmp_path, change)))
    assert str(info.value) == (
        f"{data}: counterfactual group column 'variant' has a missing value at line 7; every row "
        "needs a group (empty cells are not allowed)")  # data row 5 (0-based) under the header


def test_a_missing_pair_id_is_refused_before_the_model_loads(audit, tmp_path, monkeypatch):
    import promptaudit.pipeline as pipeline

    frame = audit["frame"].astype(object)
    frame.loc[3, "pair_id"] = None  # a JSON null (an empty CSV cell reads as "")
    data = tmp_path / "eval.jsonl"
    frame.to_json(data, orient="records", lines=True)

    def change(spec):
        spec["data"]["path"] = str(data)
        spec["counterfactuals"] = {"pair_column": "pair_id"}

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")
    monkeypatch.setattr(pipeline, "load_prompted_model", never)
    with pytest.raises(DataError) as info:
        run_audit(load_spec(_spec_with(audit, tmp_path, change)))
    assert str(info.value) == f"{data}: column 'pair_id' has a missing value at line 4"


def test_positive_index_names_the_spec_key_of_a_label_that_is_not_one():
    from promptaudit.errors import SpecError
    from promptaudit.spec import positive_index

    assert positive_index(["no", "yes"], None) == 1  # the second of two labels
    assert positive_index(["a", "b", "c"], None) == 0
    assert positive_index(("a", "b", "c"), "b") == 1
    with pytest.raises(SpecError) as info:
        positive_index(["no", "yes"], "maybe")
    assert str(info.value) == "model.positive_label: 'maybe' is not one of the labels ['no', 'yes']"


def test_term_suite_groups_that_collide_as_text_are_refused(tmp_path):
    from promptaudit.corpora import load_term_suite

    path = tmp_path / "suite.yaml"
    path.write_text("features:\n  g:\n    groups:\n      1: [one]\n      '1': [uno]\n")
    with pytest.raises(DataError) as info:
        load_term_suite(path)
    assert str(info.value) == (
        f"{path}: key 'features.g.groups' names '1' twice (as text, e.g. 1 and \"1\"); "
        "each name may appear once")


def test_without_labels_competence_cannot_be_judged(audit, tmp_path):
    def change(spec):
        spec["data"].pop("label_column")
        spec["projection"] = {"enabled": False}
        spec["attribution"] = {"enabled": False}
        spec["baselines"] = {"projected": False, "init_text": False}
        spec["gates"] = [{"metric": "demographic_parity_difference", "max": 1.0}]
    result = run_audit(load_spec(_spec_with(audit, tmp_path, change)))
    _assert_schema_and_types(result)
    competence = result["task"]["competence"]
    assert competence["works"] is None
    assert "cannot be judged" in competence["reason"]
    assert result["task"]["classification_report"] is None
    from promptaudit.report._common import competence_sentence

    assert competence_sentence(result).startswith("Competence cannot be judged: No true labels")


def test_prompt_trained_without_out_goes_to_a_new_private_folder(audit, tmp_path, monkeypatch):
    """Not a fixed path in the shared temp directory: nobody can plant or redirect it."""
    import stat
    import tempfile

    from typer.testing import CliRunner

    from promptaudit.cli import app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old_place = tmp_path / "promptaudit-trained" / "trained-here"
    old_place.mkdir(parents=True)  # the former default; a link or planted adapter here was used
    spec = helpers.base_spec(model=str(audit["folder"] / "model"), prompt="unused",
                             data=str(audit["folder"] / "eval.csv"), name="trained-here")
    spec["prompt"] = {"train": {"data": {"path": str(audit["folder"] / "eval.csv"),
                                         "text_column": "sentence", "label_column": "label"},
                                "num_virtual_tokens": 4, "epochs": 1, "batch_size": 8}}
    spec["projection"] = {"enabled": False}
    spec["attribution"] = {"enabled": False}
    spec["gates"] = []
    path = helpers.write_spec(tmp_path / "train.yaml", spec)
    outcome = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "r")])
    assert outcome.exit_code == 0, outcome.output
    result = yaml.safe_load((tmp_path / "r" / "trained-here.json").read_text())
    prompt = result["provenance"]["prompt"]
    trained = Path(prompt["source"])
    assert prompt["trained_in_audit"] is True
    assert trained.parent == tmp_path
    assert trained.name.startswith("promptaudit-trained-trained-here-")
    assert stat.S_IMODE(trained.stat().st_mode) == 0o700
    assert (trained / "adapter_model.safetensors").is_file()
    assert f"trained prompt: {trained}" in outcome.output
    assert list(old_place.iterdir()) == []
