"""The audit spec: the YAML contract of DESIGN.md, strict keys, one-line errors, --set, paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from promptaudit.errors import SpecError
from promptaudit.spec import (
    GATE_METRICS,
    AttributionSpec,
    AuditSpec,
    FairnessSpec,
    GateSpec,
    apply_overrides,
    load_spec,
    parse_spec,
)

AUDITS = Path(__file__).resolve().parent.parent / "audits"

#: The spec of DESIGN.md ("Audit spec (YAML ...)"), verbatim.
DESIGN_SPEC = """\
name: sst2-identity           # report files are named after it
seed: 0
model:
  base: builtin:minilm
  task: sequence-classification
  labels: [negative, positive]  # index order; verbalizer words for LM tasks
  positive_label: positive      # the favourable outcome for selection rates
prompt:
  path: adapters/sst2           # or, instead of path:
  # train: {data: {path: train.csv, text_column: sentence, label_column: label},
  #         num_virtual_tokens: 20, init: text, init_text: "...", epochs: 2,
  #         learning_rate: 0.03, batch_size: 32}
data:                           # the evaluation set: csv, jsonl, parquet, hf:NAME[:split], builtin:NAME
  path: eval.csv
  text_column: sentence
  label_column: label           # optional; label-free metrics still run without it
  sensitive_features: [gender, race]
counterfactuals: {suite: builtin:identity}   # optional; or a file of term groups,
                                             # or {pair_column: pair_id}: rows sharing it differ only in identity
projection:  {top_k: 5, metric: cosine}
attribution: {method: integrated_gradients, n_steps: 32, baseline: pad, max_examples: 200}
fairness:
  metrics: [selection_rate, accuracy, true_positive_rate, false_positive_rate]
  bootstrap: 1000
  confidence: 0.95
  min_group_size: 30
gates:
  - {metric: demographic_parity_ratio, min: 0.8}
  - {metric: equalized_odds_difference, max: 0.1}
  - {metric: counterfactual_flip_rate, max: 0.05}
