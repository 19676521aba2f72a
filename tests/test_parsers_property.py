"""The result and spec parsers over random documents (issue 22): bad input is exit 2, never 3.

Documents start from valid ones (the sample result, a valid audit spec) and get random
keys deleted, renamed or set to random JSON/YAML values (nulls, wrong types, huge
numbers, invalid dates, nested containers). Whatever comes out, `gate` and `compare`
end with exit 0, 1 or 2 (one ``error:`` line), and :func:`promptaudit.spec.load_spec`
returns a spec or raises the project's bad-input error, nothing else. Counterexamples
found on the way are kept as plain tests at the end.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.errors import PromptAuditError
from promptaudit.result import SIGNING_KEY_ENV, content_sha256
from promptaudit.spec import load_spec

FIXTURE = Path(__file__).parent / "fixtures" / "sample_result.json"
SAMPLE = json.loads(FIXTURE.read_text(encoding="utf-8"))

#: Scalars an adversary (or a careless edit) puts where a value was.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([10**400, -(10**400), 2**63, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["2026-02-30", "2026-13-45", "2026-11-28", "1e309", "", "é" * 64,
                     "\x1b[31m", "NaN", "pass", "fail", "inconclusive"]),
    st.text(max_size=12),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _paths(value, prefix=()) -> list[tuple]:
    """Every key path of a JSON document (dict keys and list indices)."""
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((*prefix, key))
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.append((*prefix, index))
            out += _paths(item, (*prefix, index))
    return out


RESULT_PATHS = _paths({k: v for k, v in SAMPLE.items() if k != "integrity"})
MUTATION = st.tuples(st.integers(0, 10**6), st.sampled_from(["delete", "set", "rename"]),
                     VALUES)


def _mutate(document, paths: list[tuple], mutations) -> object:
    doc = copy.deepcopy(document)
    for pick, action, value in mutations:
        path = paths[pick % len(paths)]
        node = doc
        try:
            for part in path[:-1]:
                node = node[part]
            last = path[-1]
            if action == "delete":
                del node[last]
            elif action == "rename" and isinstance(node, dict):
                node[f"{last}\u0435"] = node.pop(last)  # a look-alike letter
            else:
                node[last] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced the path
    return doc


def _result_text(body: dict, *, reseal: bool) -> str:
    """The document as a result file (resealed when it can be: then only its content counts)."""
    if reseal:
        try:
            body = {**body, "integrity": {"algorithm": "sha256",
                                          "content_sha256": content_sha256(body)}}
        except (ValueError, TypeError, RecursionError):
            pass
    return json.dumps(body, allow_nan=True)


def _assert_exit_0_1_or_clean_2(outcome) -> None:
    assert outcome.exit_code in (0, 1, 2), (outcome.exit_code, outcome.output)
    assert "internal error" not in outcome.output and "Traceback" not in outcome.output
    if outcome.exit_code == 2:
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, outcome.stderr


_NUMBER = re.compile(r'(?<=": )-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?')


@given(mutations=st.lists(MUTATION, min_size=1, max_size=4), reseal=st.booleans(),
       signed=st.booleans(), overflow=st.one_of(st.none(), st.integers(0, 10**6)))
def test_property_gate_and_compare_never_exit_3_on_a_mutated_result(mutations, reseal, signed,
                                                                    overflow):
    body = _mutate({k: v for k, v in SAMPLE.items() if k != "integrity"}, RESULT_PATHS,
                   mutations)
    text = _result_text(body, reseal=reseal)
    numbers = list(_NUMBER.finditer(text))
    if overflow is not None and numbers:  # one number beyond a float, after sealing
        hit = numbers[overflow % len(numbers)]
        text = text[:hit.start()] + "1e309" + text[hit.end():]
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        if signed:
            patch.setenv(SIGNING_KEY_ENV, "team-secret")
        else:
            patch.delenv(SIGNING_KEY_ENV, raising=False)
        path = Path(tmp) / "r.json"
        path.write_text(text, encoding="utf-8")
        _assert_exit_0_1_or_clean_2(runner.invoke(app, ["gate", str(path)]))
        _assert_exit_0_1_or_clean_2(
            runner.invoke(app, ["compare", str(FIXTURE), str(path)]))


# ------------------------------------------------------------------- spec documents
def _valid_spec(root: Path) -> dict:
    return {
        "name": "prop",
        "seed": 0,
        "model": {"base": "builtin:minilm", "task": "sequence-classification",
                  "labels": ["negative", "positive"], "positive_label": "positive"},
        "prompt": {"path": str(root / "adapter")},
        "data": {"path": str(root / "eval.csv"), "text_column": "sentence",
                 "label_column": "label", "sensitive_features": ["gender"]},
        "counterfactuals": {"suite": "builtin:identity"},
        "fairness": {"bootstrap": 100, "confidence": 0.95, "min_group_size": 2},
        "bias_audit": {"categories": ["gender"], "threshold": 0.8},
        "audit_info": {"date": "2026-11-28", "auditor": "someone"},
        "mitigation": {"data": {"path": str(root / "train.csv"), "label_column": "label"},
                       "weights": [1.0, 10.0], "out": str(root / "mitigated")},
        "gates": [{"metric": "demographic_parity_ratio", "min": 0.8},
                  {"metric": "counterfactual_flip_rate", "max": 0.05}],
        "gate_policy": {"inconclusive": "fail"},
    }


SPEC_PATHS = _paths(_valid_spec(Path("/tmp")))
#: Raw YAML lines appended to a spec: scalars that YAML itself turns into something odd.
RAW_LINES = st.sampled_from([
    "", "extra: 2026-02-30\n", "audit_info: {date: 2026-13-45}\n", "seed: 1e309\n",
    "seed: .nan\n", "seed: 2026-11-28\n", "name: !!binary aGVsbG8=\n",
    "when: !!timestamp 2026-02-30\n", "count: !!int abc\n", "ratio: !!float x\n",
    "gates: [{metric: demographic_parity_ratio, min: .inf}]\n", "fairness: {confidence: 1e309}\n",
    "name: &a [*a]\n", "prompt: !!python/object:os.system {}\n", "data: ~\n",
    "audit_info: {distribution_date: 2026-02-29T10:00:00}\n",
])


@given(mutations=st.lists(MUTATION, max_size=4), raw=RAW_LINES,
       overrides=st.lists(st.sampled_from([
           "seed=1e309", "audit_info.date=2026-02-30", "fairness.bootstrap=-1",
           "gates.0.min=2026-11-28", "name=", "model.labels=[a]", "mitigation.out=.",
           "x.y=1", "seed=99999999999999999999999"]), max_size=2))
def test_property_spec_loader_raises_only_bad_input_errors(mutations, raw, overrides):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = _mutate(_valid_spec(root), SPEC_PATHS, mutations)
        try:
            text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
        except (yaml.YAMLError, ValueError):
            text = json.dumps(spec, allow_nan=True)  # JSON is YAML too
        path = root / "audit.yaml"
        path.write_text(text + raw, encoding="utf-8")
        try:
            loaded = load_spec(path, overrides)
        except PromptAuditError as exc:
            assert str(exc) and "\n" not in str(exc).strip()
            return
        assert loaded.name  # a spec that loads is a whole, validated spec
        if loaded.audit_info is not None and loaded.audit_info.date:
            assert not loaded.audit_info.date.startswith(("2026-02-30", "2026-13-45"))


@given(text=st.text(max_size=200))
def test_property_spec_loader_on_any_text(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_spec(path)
        except PromptAuditError:
            pass


# ---------------------------------------------- counterexamples kept as plain tests
def test_counterexample_invalid_date_under_any_key_is_a_spec_error(tmp_path):
    path = tmp_path / "audit.yaml"
    text = yaml.safe_dump(_valid_spec(tmp_path), sort_keys=False)
    path.write_text(text + "extra: 2026-02-30\n", encoding="utf-8")
    with pytest.raises(PromptAuditError, match="unknown key 'extra'"):
        load_spec(path)


@pytest.mark.parametrize("line", ["extra: !!timestamp 2026-02-30\n", "extra: !!int abc\n",
                                  "extra: !!float x\n"])
def test_counterexample_explicit_tags_that_cannot_construct_are_spec_errors(tmp_path, line):
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(_valid_spec(tmp_path), sort_keys=False) + line,
                    encoding="utf-8")
    with pytest.raises(PromptAuditError):
        load_spec(path)


def test_counterexample_dates_are_read_as_the_text_written(tmp_path):
    path = tmp_path / "audit.yaml"
    spec = _valid_spec(tmp_path)
    spec.pop("audit_info")
    text = yaml.safe_dump(spec, sort_keys=False)
    path.write_text(text + "audit_info: {date: 2026-11-28, distribution_date: "
                    "2026-11-28 10:00:00}\n", encoding="utf-8")
    info = load_spec(path).audit_info
    assert (info.date, info.distribution_date) == ("2026-11-28", "2026-11-28 10:00:00")


def test_counterexample_infinite_value_in_a_result_is_exit_2_naming_it(tmp_path):
    body = {k: v for k, v in SAMPLE.items() if k != "integrity"}
    body["fairness"]["disparities"]["demographic_parity_ratio"] = math.inf
    path = tmp_path / "r.json"
    path.write_text(json.dumps(body).replace("Infinity", "1e999"), encoding="utf-8")
    outcome = CliRunner().invoke(app, ["gate", str(path)])
    assert outcome.exit_code == 2, outcome.output
    assert "fairness.disparities.demographic_parity_ratio" in outcome.stderr


def test_signing_key_is_checked_before_run_makes_its_output_folder(tmp_path, monkeypatch):
    """A key that cannot be UTF-8 fails first: no model work, no empty report folder."""
    spec = tmp_path / "audit.yaml"
    spec.write_text(yaml.safe_dump(_valid_spec(tmp_path)), encoding="utf-8")
    monkeypatch.setenv(SIGNING_KEY_ENV, "k\udcff")
    out = tmp_path / "new-reports"
    outcome = CliRunner().invoke(app, ["run", str(spec), "--out", str(out)])
    assert outcome.exit_code == 2 and "not valid UTF-8" in outcome.stderr
    assert not out.exists()
    assert os.environ[SIGNING_KEY_ENV] == "k\udcff"
