"""The result JSON: integrity hash, read-back checks, and `promptaudit gate` exit codes."""

from __future__ import annotations

import copy
import hashlib
import json
import math

import numpy as np
import pytest
from audit_helpers import (
    HAND_MADE_FAIRNESS,
    HAND_MADE_PROVENANCE,
    HAND_MADE_TASK,
    hand_made_counterfactual,
)
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.errors import InputError
from promptaudit.report import write_reports
from promptaudit.result import (
    SCHEMA_VERSION,
    AuditResult,
    canonical_json,
    content_sha256,
    read_result_json,
    to_jsonable,
)

GATES = [{"metric": "demographic_parity_ratio", "min": 0.8, "max": None, "feature": None,
          "use_bound": False},
         {"metric": "counterfactual_flip_rate", "min": None, "max": 0.05, "feature": None,
          "use_bound": False}]


def make_result(*, ratio: float = 0.9, flip_rate: float = 0.02) -> dict:
    """A small but complete result (gates evaluated by hand)."""
    gates = [
        {"metric": "demographic_parity_ratio", "feature": None, "op": ">=", "threshold": 0.8,
         "value": ratio, "bound": "point", "passed": ratio >= 0.8, "message": "ratio"},
        {"metric": "counterfactual_flip_rate", "feature": None, "op": "<=", "threshold": 0.05,
         "value": flip_rate, "bound": "point", "passed": flip_rate <= 0.05, "message": "flips"},
    ]
    return AuditResult(
        audit={"name": "unit", "spec": {"name": "unit", "gates": copy.deepcopy(GATES)}},
        provenance={**HAND_MADE_PROVENANCE, "seed": np.int64(0), "versions": {"torch": "x"}},
        task={**HAND_MADE_TASK, "accuracy": np.float32(0.5), "balanced_accuracy": float("nan")},
        fairness={**HAND_MADE_FAIRNESS, "sensitive_features": ["gender"],
                  "by_feature": {"gender": {
                      "by_group": {}, "intervals": None, "small_groups": [],
                      "disparities": {"demographic_parity_ratio": ratio},
                      "disparity_intervals": None}},
                  "disparities": {"demographic_parity_ratio": ratio},
                  "disparity_intervals": {"demographic_parity_ratio": (0.7, 1.0)},
                  "counterfactual": hand_made_counterfactual(flip_rate, 0.01)},
        gates=gates, passed=all(g["passed"] for g in gates),
    ).to_dict()


def dump(path, result: dict) -> None:
    """Write the JSON the way the report writer does."""
    path.write_text(json.dumps(result, sort_keys=True, indent=2, allow_nan=False), encoding="utf-8")


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