"""  # noqa: E501

#: A small valid spec as a dict (paths relative to the spec's folder).
VALID = {
    "name": "unit",
    "prompt": {"path": "prompt.safetensors"},
    "data": {"path": "eval.csv", "text_column": "sentence", "label_column": "label",
             "sensitive_features": ["gender", "race"]},
    "counterfactuals": {"pair_column": "pair_id"},
    "gates": [{"metric": "demographic_parity_ratio", "min": 0.8},
              {"metric": "equalized_odds_difference", "max": 0.1}],
}


def write(folder: Path, spec: dict | str, name: str = "audit.yaml") -> Path:
    path = folder / name
    text = spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def spec_error(folder: Path, spec: dict | str, overrides=()) -> str:
    """The message of the SpecError that loading ``spec`` raises (asserted one line)."""
    path = write(folder, spec)
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def changed(**changes) -> dict:
    """VALID with top-level sections replaced (``None`` removes one)."""
    out = {**VALID, **changes}
    return {k: v for k, v in out.items() if v is not None}


# ------------------------------------------------------------------ the contract
def test_design_md_spec_parses_every_key(tmp_path):
    (tmp_path / "adapters" / "sst2").mkdir(parents=True)
    spec = load_spec(write(tmp_path, DESIGN_SPEC))
    assert spec.name == "sst2-identity" and spec.seed == 0 and spec.version == 1
    assert spec.model.base == "builtin:minilm"
    assert spec.model.task.value == "sequence-classification"
    assert spec.model.labels == ["negative", "positive"]
    assert spec.model.positive_label == "positive"
    assert spec.prompt.path == str((tmp_path / "adapters" / "sst2").resolve())
    assert spec.prompt.train is None
    assert spec.data.path == str((tmp_path / "eval.csv").resolve())
    assert (spec.data.text_column, spec.data.label_column) == ("sentence", "label")
    assert spec.data.sensitive_features == ["gender", "race"]
    assert spec.counterfactuals.suite == "builtin:identity"
    assert spec.counterfactuals.pair_column is None
    assert (spec.projection.top_k, spec.projection.metric.value) == (5, "cosine")
    assert spec.attribution == AttributionSpec(method="integrated_gradients", n_steps=32,
                                               baseline="pad", max_examples=200)
    assert spec.fairness == FairnessSpec(
        metrics=["selection_rate", "accuracy", "true_positive_rate", "false_positive_rate"],
        bootstrap=1000, confidence=0.95, min_group_size=30)
    assert spec.gates == [
        GateSpec(metric="demographic_parity_ratio", min=0.8),
        GateSpec(metric="equalized_odds_difference", max=0.1),
        GateSpec(metric="counterfactual_flip_rate", max=0.05),
    ]
    # The resolved spec is plain JSON (it goes into the result's audit.spec).
    dumped = spec.to_dict()
    assert dumped["gates"][0] == {"metric": "demographic_parity_ratio", "min": 0.8, "max": None,
                                  "feature": None, "use_bound": False}
    assert dumped["model"]["task"] == "sequence-classification"


def test_design_md_train_block_and_pair_column_parse(tmp_path):
    text = DESIGN_SPEC.replace(
        "  path: adapters/sst2           # or, instead of path:\n",
        '  train: {data: {path: train.csv, text_column: sentence, label_column: label},\n'
        '          num_virtual_tokens: 20, init: text, init_text: "...", epochs: 2,\n'
        '          learning_rate: 0.03, batch_size: 32}\n',
    ).replace("counterfactuals: {suite: builtin:identity}",
              "counterfactuals: {pair_column: pair_id}")
    spec = load_spec(write(tmp_path, text))
    train = spec.prompt.train
    assert spec.prompt.path is None
    assert train.data.path == str((tmp_path / "train.csv").resolve())
    assert (train.data.text_column, train.data.label_column) == ("sentence", "label")
    assert (train.num_virtual_tokens, train.init, train.init_text) == (20, "text", "...")
    assert train.epochs == 2
    assert (train.learning_rate, train.batch_size) == (0.03, 32)
    assert spec.counterfactuals.pair_column == "pair_id" and spec.counterfactuals.suite is None


@pytest.mark.parametrize("name", ["demo.yaml", "demo-biased.yaml", "sst2-example.yaml"])
def test_shipped_audits_validate(name):
    spec = load_spec(AUDITS / name)
    assert spec.name == name.removesuffix(".yaml").replace("sst2-example", "sst2-identity")
    assert [g.metric for g in spec.gates] == ["demographic_parity_ratio",
                                              "equalized_odds_difference",
                                              "counterfactual_flip_rate"]


def test_audits_demo_yaml_is_the_demo_spec():
    from promptaudit.demo import demo_prompt_dir, demo_spec

    from_file = load_spec(AUDITS / "demo.yaml")
    assert from_file.prompt.path == str(demo_prompt_dir("clean").resolve())
    assert from_file.to_dict() == demo_spec(from_file.prompt.path).to_dict()
    biased = load_spec(AUDITS / "demo-biased.yaml")
    assert biased.prompt.path == str(demo_prompt_dir("biased").resolve())
    assert biased.to_dict() == demo_spec(
        biased.prompt.path, name="demo-biased", inconclusive="fail").to_dict()


def test_every_gate_metric_of_the_contract_is_gateable():
    # fairness.disparities keys of the result contract, counterfactual and task metrics.
    from promptaudit.fairness import DISPARITY_DIRECTIONS

    assert set(DISPARITY_DIRECTIONS) <= set(GATE_METRICS)
    for metric, gate_metric in GATE_METRICS.items():
        assert gate_metric.name == metric
        if gate_metric.family == "disparities":
            assert gate_metric.direction == DISPARITY_DIRECTIONS[metric].removesuffix("_is_better")


# ------------------------------------------------------------ unknown keys
@pytest.mark.parametrize(("spec", "expected"), [
    (changed(gatez=[]),
     "unknown key 'gatez' (did you mean 'gates'?); allowed keys here: name, seed, model, "
     "prompt, data, counterfactuals, projection, attribution, fairness, baselines, gates, "
     "gate_policy, mitigation, version, bias_audit, audit_info"),
    (changed(fairness={"bootsrap": 10}),
     "unknown key 'fairness.bootsrap' (did you mean 'bootstrap'?); allowed keys here: metrics, "
     "bootstrap, confidence, min_group_size, reference_group, intersection"),
    (changed(gates=[{"metric": "demographic_parity_ratio", "min": 0.8},
                    {"metric": "equalized_odds_difference", "mx": 0.1}]),
     "unknown key 'gates.1.mx' (did you mean 'max'?); allowed keys here: metric, min, max, "
     "feature, use_bound"),
    (changed(model={"lables": ["a", "b"]}),
     "unknown key 'model.lables' (did you mean 'labels'?); allowed keys here: base, task, "
     "labels, positive_label, device, dtype, max_length, batch_size, trust_remote_code, "
     "allow_untrained_head"),
    (changed(prompt={"train": {"data": {"path": "t.csv", "text_colum": "x"}}}),
     "unknown key 'prompt.train.data.text_colum' (did you mean 'text_column'?); allowed keys "
     "here: path, text_column, label_column"),
    (changed(projection={"xyzzy": 1}),
     "unknown key 'projection.xyzzy'; allowed keys here: enabled, top_k, metric, fidelity, "
     "instructions, departures, departures_max_attributed, position_importance, "
     "position_importance_max_examples, translate"),
])
def test_unknown_key_names_it_and_the_nearest_valid_key(tmp_path, spec, expected):
    assert spec_error(tmp_path, spec) == f"{tmp_path / 'audit.yaml'}: {expected}"


def test_duplicate_key_is_an_error(tmp_path):
    text = yaml.safe_dump(VALID, sort_keys=False) + "gates: []\n"
    message = spec_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'audit.yaml'}: duplicate key 'gates' at line ")
    inner = "name: x\ngates:\n  - {metric: accuracy, min: 0.5, min: 0.9}\n"
    assert "duplicate key 'min' at line 3" in spec_error(tmp_path, inner)


def test_yaml_cannot_hold_code(tmp_path):
    marker = tmp_path / "marker"
    text = f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    message = spec_error(tmp_path, text)
    assert "YAML syntax error" in message or "could not determine a constructor" in message
    assert not marker.exists()


# ----------------------------------------------------------------- wrong types
@pytest.mark.parametrize(("spec", "fragments"), [
    (changed(seed="abc"), ["seed: Input should be a valid integer", "(got 'abc')"]),
    (changed(seed=1.5), ["seed:", "(got 1.5)"]),
    (changed(fairness={"bootstrap": True}),
     ["fairness.bootstrap: Input should be a valid integer", "got True, a YAML boolean"]),
    (changed(fairness={"confidence": "high"}), ["fairness.confidence", "(got 'high')"]),
    (changed(gates={"metric": "accuracy", "min": 0.5}), ["gates: Input should be a valid list",
                                                         "(got dict)"]),
    (changed(data={**VALID["data"], "sensitive_features": "gender"}),
     ["data.sensitive_features: Input should be a valid list", "(got 'gender')"]),
    (changed(model={"labels": [0, 1]}), ["model.labels.0: Input should be a valid string"]),
    (changed(model={"task": "translation"}), ["model.task", "'translation'",
                                              "sequence-classification"]),
    (changed(projection={"top_k": 0}), ["projection.top_k", "greater than or equal to 1",
                                        "(got 0)"]),
    (changed(prompt=None), ["missing required key 'prompt'"]),
    (changed(prompt={"path": "a.pt", "train": {"data": {"path": "t.csv"}}}),
     ["prompt: prompt: give exactly one of 'path' or 'train'"]),
    (changed(version=2), ["version: version 2 is not supported; allowed: 1"]),
    ("- just a list\n", ["expected a mapping at the top level, got list"]),
    ("", ["the spec is empty"]),
])
def test_wrong_types_and_shapes(tmp_path, spec, fragments):
    message = spec_error(tmp_path, spec)
    assert message.startswith(str(tmp_path / "audit.yaml") + ": ")
    for fragment in fragments:
        assert fragment in message, message


# ------------------------------------------------------------------------- gates
@pytest.mark.parametrize(("gate", "expected"), [
    ({"metric": "demographic_parity_ratio", "min": 0.9, "max": 0.8},
     "gates.0: gate on demographic_parity_ratio: min 0.9 is above max 0.8; no value could pass"),
    ({"metric": "demographic_parity_ration", "min": 0.8},
     "gates.0.metric: unknown gate metric 'demographic_parity_ration' (did you mean "
     f"'demographic_parity_ratio'?); allowed: {', '.join(GATE_METRICS)}"),
    ({"metric": "recall", "min": 0.8},
     f"gates.0.metric: unknown gate metric 'recall'; allowed: {', '.join(GATE_METRICS)}"),
    ({"metric": "equalized_odds_difference"},
     "gates.0: gate on equalized_odds_difference: give 'min' or 'max'"),
    ({"metric": "demographic_parity_ratio", "min": 0.8, "feature": "age"},
     "gates: feature 'age' is not a sensitive feature; allowed: gender, race, gender & race"),
    ({"metric": "demographic_parity_ratio", "min": 1.5},
     "gates.0: gate on demographic_parity_ratio: min 1.5 is not between 0 and 1; "
     "demographic_parity_ratio is always in [0, 1], so the gate could never pass"),
    ({"metric": "equalized_odds_difference", "max": -0.1},
     "gates.0: gate on equalized_odds_difference: max -0.1 is not between 0 and 1; "
     "equalized_odds_difference is always in [0, 1], so the gate could never pass"),
    ({"metric": "accuracy", "min": 0.7, "feature": "gender"},
     "gates.0: gate on accuracy: 'feature' applies only to group disparities; accuracy is one "
     "number for the whole evaluation set"),
    ({"metric": "counterfactual_mean_abs_delta", "max": 0.1, "use_bound": True},
     "gates.0: gate on counterfactual_mean_abs_delta: 'use_bound' applies only to metrics with "
     "bootstrap intervals (accuracy_difference, accuracy_over_baseline, balanced_accuracy, "
     "counterfactual_flip_rate, demographic_parity_difference, demographic_parity_ratio, "
     "equal_opportunity_difference, equal_opportunity_ratio, equalized_odds_difference, "
     "equalized_odds_ratio, min_impact_ratio); counterfactual_mean_abs_delta has none"),
    ({"metric": "accuracy_over_baseline", "min": -1.5},
     "gates.0: gate on accuracy_over_baseline: min -1.5 is not between -1 and 1; "
     "accuracy_over_baseline is always in [-1, 1], so the gate could never fail"),
    ({"metric": "demographic_parity_ratio", "min": 0.8, "feature": "race & gender"},
     "gates: feature 'race & gender' is not a sensitive feature; allowed: gender, race, "
     "gender & race"),
    ({"metric": "demographic_parity_ratio", "min": True},
     "gates.0.min: Input should be a valid number (got True, a YAML boolean: "
     "yes/no/on/off/true/false are not numbers)"),
])
def test_bad_gates(tmp_path, gate, expected):
    assert spec_error(tmp_path, changed(gates=[gate])) == f"{tmp_path / 'audit.yaml'}: {expected}"


def test_gates_that_cannot_be_evaluated_are_spec_errors(tmp_path):
    no_labels = changed(data={k: v for k, v in VALID["data"].items() if k != "label_column"})
    assert spec_error(tmp_path, no_labels).endswith(
        "gates.1: equalized_odds_difference needs true labels; set data.label_column or gate "
        "on a label-free metric (demographic_parity_*, counterfactual_*)")
    no_cf = changed(counterfactuals=None,
                    gates=[{"metric": "counterfactual_flip_rate", "max": 0.1}])
    assert spec_error(tmp_path, no_cf).endswith(
        "gates.0: counterfactual_flip_rate needs counterfactuals; add a 'counterfactuals' section "
        "(suite: builtin:identity, or pair_column: ...)")
    no_boot = changed(fairness={"bootstrap": 0},
                      gates=[{"metric": "demographic_parity_ratio", "min": 0.8, "use_bound": True}])
    assert spec_error(tmp_path, no_boot).endswith(
        "gates.0: use_bound needs bootstrap intervals, but fairness.bootstrap is 0")


def test_gate_thresholds_at_the_edges_are_allowed():
    assert GateSpec(metric="demographic_parity_ratio", min=0, max=1).max == 1.0
    assert GateSpec(metric="equalized_odds_difference", max=0.0, feature=None).max == 0.0
    # an int threshold is a number
    assert GateSpec.model_validate({"metric": "accuracy", "min": 1}).min == 1.0


# -------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["../../etc/evil", "reports/x", "a\\b", "/abs", ".hidden", "a..b",
                                  "", "x" * 129])
def test_name_with_a_path_separator_or_odd_characters_is_refused(tmp_path, name):
    message = spec_error(tmp_path, changed(name=name))
    assert f"name: name {name!r} is not allowed" in message
    assert "(no path separators)" in message


@pytest.mark.parametrize("name", ["demo", "sst2-identity", "a.b_c-1", "X" * 128])
def test_plain_names_are_accepted(name):
    assert parse_spec(changed(name=name)).name == name


# ------------------------------------------------------------------------ --set
def test_set_overrides_dotted_keys_list_items_and_yaml_types(tmp_path):
    path = write(tmp_path, VALID)
    spec = load_spec(path, [
        "gates.0.min=0.7",                 # list item by index
        "gates.1.max=0.25",
        "gates.1.feature=gender",
        "fairness.bootstrap=200",          # YAML int
        "fairness.confidence=0.9",         # YAML float
        "fairness.intersection=false",     # YAML bool
        "fairness.metrics=[selection_rate, mean_score]",  # YAML list
        "data.limit=10",                   # a key that was not there
        "data.text_column=a=b",            # '=' inside the value
        "model.positive_label=yes please",  # a plain string
        "attribution.enabled=no",          # YAML 1.1 bool
        "name=renamed",
    ])
    assert spec.gates[0] == GateSpec(metric="demographic_parity_ratio", min=0.7)
    assert spec.gates[1] == GateSpec(metric="equalized_odds_difference", max=0.25, feature="gender")
    assert (spec.fairness.bootstrap, spec.fairness.confidence) == (200, 0.9)
    assert spec.fairness.intersection is False
    assert spec.fairness.metrics == ["selection_rate", "mean_score"]
    assert spec.data.limit == 10 and spec.data.text_column == "a=b"
    assert spec.model.positive_label == "yes please"
    assert spec.attribution.enabled is False
    assert spec.name == "renamed"
    # the file itself is untouched
    assert yaml.safe_load(path.read_text()) == VALID


def test_set_can_add_a_section_and_a_list_item_value():
    raw = apply_overrides(VALID, ["counterfactuals.suite=builtin:identity",
                                  "counterfactuals.pair_column=null",
                                  "gates.0={metric: accuracy, min: 0.6}"])
    assert raw["counterfactuals"] == {"pair_column": None, "suite": "builtin:identity"}
    assert raw["gates"][0] == {"metric": "accuracy", "min": 0.6}
    assert VALID["gates"][0] == {"metric": "demographic_parity_ratio", "min": 0.8}  # a copy


@pytest.mark.parametrize(("override", "expected"), [
    ("fairness.bootstrap", "--set 'fairness.bootstrap': expected key=value with a dotted key, "
                           "e.g. fairness.bootstrap=200"),
    ("=3", "--set '=3': expected key=value with a dotted key, e.g. fairness.bootstrap=200"),
    ("gates.5.min=0.1", "--set gates.5.min: '5' is not an index of a list of 2 items"),
    ("gates.first.min=0.1", "--set gates.first.min: 'first' is not an index of a list of 2 items"),
    ("name.x=1", "--set name.x: name is not a mapping or list"),
    ("data.path.x.y=1", "--set data.path.x.y: cannot descend into a str (data.path is not a "
                        "mapping or list)"),
    ("fairness..bootstrap=3", "--set 'fairness..bootstrap=3': empty part in the dotted key "
                              "'fairness..bootstrap'"),
])
def test_bad_set_syntax(tmp_path, override, expected):
    assert spec_error(tmp_path, VALID, [override]) == expected


def test_set_values_are_validated_like_the_file(tmp_path):
    audit = tmp_path / "audit.yaml"
    assert spec_error(tmp_path, VALID, ["fairness.bootsrap=10"]) == (
        f"{audit}: unknown key 'fairness.bootsrap' (did you mean 'bootstrap'?); allowed keys "
        "here: metrics, bootstrap, confidence, min_group_size, reference_group, intersection")
    assert spec_error(tmp_path, VALID, ["gates.0.min=0.9", "gates.0.max=0.8"]) == (
        f"{audit}: gates.0: gate on demographic_parity_ratio: min 0.9 is above max 0.8; "
        "no value could pass")
    assert spec_error(tmp_path, VALID, ["fairness.bootstrap=many"]) == (
        f"{audit}: fairness.bootstrap: Input should be a valid integer (got 'many')")


# ------------------------------------------------------------------------ paths
def test_relative_paths_resolve_against_the_spec_folder_not_the_cwd(tmp_path, monkeypatch):
    spec_dir = tmp_path / "audits"
    elsewhere = tmp_path / "elsewhere"
    spec_dir.mkdir()
    elsewhere.mkdir()
    for folder in (spec_dir, elsewhere):  # the same names exist in the cwd: never used
        (folder / "model").mkdir()
        (folder / "prompt.safetensors").write_bytes(b"")
    monkeypatch.chdir(elsewhere)
    raw = changed(model={"base": "model"}, data={**VALID["data"], "path": "../data/eval.csv"},
                  counterfactuals={"suite": "terms.json"},
                  prompt={"path": "prompt.safetensors"})
    spec = load_spec(write(spec_dir, raw, "main.yaml"))
    assert spec.model.base == str(spec_dir / "model")
    assert spec.prompt.path == str(spec_dir / "prompt.safetensors")
    assert spec.data.path == str(tmp_path / "data" / "eval.csv")
    assert spec.counterfactuals.suite == str(spec_dir / "terms.json")
    # a missing prompt file is still resolved against the spec folder (and so reported there)
    missing = load_spec(write(spec_dir, changed(prompt={"path": "gone.pt"})))
    assert missing.prompt.path == str(spec_dir / "gone.pt")
    trained = load_spec(write(spec_dir, changed(
        prompt={"train": {"data": {"path": "train.csv", "label_column": "label"}, "out": "out"}})))
    assert trained.prompt.train.data.path == str(spec_dir / "train.csv")
    assert trained.prompt.train.out == str(spec_dir / "out")
    # a relative spec path works too
    assert load_spec(Path("..") / "audits" / "main.yaml") == spec


def test_absolute_and_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = load_spec(write(tmp_path, changed(
        data={**VALID["data"], "path": "~/eval.csv"}, prompt={"path": str(tmp_path / "p.pt")})))
    assert spec.data.path == str(tmp_path / "eval.csv")
    assert spec.prompt.path == str(tmp_path / "p.pt")


def test_builtin_and_hub_references_are_untouched(tmp_path):
    spec = load_spec(write(tmp_path, changed(
        model={"base": "builtin:minilm"}, data={**VALID["data"], "path": "builtin:screening"},
        counterfactuals={"suite": "builtin:identity"}, prompt={"path": "someone/sst2-prompt"})))
    assert spec.model.base == "builtin:minilm"
    assert spec.data.path == "builtin:screening"
    assert spec.counterfactuals.suite == "builtin:identity"
    assert spec.prompt.path == "someone/sst2-prompt"
    hub = load_spec(write(tmp_path, changed(
        model={"base": "bert-base-uncased"}, data={**VALID["data"], "path": "hf:glue:sst2"})))
    assert hub.model.base == "bert-base-uncased"
    assert hub.data.path == "hf:glue:sst2"
    # an owner/name that is a folder beside the spec is the local folder
    (tmp_path / "someone" / "sst2-prompt").mkdir(parents=True)
    local = load_spec(write(tmp_path, changed(prompt={"path": "someone/sst2-prompt"})))
    assert local.prompt.path == str(tmp_path / "someone" / "sst2-prompt")


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: audit spec not found$"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="is a directory; expected an audit YAML file"):
        load_spec(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        name: x
        gates: [
          {metric: accuracy
        """))
    with pytest.raises(SpecError, match=r"bad\.yaml: YAML syntax error at line \d+"):
        load_spec(bad)


