"""Typed result sections and the published JSON Schema (docs/result.schema.json).

The real results here are the sample fixture (a real ``run_audit``, see
``scripts/make_sample_result.py``) and the report fixture of an early version of
``schema_version`` "1" (``tests/fixtures/early_result_v1.json``, from before
``integrity``, competence, trust and the convergence fields existed): both must
validate against the schema and read back into the typed sections unchanged.
The tiny real audits of ``tests/test_pipeline.py`` are validated there.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest

from promptaudit.errors import InputError
from promptaudit.result import AuditResult, content_sha256, read_result_json, result_schema
from promptaudit.result_sections import (
    Fidelity,
    GateResult,
    GateStatus,
    GroupRow,
    TaskResult,
    Trust,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PUBLISHED = ROOT / "docs" / "result.schema.json"


def _load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sample() -> dict:
    return _load("sample_result.json")


@pytest.fixture(scope="module")
def early() -> dict:
    return _load("early_result_v1.json")


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, data) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:120]}"
            for e in validator.iter_errors(data)]


# ------------------------------------------------------------------ published schema
def test_published_schema_is_the_generated_one():
    spec = importlib.util.spec_from_file_location(
        "make_result_schema", ROOT / "scripts" / "make_result_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert PUBLISHED.read_text(encoding="utf-8") == module.schema_text(), (
        "docs/result.schema.json is stale; run `python scripts/make_result_schema.py`")
    schema = json.loads(module.schema_text())
    assert schema["properties"]["schema_version"]["const"] == "1"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_result_the_tests_hold_validates_against_the_published_schema(validator, name):
    """The pydantic-generated schema accepts every older result, and so does the strict reader."""
    data = _load(name)
    assert _errors(validator, data) == []
    assert AuditResult.from_dict(data).schema_version == "1"


@pytest.mark.parametrize(("edit", "where"), [
    (lambda r: r.pop("task"), "'task' is a required property"),
    (lambda r: r["task"].pop("labels"), "'labels' is a required property"),
    (lambda r: r["gates"][0].pop("op"), "'op' is a required property"),
    (lambda r: r["provenance"]["model"].pop("reference"), "'reference' is a required"),
    (lambda r: r.__setitem__("schema_version", "2"), "'1' was expected"),
    (lambda r: r["task"].__setitem__("n_examples", "240"), "'240' is not of type 'integer'"),
    (lambda r: r["gates"][0].__setitem__("status", "maybe"), "'maybe' is not one of"),
    (lambda r: r["projection"]["trust"].__setitem__("level", "verdict"), "'verdict'"),
    (lambda r: r["fairness"]["by_feature"]["gender"]["by_group"]["male"].__setitem__(
        "selection_rate", "0.4"), "'0.4' is not of type"),
    (lambda r: r["attribution"]["examples"][0].__setitem__("converged", 1), "1 is not of type"),
])
def test_a_broken_result_fails_validation(validator, sample, edit, where):
    broken = copy.deepcopy(sample)
    edit(broken)
    errors = _errors(validator, broken)
    assert errors and any(where in e for e in errors) or any(
        where in str(sub.message) for e in validator.iter_errors(broken)
        for sub in (e.context or [])), errors


def test_gate_refuses_a_result_the_schema_refuses(tmp_path, sample):
    broken = copy.deepcopy(sample)
    broken["task"].pop("labels")
    broken["integrity"]["content_sha256"] = content_sha256(broken)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(InputError, match=r"r\.json: not a valid promptaudit result; task: "
                                         r"'labels' is a required property$"):
        read_result_json(path)
    path.write_text(json.dumps(sample), encoding="utf-8")
    assert read_result_json(path) == sample


# ------------------------------------------------------------------ typed sections
def test_from_dict_to_dict_gives_the_same_json(sample, early):
    typed = AuditResult.from_dict(sample)
    assert typed.to_dict() == sample
    assert json.dumps(typed.to_dict(), sort_keys=True) == json.dumps(sample, sort_keys=True)
    again = AuditResult.from_dict(early).to_dict()
    assert again.pop("integrity")["content_sha256"] == content_sha256(early)
    assert again == early  # keys absent from early results stay absent


def test_typed_fields_read_the_real_values(sample):
    typed = AuditResult.from_dict(sample)
    assert isinstance(typed.task, TaskResult)
    assert typed.task.labels == sample["task"]["labels"]
    assert typed.task.competence.works is sample["task"]["competence"]["works"]
    report = typed.task.classification_report
    assert report["accept"].f1_score == sample["task"]["classification_report"]["accept"][
        "f1-score"]
    assert report["accuracy"] == sample["task"]["classification_report"]["accuracy"]
    projection = typed.projection
    assert isinstance(projection.fidelity, Fidelity) and isinstance(projection.trust, Trust)
    assert projection.fidelity.level == sample["projection"]["fidelity"]["level"]
    assert projection.fidelity.verdict == sample["projection"]["fidelity"]["verdict"]
    assert projection.trust.level == sample["projection"]["trust"]["level"]
    assert projection.positions[0].neighbors[0].token_id == (
        sample["projection"]["positions"][0]["neighbors"][0]["token_id"])
    row = typed.fairness.by_feature["gender"].by_group["male"]
    assert isinstance(row, GroupRow)
    assert row.count == sample["fairness"]["by_feature"]["gender"]["by_group"]["male"]["count"]
    assert row.metrics["selection_rate"] == (
        sample["fairness"]["by_feature"]["gender"]["by_group"]["male"]["selection_rate"])
    assert typed.fairness.counterfactual.flip_rate == sample["fairness"]["counterfactual"][
        "flip_rate"]
    gate = typed.gates[0]
    assert isinstance(gate, GateResult) and gate.status == sample["gates"][0]["status"]
    assert isinstance(gate.status, GateStatus)
    assert typed.attribution.examples[0].converged is sample["attribution"]["examples"][0][
        "converged"]
    assert typed.bias_audit.tables["gender"].rows[0].impact_ratio == (
        sample["bias_audit"]["tables"]["gender"]["rows"][0]["impact_ratio"])
    assert typed.provenance.model.reference == sample["provenance"]["model"]["reference"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["task"].pop("labels"), "task: 'labels' is a required property"),
    # a required key with a Python default (for code) is still required in a result
    (lambda r: r["task"].pop("accuracy"), "task: 'accuracy' is a required property"),
    (lambda r: r.pop("projection"), "the top level: 'projection' is a required property"),
    (lambda r: r["task"].__setitem__("accuracy", "high"),
     "task.accuracy: 'high' is not of type 'number'"),
    (lambda r: r["gates"][1].__setitem__("status", "maybe"),
     "gates.1.status: 'maybe' is not one of ['pass', 'fail', 'inconclusive']"),
    (lambda r: r["projection"]["positions"][2]["neighbors"][0].__setitem__("token_id", 1.5),
     "projection.positions.2.neighbors.0.token_id: 1.5 is not of type 'integer'"),
    (lambda r: r.__setitem__("passed", "yes"), "passed: 'yes' is not of type 'boolean'"),
    (lambda r: r["task"]["classification_report"]["accept"].__setitem__("f1-score", "x"),
     "task.classification_report.accept.f1-score: 'x' is not of type 'number'"),
])
def test_from_dict_refuses_a_malformed_result_in_one_line(sample, edit, message):
    broken = copy.deepcopy(sample)
    edit(broken)
    with pytest.raises(InputError) as caught:
        AuditResult.from_dict(broken)
    text = str(caught.value)
    assert text == f"not a valid promptaudit result; {message}" and "\n" not in text


def test_lenient_reading_keeps_what_fits(sample):
    broken = copy.deepcopy(sample)
    broken["task"]["accuracy"] = "high"
    broken["gates"][0] = "not a gate"
    broken.pop("provenance")
    typed = AuditResult.from_dict(broken, strict=False)
    assert typed.task.accuracy is None and typed.task.labels == sample["task"]["labels"]
    assert len(typed.gates) == len(sample["gates"]) - 1
    assert typed.provenance is None
    empty = AuditResult.from_dict({}, strict=False)
    # a missing required key is None, never a default that reads as a finding
    assert empty.gates is None and empty.passed is None and empty.schema_version is None


def test_sections_made_in_code_write_what_the_stages_write():
    """A section made in code writes the keys it was given and every required key."""
    task = TaskResult(type="sequence-classification", labels=["a", "b"], positive_label="b",
                      n_examples=2, n_truncated=0, max_length=8,
                      prediction_counts={"a": 1, "b": 1})
    written = task.to_dict()
    # an optional key is written when given; a required one always (its default here)
    assert "untrained_head" not in written and "competence" not in written
    assert written["accuracy"] is None and written["prediction_counts"] == {"a": 1, "b": 1}
    assert TaskResult(**{**task.model_dump(), "competence": None}).to_dict()["competence"] is None
    assert list(written)[:5] == ["type", "labels", "positive_label", "n_examples", "n_truncated"]
    row = GroupRow(count=3, small=True, metrics={"selection_rate": 0.5, "accuracy": None})
    assert row.to_dict() == {"count": 3, "small": True, "selection_rate": 0.5, "accuracy": None}
    gate = GateResult(metric="accuracy", feature=None, op=">=", threshold=0.5, value=0.7,
                      bound="point", status=GateStatus.PASS, passed=True, message="ok")
    assert gate.to_dict()["status"] == "pass" and "rows_to_decide" not in gate.to_dict()
    given = GateResult(**{**gate.model_dump(), "rows_to_decide": None})
    assert given.to_dict()["rows_to_decide"] is None


def test_result_schema_requires_only_keys_every_result_has(early):
    """Keys the early result lacks are not required anywhere in the schema."""
    schema = result_schema()

    def required_paths(node, defs, path, seen):
        node = defs[node["$ref"].split("/")[-1]] if "$ref" in node else node
        for key in node.get("required", []):
            yield f"{path}.{key}"
        for key, sub in node.get("properties", {}).items():
            for option in sub.get("anyOf", [sub]):
                if "$ref" in option and option["$ref"] not in seen:
                    yield from required_paths(option, defs, f"{path}.{key}",
                                              seen | {option["$ref"]})
    paths = list(required_paths(schema, schema["$defs"], "", frozenset()))
    assert ".task.labels" in paths and ".gates" in paths

    def present(data, path):
        """The last key is there wherever its parent is (list items: the first)."""
        *parents, last = path.strip(".").split(".")
        node = data
        for part in parents:
            if isinstance(node, list):
                node = node[0] if node else None
            if not isinstance(node, dict) or part not in node:
                return True  # no parent: nothing is required
            node = node[part]
        if isinstance(node, list):
            node = node[0] if node else None
        return not isinstance(node, dict) or last in node

    missing = [p for p in paths if not present(early, p)]
    assert missing == []


def test_reports_fail_closed_on_a_result_without_passed():
    """Read leniently, a missing ``passed`` is None, so the reports say FAIL, not PASS."""
    from promptaudit.report import render_junit, render_markdown

    bare = {"audit": {"name": "bare"}, "gates": []}
    assert render_markdown(bare).startswith("## \u274c promptaudit FAIL: bare")
    assert '<property name="passed" value="false" />' in render_junit(bare)


def test_numbers_keep_their_json_form_and_a_bool_is_not_a_number():
    """An int in a number field stays an int (the result writes ``1``, not ``1.0``)."""
    from promptaudit.result_sections import CounterfactualGroup

    row = CounterfactualGroup.from_dict({"flip_rate": 1, "mean_abs_delta": 0.25, "count": 2})
    assert row.to_dict() == {"flip_rate": 1, "mean_abs_delta": 0.25, "count": 2}
    assert type(row.to_dict()["flip_rate"]) is int
    with pytest.raises(InputError, match=r"flip_rate: True is not of type 'number'$"):
        CounterfactualGroup.from_dict({"flip_rate": True, "mean_abs_delta": None, "count": 2})
    with pytest.raises(InputError, match=r"count: 2\.0 is not of type 'integer'$"):
        CounterfactualGroup.from_dict({"flip_rate": 0.5, "mean_abs_delta": None, "count": 2.0})
