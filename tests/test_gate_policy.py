"""`gate --policy`: the organisation's thresholds, not the run's, on hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audit_helpers import HAND_MADE_FAIRNESS, HAND_MADE_PROVENANCE, HAND_MADE_TASK
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.errors import SpecError
from promptaudit.gate_policy import (
    check_result_against_policy,
    load_gate_policy,
    parse_gate_policy,
    run_setting_differences,
)
from promptaudit.result import AuditResult

runner = CliRunner()

#: demographic_parity_ratio 0.75 with interval [0.70, 0.86]: straddles 0.8 (inconclusive).
FAIRNESS = {
    **HAND_MADE_FAIRNESS,
    "sensitive_features": ["gender"],
    "by_feature": {
        "gender": {
            "by_group": {},
            "intervals": None,
            "small_groups": [],
            "disparities": {"demographic_parity_ratio": 0.75},
            "disparity_intervals": {"demographic_parity_ratio": [0.70, 0.86]},
        }
    },
    "disparities": {"demographic_parity_ratio": 0.75},
    "disparity_intervals": {"demographic_parity_ratio": [0.70, 0.86]},
    "bootstrap": 1000,
    "confidence": 0.95,
}


def _result(*, gates: list[dict], inconclusive: str = "fail", key: bytes | None = None) -> dict:
    from promptaudit.gates import evaluate_gates

    spec = {"name": "r", "gates": gates, "gate_policy": {"inconclusive": inconclusive}}
    partial = {"fairness": FAIRNESS, "task": HAND_MADE_TASK}
    entries = evaluate_gates(gates, partial, inconclusive=inconclusive)
    return AuditResult(
        audit={"name": "r", "spec": spec},
        provenance=HAND_MADE_PROVENANCE,
        task=HAND_MADE_TASK,
        fairness=FAIRNESS,
        gates=entries,
        passed=all(entry["passed"] for entry in entries),
    ).to_dict(signing_key=key)


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else data, encoding="utf-8")
    return path


POLICY_YAML = """\
inconclusive: fail
require_signature: false
gates:
  - {metric: demographic_parity_ratio, min: 0.8}
"""


def _gate(tmp_path, result: dict, policy: str = POLICY_YAML, env: dict | None = None):
    result_path = _write(tmp_path, "result.json", result)
    policy_path = _write(tmp_path, "policy.yaml", policy)
    return runner.invoke(
        app, ["gate", str(result_path), "--policy", str(policy_path)], env=env or {}
    )


def test_relaxed_inconclusive_passes_alone_but_fails_the_policy_naming_both(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMPTAUDIT_SIGNING_KEY", raising=False)
    result = _result(gates=[{"metric": "demographic_parity_ratio", "min": 0.8}],
                     inconclusive="pass")
    assert result["passed"] is True  # the run's own relaxed policy passes it
    path = _write(tmp_path, "result.json", result)
    assert runner.invoke(app, ["gate", str(path)]).exit_code == 0  # as today without --policy
    out = _gate(tmp_path, result)
    assert out.exit_code == 1, out.output
    assert "gate_policy.inconclusive: pass" in out.output
    assert "the policy requires inconclusive: fail" in out.output
    assert "INCONCLUSIVE  demographic_parity_ratio" in out.output
    assert "under the policy's inconclusive: fail" in out.output


def test_a_looser_run_threshold_fails_naming_both_thresholds(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMPTAUDIT_SIGNING_KEY", raising=False)
    result = _result(gates=[{"metric": "demographic_parity_ratio", "min": 0.6}])
    loose_policy = POLICY_YAML.replace("min: 0.8", "min: 0.65")  # the figures pass this
    out = _gate(tmp_path, result, loose_policy)
    assert out.exit_code == 1, out.output
    assert ("the run's gate demographic_parity_ratio min: 0.6 is looser than the policy's "
            "demographic_parity_ratio min: 0.65") in out.output
    assert "PASS  demographic_parity_ratio" in out.output


def test_a_missing_required_gate_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMPTAUDIT_SIGNING_KEY", raising=False)
    result = _result(gates=[{"metric": "demographic_parity_ratio", "min": 0.6}])
    policy = POLICY_YAML.replace("min: 0.8}", "min: 0.6}") + (
        "  - {metric: demographic_parity_difference, max: 0.1}\n"
    )
    out = _gate(tmp_path, result, policy)
    assert out.exit_code == 1, out.output
    assert ("MISSING  the run has no gate demographic_parity_difference max; the policy "
            "requires demographic_parity_difference max: 0.1") in out.output


def test_a_run_as_strict_as_the_policy_passes(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMPTAUDIT_SIGNING_KEY", raising=False)
    result = _result(gates=[{"metric": "demographic_parity_ratio", "min": 0.7}])
    policy = POLICY_YAML.replace("min: 0.8}", "min: 0.65}")
    out = _gate(tmp_path, result, policy)
    assert out.exit_code == 0, out.output
    assert "all policy gates pass" in out.output


def test_policy_gates_decide_not_the_run_gates():
    """The policy's 0.8 threshold is re-evaluated on the recorded interval [0.70, 0.86]."""
    result = _result(gates=[{"metric": "demographic_parity_ratio", "min": 0.8}])
    policy = parse_gate_policy({"inconclusive": "pass", "gates": [
        {"metric": "demographic_parity_ratio", "min": 0.8}]})
    check = check_result_against_policy(result, policy)
    assert [g["status"] for g in check["gates"]] == ["inconclusive"]
    assert check["passed"] is True and check["weaker"] == []
    strict = parse_gate_policy({"gates": [{"metric": "demographic_parity_ratio", "min": 0.9}]})
    check = check_result_against_policy(result, strict)
    assert [g["status"] for g in check["gates"]] == ["fail"]  # the whole interval is below 0.9
    assert check["passed"] is False