def test_parse_spec_is_frozen_and_rejects_extra_fields_in_python():
    spec = parse_spec(VALID)
    assert isinstance(spec, AuditSpec)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        spec.name = "other"
    with pytest.raises(SpecError, match="unknown key 'gates.0.treshold'"):
        parse_spec({**VALID, "gates": [{"metric": "accuracy", "treshold": 0.5}]})


# ------------------------------------------------------------ verdict policy, references


def test_gate_policy_defaults_to_failing_closed(tmp_path):
    spec = load_spec(write(tmp_path, changed()))
    assert spec.gate_policy.inconclusive.value == "fail"
    opened = load_spec(write(tmp_path, changed(gate_policy={"inconclusive": "pass"})))
    assert opened.gate_policy.inconclusive.value == "pass"
    message = spec_error(tmp_path, changed(gate_policy={"inconclusive": "maybe"}))
    assert message.startswith(f"{tmp_path / 'audit.yaml'}: gate_policy.inconclusive: ")
    assert "'fail' or 'pass'" in message


def test_reference_group_per_feature(tmp_path):
    spec = load_spec(write(tmp_path, changed(
        fairness={"reference_group": {"gender": "male", "race": "White"}})))
    assert spec.fairness.reference_group == {"gender": "male", "race": "White"}
    assert load_spec(write(tmp_path, changed(fairness={"reference_group": "male"}))
                     ).fairness.reference_group == "male"
    assert spec_error(tmp_path, changed(fairness={"reference_group": {"age": "old"}})) == (
        f"{tmp_path / 'audit.yaml'}: fairness.reference_group: 'age' is not a sensitive "
        "feature; allowed: gender, race")


