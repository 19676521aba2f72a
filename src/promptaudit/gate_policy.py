"""The organisation's gate policy: thresholds the CI job owns, not the audit's authors.

A policy file (YAML, data only) is kept where the people who run an audit cannot
change it (a protected branch)::

    inconclusive: fail            # fail | pass
    require_signature: true       # the result must carry a valid PROMPTAUDIT_SIGNING_KEY signature
    gates:                        # required: a result whose run lacks one fails
      - {metric: demographic_parity_ratio, min: 0.8}
      - {metric: min_impact_ratio, min: 0.8}

:func:`check_result_against_policy` re-evaluates the result's recorded figures and
intervals against the policy's gates (through :func:`promptaudit.gates.evaluate_gates`,
the same rule ``run`` uses) and compares the run's own gate settings with the policy's.
The run counts as *weaker* (and the check fails) when

- its ``gate_policy.inconclusive`` is ``pass`` where the policy says ``fail``;
- one of the policy's gates is missing from the run (no gate on that metric, side and
  feature; a worst-value gate covers a feature gate, never the other way round);
- the run's threshold on that gate is looser (a lower ``min``, a higher ``max``);
- the policy reads the interval's conservative end (``use_bound: true``) and the run
  read the point value.

Stricter run settings are fine. The verdict is the policy's: the run's own gates
decide nothing here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptaudit.errors import SpecError
from promptaudit.result import AuditResult, as_result
from promptaudit.result_sections import SpecRecord
from promptaudit.spec import GateSpec, InconclusivePolicy, safe_load_bounded

__all__ = [
    "GatePolicy",
    "load_gate_policy",
    "parse_gate_policy",
    "check_result_against_policy",
    "run_setting_differences",
]

#: Largest policy file read (bytes).
MAX_POLICY_BYTES = 256 * 1024


class GatePolicy(BaseModel):
    """A gate policy: ``inconclusive``, ``require_signature`` and the required ``gates``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inconclusive: InconclusivePolicy = InconclusivePolicy.FAIL
    require_signature: bool = Field(False, strict=True)
    gates: list[GateSpec] = Field(min_length=1)


def load_gate_policy(path: str | Path) -> GatePolicy:
    """Read and validate a policy YAML file (``yaml.safe_load`` semantics, no code).

    Raises
    ------
    SpecError
        One line naming the file and the key or value at fault (an unknown key names
        the nearest allowed one).
    """
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: gate policy file not found")
    if path.is_dir():
        raise SpecError(f"{path}: is a directory; expected a gate policy YAML file")
    if path.stat().st_size > MAX_POLICY_BYTES:
        raise SpecError(f"{path}: larger than {MAX_POLICY_BYTES} bytes; not a gate policy")
    try:
        raw = safe_load_bounded(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not valid UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: YAML error{where}: {problem}") from None
    return parse_gate_policy(raw, source=str(path))


def parse_gate_policy(raw: Any, *, source: str = "policy") -> GatePolicy:
    """Validate a policy mapping into a :class:`GatePolicy` (one-line :class:`SpecError`)."""
    if not isinstance(raw, dict):
        shown = "nothing" if raw is None else type(raw).__name__
        raise SpecError(
            f"{source}: expected a mapping with inconclusive, require_signature and gates; "
            f"got {shown}"
        )
    try:
        return GatePolicy.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_describe(exc.errors()[0])}") from None


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    dotted = ".".join(loc)
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        model = GateSpec if len(loc) > 1 and loc[0] == "gates" else GatePolicy
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key {dotted!r}{hint}; allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return f"missing required key {dotted!r}"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "too_short" and loc == ["gates"]:
        return "gates: give at least one required gate"
    if kind in ("value_error", "assertion_error"):
        return f"{dotted}: {message}" if dotted else message
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return f"{dotted or 'policy'}: {message} (got {shown})"


# ------------------------------------------------------------------ comparing settings


def _gate_sides(gate: GateSpec) -> list[tuple[str, float]]:
    return [(side, float(value)) for side, value in (("min", gate.min), ("max", gate.max))
            if value is not None]


def _describe_gate(metric: str, feature: str | None, side: str, value: float,
                   use_bound: bool) -> str:
    where = f" for {feature}" if feature else ""
    bound = ", use_bound: true" if use_bound else ""
    return f"{metric}{where} {side}: {value:g}{bound}"


