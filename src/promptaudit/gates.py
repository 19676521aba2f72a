"""Turn thresholds into verdicts. Pure functions: nothing here exits or prints.

A gate reads the worst value over sensitive features unless it names a
``feature``. With ``use_bound`` it reads the conservative end of the bootstrap
interval instead of the point value: the upper bound for a ``max`` gate, the
lower bound for a ``min`` gate. A metric that could not be computed fails its
gate (an audit must not pass on missing evidence), and so does a ``use_bound``
gate whose interval is missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import ValidationError

from promptaudit.errors import SpecError
from promptaudit.spec import GATE_METRICS, GateSpec

__all__ = ["evaluate_gates", "metric_value"]


def metric_value(
    result: dict, metric: str, *, feature: str | None = None
) -> tuple[float | None, list | None]:
    """Point value and bootstrap interval of a gate metric in a result dict.

    Returns
    -------
    (value, interval)
        ``value`` is None where the metric was not computed; ``interval`` is
        ``[lo, hi]`` or None.
    """
    section, key, _ = GATE_METRICS[metric]
    fairness = result.get("fairness") or {}
    if section == "task":
        return _number((result.get("task") or {}).get(key)), None
    if section == "bias_audit":  # None when not computed or any table has no defined ratio
        return _number((result.get("bias_audit") or {}).get(key)), None
    if section == "counterfactual":
        counterfactual = fairness.get("counterfactual") or {}
        return _number(counterfactual.get(key)), None
    if feature is None:
        block = fairness
    else:
        block = ((fairness.get("by_feature") or {}).get(feature)) or {}
    value = _number((block.get("disparities") or {}).get(key))
    interval = (block.get("disparity_intervals") or {}).get(key)
    return value, interval


def evaluate_gates(gates: Sequence[GateSpec | dict], result: dict) -> list[dict]:
    """Evaluate each gate against ``result``.

    Returns
    -------
    list of dict
        One entry per threshold: ``metric``, ``feature``, ``op`` (``>=`` or
        ``<=``), ``threshold``, ``value`` (the number compared), ``bound``
        (``point``, ``lower`` or ``upper``), ``passed`` and a ``message``.

    Raises
    ------
    SpecError
        A gate given as a dict that is not a valid gate (unknown metric or key,
        no threshold, ...), named by its index: ``gates.1.metric: ...``.
    """
    out = []
    for index, gate in enumerate(gates):
        if not isinstance(gate, GateSpec):
            try:
                gate = GateSpec.model_validate(gate)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in (index, *error.get("loc", ())))
                message = str(error.get("msg", "invalid gate")).removeprefix("Value error, ")
                raise SpecError(f"gates.{where}: {message}") from None
        point, interval = metric_value(result, gate.metric, feature=gate.feature)
        for op, threshold in ((">=", gate.min), ("<=", gate.max)):
            if threshold is None:
                continue
            bound = "point"
            value = point
            if gate.use_bound:
                # The conservative end; no interval means no evidence, so the gate fails.
                bound = "lower" if op == ">=" else "upper"
                ends = interval if interval and len(interval) == 2 else (None, None)
                value = _number(ends[0] if op == ">=" else ends[1])
            passed = value is not None and (
                value >= threshold if op == ">=" else value <= threshold
            )
            if GATE_METRICS[gate.metric][0] != "disparities":
                where = ""
            else:
                where = f" for {gate.feature}" if gate.feature else " (worst over features)"
            shown = "not computed" if value is None else f"{value:.4g}"
            verdict = "passes" if passed else "FAILS"
            out.append(
                {
                    "metric": gate.metric,
                    "feature": gate.feature,
                    "op": op,
                    "threshold": float(threshold),
                    "value": value,
                    "bound": bound,
                    "passed": bool(passed),
                    "message": (
                        f"{gate.metric}{where} = {shown} ({bound}) {verdict} {op} {threshold:g}"
                    ),
                }
            )
    return out


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number