def test_gates_may_name_the_intersection(tmp_path):
    gate = {"metric": "demographic_parity_ratio", "min": 0.8, "feature": "gender & race"}
    spec = load_spec(write(tmp_path, changed(gates=[gate])))
    assert spec.gates[0].feature == "gender & race"
    # without the intersection it is not a feature
    message = spec_error(tmp_path, changed(gates=[gate], fairness={"intersection": False}))
    assert message.endswith("allowed: gender, race")
# ------------------------------------------------------ attribution steps
def test_attribution_defaults_to_adaptive_steps(tmp_path):
    spec = load_spec(write(tmp_path, VALID))
    assert spec.attribution.n_steps == "auto"
    assert spec.attribution.delta_tolerance == 0.02
    assert spec.attribution.max_gradient_evals == 512
    fixed = load_spec(write(tmp_path, changed(attribution={"n_steps": 64,
                                                           "delta_tolerance": 0.05})))
    assert (fixed.attribution.n_steps, fixed.attribution.delta_tolerance) == (64, 0.05)
    auto = load_spec(write(tmp_path, changed(attribution={"n_steps": "auto",
                                                          "max_gradient_evals": 128})))
    assert (auto.attribution.n_steps, auto.attribution.max_gradient_evals) == ("auto", 128)
    overridden = load_spec(write(tmp_path, VALID), ["attribution.n_steps=16"])
    assert overridden.attribution.n_steps == 16