def _weaker_inconclusive(spec: SpecRecord | None, policy: GatePolicy) -> list[dict]:
    """The run let an inconclusive gate pass where the policy fails it."""
    gate_policy = None if spec is None else spec.gate_policy
    run = str((None if gate_policy is None else gate_policy.inconclusive) or "fail")
    if policy.inconclusive is not InconclusivePolicy.FAIL or run == "fail":
        return []
    return [{
        "kind": "inconclusive",
        "run": f"gate_policy.inconclusive: {run}",
        "policy": "inconclusive: fail",
        "message": (
            f"the run set gate_policy.inconclusive: {run}; the policy "
            "requires inconclusive: fail (an uncertain gate must fail)"
        ),
    }]


def _run_gates(spec: SpecRecord | None) -> list[GateSpec]:
    """The run's own gates; an unreadable one covers nothing."""
    out = []
    for entry in (None if spec is None else spec.gates) or []:
        try:
            out.append(GateSpec.model_validate(entry.to_dict()))
        except ValidationError:
            continue
    return out


def _weaker_gate(required: GateSpec, side: str, threshold: float,
                 run_gates: list[GateSpec]) -> dict | None:
    """How the run's gates on ``required``'s metric, side and feature fall short of it, if so."""
    wanted = _describe_gate(required.metric, required.feature, side, threshold,
                            required.use_bound)
    covering = [
        (gate, value) for gate in run_gates for s, value in _gate_sides(gate)
        if gate.metric == required.metric and s == side
        and (gate.feature is None or gate.feature == required.feature)
    ]
    if not covering:
        return {
            "kind": "missing",
            "run": None,
            "policy": wanted,
            "message": f"the run has no gate {required.metric}"
            f"{' for ' + required.feature if required.feature else ''} {side}; "
            f"the policy requires {wanted}",
        }
    sign = 1.0 if side == "min" else -1.0
    gate, value = max(covering, key=lambda item: (sign * item[1], item[0].use_bound))
    shown = _describe_gate(gate.metric, gate.feature, side, value, gate.use_bound)
    if value < threshold if side == "min" else value > threshold:
        return {"kind": "threshold", "run": shown, "policy": wanted,
                "message": f"the run's gate {shown} is looser than the policy's {wanted}"}
    if required.use_bound and not any(
        g.use_bound and (v >= threshold if side == "min" else v <= threshold)
        for g, v in covering
    ):
        return {"kind": "use_bound", "run": shown, "policy": wanted, "message": (
            f"the run's gate {shown} reads the point value; the policy's {wanted} "
            "reads the interval's conservative end"
        )}
    return None


def run_setting_differences(result: AuditResult | Mapping[str, Any],
                            policy: GatePolicy) -> list[dict]:
    """Where the run's own gate settings are weaker than the policy's.

    Parameters
    ----------
    result : AuditResult or mapping
        The result (its ``audit.spec`` holds the run's gates and ``gate_policy``); a
        mapping is read leniently.
    policy : GatePolicy

    Returns
    -------
    list of dict
        One entry per weaker setting: ``kind`` (``inconclusive``, ``missing``,
        ``threshold``, ``use_bound``), ``run`` (the run's setting, or None when
        missing), ``policy`` (the policy's setting) and ``message`` naming both.
    """
    audit = as_result(result).audit
    spec = None if audit is None else audit.spec
    run_gates = _run_gates(spec)
    found = [_weaker_gate(required, side, threshold, run_gates)
             for required in policy.gates for side, threshold in _gate_sides(required)]
    return _weaker_inconclusive(spec, policy) + [entry for entry in found if entry is not None]


def check_result_against_policy(result: AuditResult | Mapping[str, Any],
                                policy: GatePolicy) -> dict:
    """Re-evaluate a result against the organisation's policy.

    Parameters
    ----------
    result : AuditResult or mapping
        A result JSON object whose checksum (and signature, where the policy asks for
        one) the caller has verified (:func:`promptaudit.result.read_result_json`).
    policy : GatePolicy

    Returns
    -------
    dict
        ``gates`` (the policy's gates evaluated on the recorded figures, entries as
        :func:`promptaudit.gates.evaluate_gates` returns them), ``weaker`` (from
        :func:`run_setting_differences`), ``gates_passed`` (every policy gate passes
        under the policy's ``inconclusive``) and ``passed`` (``gates_passed`` and no
        weaker run setting).
    """
    from promptaudit.gates import evaluate_gates

    result = as_result(result)
    gates = evaluate_gates(policy.gates, result, inconclusive=policy.inconclusive)
    weaker = run_setting_differences(result, policy)
    gates_passed = all(entry["passed"] for entry in gates)
    return {
        "gates": gates,
        "weaker": weaker,
        "gates_passed": gates_passed,
        "passed": gates_passed and not weaker,
    }