def test_use_bound_and_feature_gates_are_compared():
    result = _result(
        gates=[{"metric": "demographic_parity_ratio", "min": 0.8, "feature": "gender"}])
    policy = parse_gate_policy({"gates": [{"metric": "demographic_parity_ratio", "min": 0.8}]})
    kinds = [d["kind"] for d in run_setting_differences(result, policy)]
    assert kinds == ["missing"]  # a feature gate does not cover the worst value
    result = _result(gates=[{"metric": "demographic_parity_ratio", "min": 0.8}])
    policy = parse_gate_policy({"gates": [
        {"metric": "demographic_parity_ratio", "min": 0.8, "use_bound": True},
        {"metric": "demographic_parity_ratio", "min": 0.8, "feature": "gender"},
    ]})
    differences = run_setting_differences(result, policy)
    assert [d["kind"] for d in differences] == ["use_bound"]  # worst value covers the feature
    assert "use_bound: true" in differences[0]["message"]


def test_require_signature_needs_the_key_and_a_valid_signature(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMPTAUDIT_SIGNING_KEY", raising=False)
    gates = [{"metric": "demographic_parity_ratio", "min": 0.7}]
    policy = POLICY_YAML.replace("require_signature: false", "require_signature: true").replace(
        "min: 0.8", "min: 0.7")
    unsigned = _result(gates=gates)
    out = _gate(tmp_path, unsigned, policy)
    assert out.exit_code == 2 and "PROMPTAUDIT_SIGNING_KEY is not set" in out.output
    out = _gate(tmp_path, unsigned, policy, env={"PROMPTAUDIT_SIGNING_KEY": "team-secret"})
    assert out.exit_code == 2 and "no integrity.hmac_sha256 signature" in out.output
    signed_other = _result(gates=gates, key=b"other-key")
    out = _gate(tmp_path, signed_other, policy, env={"PROMPTAUDIT_SIGNING_KEY": "team-secret"})
    assert out.exit_code == 2 and "signature is wrong" in out.output
    signed = _result(gates=gates, key=b"team-secret")
    out = _gate(tmp_path, signed, policy, env={"PROMPTAUDIT_SIGNING_KEY": "team-secret"})
    assert out.exit_code == 0, out.output
    assert "signature verified" in out.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inconclusiv: fail\ngates: [{metric: accuracy, min: 0.5}]\n",
         "unknown key 'inconclusiv' (did you mean 'inconclusive'?)"),
        ("gates: [{metric: accuracy, mni: 0.5}]\n",
         "unknown key 'gates.0.mni' (did you mean 'min'?)"),
        ("gates: [{metric: acuracy, min: 0.5}]\n", "did you mean 'accuracy'?"),
        ("inconclusive: maybe\ngates: [{metric: accuracy, min: 0.5}]\n", "inconclusive"),
        ("gates: []\n", "gates: give at least one required gate"),
        ("require_signature: 'yes please'\ngates: [{metric: accuracy, min: 0.5}]\n",
         "require_signature"),
        ("- just a list\n", "expected a mapping"),
        ("gates: [{metric: accuracy, min: !!python/object:os.system x}]\n", "YAML error"),
    ],
)
def test_bad_policies_are_one_line_errors_with_exit_2(tmp_path, text, expected):
    path = _write(tmp_path, "policy.yaml", text)
    with pytest.raises(SpecError) as info:
        load_gate_policy(path)
    assert expected in str(info.value) and str(path) in str(info.value)
    result_path = _write(tmp_path, "result.json", _result(gates=[]))
    out = runner.invoke(app, ["gate", str(result_path), "--policy", str(path)])
    assert out.exit_code == 2 and out.output.count("\n") == 1 and expected in out.output