@pytest.mark.parametrize(("attribution", "fragments"), [
    ({"n_steps": "Auto"}, ["attribution.n_steps", "'auto' or an integer 1 to 1024", "'Auto'"]),
    ({"n_steps": 0}, ["attribution.n_steps", "'auto' or an integer 1 to 1024"]),
    ({"n_steps": 2.5}, ["attribution.n_steps", "2.5"]),
    ({"n_steps": True}, ["attribution.n_steps"]),
    ({"delta_tolerance": 0}, ["attribution.delta_tolerance", "greater than 0"]),
    ({"delta_tolerance": 2}, ["attribution.delta_tolerance", "less than or equal to 1"]),
    ({"max_gradient_evals": 3}, ["attribution.max_gradient_evals",
                                 "greater than or equal to 5"]),
    ({"delta_tolerence": 0.1}, ["delta_tolerence", "delta_tolerance"]),
])
def test_bad_attribution_steps(tmp_path, attribution, fragments):
    message = spec_error(tmp_path, changed(attribution=attribution))
    for fragment in fragments:
        assert fragment in message, message


def test_a_typo_in_the_mitigation_section_names_the_nearest_key(tmp_path):
    with pytest.raises(SpecError, match=r"unknown key 'mitigation.max_acuracy_drop' \(did you "
                                        r"mean 'max_accuracy_drop'\?\)"):
        load_spec(write(tmp_path, changed(mitigation={
            "method": "clp", "data": {"path": "train.csv", "label_column": "label"},
            "max_acuracy_drop": 0.02})))