# -------------------------------------------------------------------- integrity
def test_to_dict_carries_the_contract_keys_and_a_hash_of_the_rest():
    result = make_result()
    assert result["schema_version"] == SCHEMA_VERSION == "1"
    assert {"schema_version", "audit", "provenance", "task", "projection", "attribution",
            "fairness", "gates", "passed", "integrity"} <= set(result)
    assert result["integrity"]["algorithm"] == "sha256"
    # numpy scalars, tuples and NaN became plain JSON
    assert type(result["provenance"]["seed"]) is int
    assert type(result["task"]["accuracy"]) is float and result["task"]["accuracy"] == 0.5
    assert result["task"]["balanced_accuracy"] is None
    assert result["fairness"]["disparity_intervals"]["demographic_parity_ratio"] == [0.7, 1.0]
    # the hash, computed here independently: sorted-key compact JSON without
    # integrity and provenance.created_at
    body = {k: v for k, v in result.items() if k != "integrity"}
    body["provenance"] = {k: v for k, v in body["provenance"].items() if k != "created_at"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert result["integrity"]["content_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert content_sha256(result) == result["integrity"]["content_sha256"]


def test_round_trip_through_the_written_json(tmp_path):
    result = make_result()
    dump(tmp_path / "r.json", result)
    assert read_result_json(tmp_path / "r.json") == result
    # and through the report writer
    paths = write_reports(result, tmp_path / "reports", name="unit")
    assert read_result_json(paths["json"]) == result
    # from_dict keeps every section
    again = AuditResult.from_dict(result).to_dict()
    assert again == result


def test_created_at_is_outside_the_hash(tmp_path):
    result = make_result()
    result["provenance"]["created_at"] = "2030-05-05T05:05:05+00:00"
    dump(tmp_path / "r.json", result)
    assert read_result_json(tmp_path / "r.json")["provenance"]["created_at"].startswith("2030")


@pytest.mark.parametrize("edit", [
    lambda r: r["fairness"]["disparities"].__setitem__("demographic_parity_ratio", 0.95),
    lambda r: r.__setitem__("passed", not r["passed"]),
    lambda r: r["gates"][0].__setitem__("passed", True),
    lambda r: r["audit"]["spec"]["gates"][0].__setitem__("min", 0.1),
    lambda r: r["provenance"].__setitem__("seed", 1),
    lambda r: r["integrity"].__setitem__("content_sha256", "0" * 64),
])
def test_an_edited_result_is_refused(tmp_path, edit):
    result = make_result(ratio=0.7)
    edit(result)
    dump(tmp_path / "r.json", result)
    with pytest.raises(InputError) as info:
        read_result_json(tmp_path / "r.json")
    assert str(info.value) == (
        f"{tmp_path / 'r.json'}: content does not match its integrity hash, a checksum: the file "
        "changed after the audit wrote it (re-run the audit instead of editing its JSON; a "
        "checksum catches accidental change, a signature with PROMPTAUDIT_SIGNING_KEY catches "
        "deliberate edits)")
    assert read_result_json(tmp_path / "r.json", verify=False)["schema_version"] == "1"


@pytest.mark.parametrize(("content", "expected"), [
    (None, "result file not found"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"schema_version": "1"}', "not a promptaudit result; missing keys: audit, provenance, "
                                "task, fairness, gates, passed"),
])
def test_malformed_result_files(tmp_path, content, expected):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match="^" + str(path).replace(".", r"\.") + ": ") as info:
        read_result_json(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_wrong_schema_version_and_missing_hash(tmp_path):
    result = make_result()
    result["schema_version"] = "2"
    dump(tmp_path / "v.json", result)
    with pytest.raises(InputError, match="schema_version '2' is not supported; allowed: 1"):
        read_result_json(tmp_path / "v.json")
    result = make_result()
    del result["integrity"]
    dump(tmp_path / "h.json", result)
    with pytest.raises(InputError, match="has no integrity.content_sha256; cannot verify it"):
        read_result_json(tmp_path / "h.json")


def test_to_jsonable_and_canonical_json():
    value = to_jsonable({1: (np.float64(1.5), np.int32(2), np.bool_(True)),
                         "a": np.array([[1.0, math.inf]]), "b": -math.nan})
    assert value == {"1": [1.5, 2, True], "a": [[1.0, None]], "b": None}
    assert canonical_json({"b": 1, "a": [1.0, "é"]}) == '{"a":[1.0,"\\u00e9"],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})


# -------------------------------------------------------------- promptaudit gate
def gate_cli(runner, path):
    return runner.invoke(app, ["gate", str(path)], catch_exceptions=False)


def test_gate_command_exit_0_when_every_gate_passes(runner, tmp_path):
    dump(tmp_path / "ok.json", make_result(ratio=0.9, flip_rate=0.02))
    outcome = gate_cli(runner, tmp_path / "ok.json")
    assert outcome.exit_code == 0, outcome.output
    assert outcome.stdout.splitlines() == [
        "PASS  demographic_parity_ratio (worst over features) = 0.9 (point) passes >= 0.8",
        "PASS  counterfactual_flip_rate = 0.02 (point) passes <= 0.05",
        f"{tmp_path / 'ok.json'}: all gates pass (2 checked)",
    ]


def test_gate_command_exit_1_when_a_gate_fails(runner, tmp_path):
    dump(tmp_path / "bad.json", make_result(ratio=0.9, flip_rate=0.2))
    outcome = gate_cli(runner, tmp_path / "bad.json")
    assert outcome.exit_code == 1, outcome.output
    assert "FAIL  counterfactual_flip_rate = 0.2 (point) FAILS <= 0.05" in outcome.stdout
    assert outcome.stdout.splitlines()[-1] == f"{tmp_path / 'bad.json'}: a gate failed (2 checked)"


def test_gate_command_re_evaluates_from_the_numbers_not_the_recorded_verdicts(runner, tmp_path):
    # A result recorded as passing whose numbers fail its spec's gates still fails:
    # `gate` recomputes the verdicts from the numbers and the spec's thresholds.
    result = make_result(ratio=0.5)
    body = {k: v for k, v in result.items() if k != "integrity"}
    body["passed"] = True
    body["gates"][0]["passed"] = True
    body["integrity"] = {"algorithm": "sha256", "content_sha256": content_sha256(body)}
    dump(tmp_path / "r.json", body)
    assert gate_cli(runner, tmp_path / "r.json").exit_code == 1


def test_gate_command_refuses_an_edited_result_with_exit_2(runner, tmp_path):
    result = make_result(ratio=0.5)  # fails
    result["fairness"]["disparities"]["demographic_parity_ratio"] = 0.95  # "fixed" by hand
    result["passed"] = True
    dump(tmp_path / "edited.json", result)
    outcome = gate_cli(runner, tmp_path / "edited.json")
    assert outcome.exit_code == 2
    assert outcome.stdout == ""
    assert outcome.stderr == (
        f"error: {tmp_path / 'edited.json'}: content does not match its integrity hash, a "
        "checksum: the file changed after the audit wrote it (re-run the audit instead of "
        "editing its JSON; a checksum catches accidental change, a signature with "
        "PROMPTAUDIT_SIGNING_KEY catches deliberate edits)\n")


@pytest.mark.parametrize("content", [None, "{oops", '{"schema_version": "1"}'])
def test_gate_command_bad_files_exit_2_with_one_line(runner, tmp_path, content):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    outcome = gate_cli(runner, path)
    assert outcome.exit_code == 2
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ")
    assert "Traceback" not in outcome.output


def test_gate_command_on_a_result_whose_spec_gate_is_invalid_exits_2(runner, tmp_path):
    # e.g. a result written by another version whose gate this version does not know
    result = make_result()
    body = {k: v for k, v in result.items() if k != "integrity"}
    body["audit"]["spec"]["gates"][0]["metric"] = "demographic_parity_quotient"
    body["integrity"] = {"algorithm": "sha256", "content_sha256": content_sha256(body)}
    dump(tmp_path / "r.json", body)
    outcome = gate_cli(runner, tmp_path / "r.json")
    assert outcome.exit_code == 2
    assert outcome.stderr.startswith(
        "error: gates.0.metric: unknown gate metric 'demographic_parity_quotient'")
    assert len(outcome.stderr.splitlines()) == 1


# ------------------------------------------------------------------ signatures
KEY = "team-secret-Zq81"


def _recomputed(result: dict) -> dict:
    """A forger's edit: change a number, then recompute the (public) checksum."""
    body = {k: v for k, v in result.items() if k != "integrity"}
    body["fairness"]["disparities"]["demographic_parity_ratio"] = 0.99
    for feature in body["fairness"]["by_feature"].values():  # gates read every feature
        feature["disparities"]["demographic_parity_ratio"] = 0.99
    integrity = {**result["integrity"], "content_sha256": content_sha256(body)}
    return {**body, "integrity": integrity}


def test_signing_key_adds_an_hmac_that_a_key_holder_can_check(monkeypatch, tmp_path):
    import hmac as hmac_module

    monkeypatch.setenv("PROMPTAUDIT_SIGNING_KEY", KEY)
    result = make_result()
    body = {k: v for k, v in result.items() if k != "integrity"}
    expected = hmac_module.new(KEY.encode(), canonical_json(body).encode(),
                               hashlib.sha256).hexdigest()
    assert result["integrity"]["hmac_sha256"] == expected
    dump(tmp_path / "r.json", result)
    assert KEY not in (tmp_path / "r.json").read_text()
    assert read_result_json(tmp_path / "r.json")["passed"] is True
    monkeypatch.delenv("PROMPTAUDIT_SIGNING_KEY")
    assert "hmac_sha256" not in make_result()["integrity"]


def test_gate_with_the_key_refuses_a_re_hashed_forgery(runner, monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTAUDIT_SIGNING_KEY", KEY)
    signed = make_result(ratio=0.5)  # fails its gate
    dump(tmp_path / "signed.json", signed)
    outcome = gate_cli(runner, tmp_path / "signed.json")
    assert outcome.exit_code == 1 and "checksum and signature verified" in outcome.stdout
    dump(tmp_path / "forged.json", _recomputed(signed))
    assert read_result_json(tmp_path / "forged.json", signing_key=None, verify=False)
    outcome = gate_cli(runner, tmp_path / "forged.json")
    assert outcome.exit_code == 2, outcome.output
    assert "signature is wrong" in outcome.stderr and KEY not in outcome.output
    monkeypatch.delenv("PROMPTAUDIT_SIGNING_KEY")
    unsigned = make_result(ratio=0.5)
    dump(tmp_path / "unsigned.json", unsigned)
    monkeypatch.setenv("PROMPTAUDIT_SIGNING_KEY", KEY)
    outcome = gate_cli(runner, tmp_path / "unsigned.json")
    assert outcome.exit_code == 2
    assert "has no integrity.hmac_sha256 signature" in outcome.stderr
    monkeypatch.setenv("PROMPTAUDIT_SIGNING_KEY", "another-key")
    outcome = gate_cli(runner, tmp_path / "signed.json")
    assert outcome.exit_code == 2 and "signature is wrong" in outcome.stderr
    monkeypatch.setenv("PROMPTAUDIT_SIGNING_KEY", "  ")
    outcome = gate_cli(runner, tmp_path / "signed.json")
    assert outcome.exit_code == 2 and "is set but empty" in outcome.stderr


def test_without_the_key_a_re_hashed_forgery_passes_the_checksum(runner, tmp_path):
    """Documented limit: the checksum is not a signature; gate says the signature went unchecked."""
    signed = make_result(ratio=0.5, flip_rate=0.02)
    signed["integrity"]["hmac_sha256"] = "a" * 64
    dump(tmp_path / "forged.json", _recomputed(signed))
    outcome = gate_cli(runner, tmp_path / "forged.json")
    assert outcome.exit_code == 0
    assert "signature not checked" in outcome.stdout


# ---------------------------------------------------------- hostile result files
def _rehashed(body: dict) -> dict:
    body = {k: v for k, v in body.items() if k != "integrity"}
    return {**body, "integrity": {"algorithm": "sha256", "content_sha256": content_sha256(body)}}


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: json.dumps(make_result()).replace('"accuracy": 0.5', '"accuracy": NaN'),
     "NaN is not valid JSON"),
    (lambda: json.dumps(_rehashed({**make_result(), "audit": "x"})),
     "not a valid promptaudit result; audit: 'x' is not of type 'object'"),
    (lambda: json.dumps(_rehashed({**make_result(), "gates": {"a": 1}})),
     "gates: {'a': 1} is not of type 'array'"),
    (lambda: json.dumps(_rehashed({**make_result(), "passed": "yes"})),
     "passed: 'yes' is not of type 'boolean'"),
    (lambda: json.dumps(_rehashed({**make_result(), "fairness": {
        **make_result()["fairness"], "disparities": {"demographic_parity_ratio": "0.9"}}})),
     "fairness.disparities.demographic_parity_ratio: '0.9' is not of type"),
    (lambda: '{"a":' * 100_000 + "1" + "}" * 100_000, "nested deeper than 64 levels"),
    (lambda: "[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
])
def test_hostile_result_files_exit_2_never_3(runner, tmp_path, make, expected):
    path = tmp_path / "r.json"
    path.write_text(make(), encoding="utf-8")
    outcome = gate_cli(runner, path)
    assert outcome.exit_code == 2, outcome.output
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), outcome.stderr
    assert expected in lines[0]


def test_as_result_reads_a_partial_result_with_numpy_values_leniently():
    from promptaudit.result import as_result

    typed = as_result({
        "task": {"accuracy": np.float32(0.5), "n_examples": np.int64(3)},
        "fairness": {"disparities": {"demographic_parity_ratio": float("nan"),
                                     "demographic_parity_difference": "0.1"},
                     "disparity_intervals": {"demographic_parity_ratio": (0.25, 0.75)}},
    })
    assert typed.task.accuracy == 0.5 and type(typed.task.n_examples) is int
    assert typed.task.labels is None and typed.audit is None  # missing: None, never a default
    # NaN is null; a string is not a number and is dropped; a tuple is a list
    assert typed.fairness.disparities == {"demographic_parity_ratio": None}
    assert typed.fairness.disparity_intervals == {"demographic_parity_ratio": [0.25, 0.75]}
    assert as_result(typed) is typed
