"""Turn thresholds into verdicts. Pure functions: nothing here exits or prints.

A gate reads the worst value over sensitive features (the intersection
included) unless it names a ``feature``. Every gate entry has a ``status``:

- ``pass``: the threshold is met, and where the metric has a bootstrap interval,
  the whole interval meets it (for a gate on the worst value: every feature's
  interval does).
- ``fail``: the threshold is missed, and the interval (if any) lies wholly on the
  failing side; or the metric is undefined or was not computed (an audit must
  not pass on missing evidence).
- ``inconclusive``: the interval straddles the threshold, so the data cannot
  say which side the true value is on; or the point value passes but its
  interval could not be computed (too few resamples). The entry then carries
  ``rows_to_decide``, an estimate of the evaluation rows (tuples, for the flip
  rate) that would decide it (:func:`rows_to_decide`).

``passed`` (bool) follows ``status`` and the spec's ``gate_policy.inconclusive``:
``fail`` (the default: an audit tool fails closed) or ``pass``.

With ``use_bound`` a gate reads the conservative end of the interval instead of
the point value: the upper bound for a ``max`` gate, the lower bound for a
``min`` gate, taken over every feature (the most conservative one) unless the
gate names a feature. Such a gate decides on that bound alone (``pass`` or
``fail``, never inconclusive), and fails when an interval is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

from pydantic import ValidationError

from promptaudit.choices import GateStatus
from promptaudit.errors import SpecError
from promptaudit.result_types import GateResult
from promptaudit.spec import GATE_METRICS, GateSpec, InconclusivePolicy

__all__ = ["GateStatus", "evaluate_gates", "metric_value", "rows_to_decide", "policy_of"]

#: Power of the :func:`rows_to_decide` estimate.
DECISION_POWER = 0.8


def metric_value(
    result: dict, metric: str, *, feature: str | None = None
) -> tuple[float | None, list | None]:
    """Point value and bootstrap interval of a gate metric in a result dict.

    Returns
    -------
    (value, interval)
        ``value`` is None where the metric was not computed or is undefined;
        ``interval`` is ``[lo, hi]`` or None.
    """
    section, key, _ = GATE_METRICS[metric]
    fairness = result.get("fairness") or {}
    if section == "task":
        task = result.get("task") or {}
        competence = task.get("competence") or {}
        interval = None
        if metric == "balanced_accuracy":
            interval = competence.get("accuracy_interval")
        elif metric == "accuracy_over_baseline":
            interval = competence.get("accuracy_over_baseline_interval")
        value = task.get(key)
        if value is None and metric == "accuracy_over_baseline":
            value = competence.get("accuracy_over_baseline")
        return _number(value), _pair(interval)
    if section == "bias_audit":  # None when not computed or any table has no defined ratio
        bias_audit = result.get("bias_audit") or {}
        return _number(bias_audit.get(key)), _pair(bias_audit.get(f"{key}_interval"))
    if section == "counterfactual":
        counterfactual = fairness.get("counterfactual") or {}
        interval = counterfactual.get("flip_rate_interval") if key == "flip_rate" else None
        return _number(counterfactual.get(key)), _pair(interval)
    if feature is None:
        block = fairness
    else:
        block = ((fairness.get("by_feature") or {}).get(feature)) or {}
    value = _number((block.get("disparities") or {}).get(key))
    interval = (block.get("disparity_intervals") or {}).get(key)
    return value, _pair(interval)


def rows_to_decide(
    value: float, end: float, threshold: float, n: int, *, confidence: float
) -> int | None:
    """Rows an interval would need to stop straddling ``threshold`` (a power estimate).

    The interval's half-width on the threshold's side, ``h = |value - end|``, is
    read as ``z * se`` with ``z`` the normal quantile of the two-sided
    ``confidence``; a standard error shrinks as ``1 / sqrt(n)``. If the true value
    were the observed one, an interval would exclude the threshold with
    probability :data:`DECISION_POWER` (80%) once ``|value - threshold| >=
    (z + z_power) * se``, that is at

        n' = n * ((z + z_power) * h / (z * |value - threshold|)) ** 2

    rows (``n'`` rounded up, at least ``n + 1``). This reads the observed rates
    and their bootstrap spread as the truth, so it is a planning figure, not a
    guarantee; ``None`` when ``value == threshold`` (no sample size decides it).

    Examples
    --------
    >>> rows_to_decide(0.85, 0.75, 0.8, 100, confidence=0.95)
    818
    """
    gap = abs(value - threshold)
    half = abs(value - end)
    if gap == 0 or not math.isfinite(gap) or n <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    z_power = NormalDist().inv_cdf(DECISION_POWER)
    needed = n * ((z + z_power) * half / (z * gap)) ** 2
    return max(n + 1, math.ceil(round(needed, 6)))


def policy_of(spec: Mapping[str, Any] | None) -> str:
    """The ``gate_policy.inconclusive`` of a resolved spec dict (default ``fail``)."""
    policy = ((spec or {}).get("gate_policy") or {}).get("inconclusive")
    return str(policy or InconclusivePolicy.FAIL.value)


def evaluate_gates(
    gates: Sequence[GateSpec | dict],
    result: dict,
    *,
    inconclusive: str | InconclusivePolicy = InconclusivePolicy.FAIL,
) -> list[dict]:
    """Evaluate each gate against ``result``.

    Parameters
    ----------
    gates : sequence of GateSpec or dict
        The spec's gates.
    result : dict
        A result dict (``task``, ``fairness``; ``fairness.bootstrap`` tells
        whether intervals were asked for).
    inconclusive : {"fail", "pass"}
        What an inconclusive gate's ``passed`` is (``gate_policy.inconclusive``).

    Returns
    -------
    list of dict
        One entry per threshold: ``metric``, ``feature``, ``op`` (``>=`` or
        ``<=``), ``threshold``, ``value`` (the number compared), ``bound``
        (``point``, ``lower`` or ``upper``), ``interval`` (the interval read, or
        None), ``status`` (``pass``, ``fail``, ``inconclusive``), ``passed``,
        ``rows_to_decide`` and ``rows_unit`` (for inconclusive gates) and a
        ``message``.

    Raises
    ------
    SpecError
        A gate given as a dict that is not a valid gate (unknown metric or key,
        no threshold, ...), named by its index: ``gates.1.metric: ...``; or an
        unknown ``inconclusive`` policy.
    """
    try:
        policy = InconclusivePolicy(str(getattr(inconclusive, "value", inconclusive)))
    except ValueError:
        raise SpecError(
            f"gate_policy.inconclusive: {inconclusive!r} is not allowed; allowed: fail, pass"
        ) from None
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
        for op, threshold in ((">=", gate.min), ("<=", gate.max)):
            if threshold is None:
                continue
            out.append(_mark_point_only(_verdict(gate, op, float(threshold), result, policy)))
    return out


def _mark_point_only(entry: dict) -> dict:
    """Say so in the gate line when the metric has no interval by definition.

    Every gate metric states its uncertainty the same way: an interval, or this
    explicit marker (``point_only``), so a reader never mistakes a point verdict for
    one that weighed the uncertainty.
    """
    from promptaudit.spec import INTERVAL_GATE_METRICS

    if entry["metric"] not in INTERVAL_GATE_METRICS:
        entry["point_only"] = True
        entry["message"] += " (point-only metric: it has no interval)"
    return entry


# --------------------------------------------------------------------- one verdict


def _verdict(
    gate: GateSpec, op: str, threshold: float, result: dict, policy: InconclusivePolicy
) -> dict:
    section = GATE_METRICS[gate.metric][0]
    point, interval = metric_value(result, gate.metric, feature=gate.feature)
    candidates = _candidates(result, gate, point, interval)
    expected = _intervals_expected(result, gate.metric)
    confidence = _confidence(result, section)
    n, unit = _sample_size(result, section)

    def meets(x: float) -> bool:
        return x >= threshold if op == ">=" else x <= threshold

    bound = "point"
    value = point
    reason = None
    rows = None
    if gate.use_bound:
        bound = "lower" if op == ">=" else "upper"
        value = _conservative_end(candidates, op)
        status = GateStatus.PASS if value is not None and meets(value) else GateStatus.FAIL
        if value is None:
            reason = "no interval" if point is not None else _missing_reason(result, gate)
    elif point is None:
        status = GateStatus.FAIL
        reason = _missing_reason(result, gate)
    else:
        status, reason = _status_with_uncertainty(
            point, candidates, op, threshold, expected, meets
        )
        if status == GateStatus.INCONCLUSIVE and n:
            rows = _rows_for(candidates, op, threshold, n, confidence, meets)
    passed = status == GateStatus.PASS or (
        status == GateStatus.INCONCLUSIVE and policy is InconclusivePolicy.PASS
    )
    shown_interval = interval
    if gate.feature is None and section == "disparities" and gate.use_bound:
        shown_interval = None
    return GateResult(
        metric=gate.metric,
        feature=gate.feature,
        op=op,
        threshold=threshold,
        value=value,
        bound=bound,
        interval=shown_interval,
        status=status,
        passed=bool(passed),
        rows_to_decide=rows,
        rows_unit=unit if status == GateStatus.INCONCLUSIVE else None,
        message=_message(
            gate, op, threshold, value, bound, status, passed, reason, interval,
            confidence, rows, unit, policy,
        ),
    ).to_dict()


def _candidates(
    result: dict, gate: GateSpec, point: float | None, interval: list | None
) -> list[tuple[float | None, list | None]]:
    """``(value, interval)`` of every feature a worst-value gate stands for."""
    section = GATE_METRICS[gate.metric][0]
    by_feature = (result.get("fairness") or {}).get("by_feature") or {}
    if section != "disparities" or gate.feature is not None or not by_feature:
        return [(point, interval)]
    key = GATE_METRICS[gate.metric][1]
    out = []
    for name, block in by_feature.items():
        block = block or {}
        value = _number((block.get("disparities") or {}).get(key))
        if key not in (block.get("disparities") or {}):
            continue
        out.append((value, _pair((block.get("disparity_intervals") or {}).get(key)), str(name)))
    return out or [(point, interval)]


def _conservative_end(candidates: list[tuple[float | None, list | None]], op: str) -> float | None:
    """Lowest lower bound (min gate) or highest upper bound (max gate); None if one is missing."""
    ends = []
    for _, interval, *_ in candidates:
        if interval is None:
            return None
        ends.append(interval[0] if op == ">=" else interval[1])
    if not ends:
        return None
    return min(ends) if op == ">=" else max(ends)


def _status_with_uncertainty(point, candidates, op, threshold, expected, meets):
    if not meets(point):
        worst = next(
            (c for c in candidates if c[0] == point and c[1] is not None), None
        )
        if worst is not None and meets(worst[1][1] if op == ">=" else worst[1][0]):
            return GateStatus.INCONCLUSIVE, _straddle(worst)
        return GateStatus.FAIL, None
    if not expected:
        return GateStatus.PASS, None
    straddling = []
    for candidate in candidates:
        value, interval = candidate[0], candidate[1]
        if value is None:
            continue
        if interval is None:
            where = f" for {candidate[2]}" if len(candidate) > 2 else ""
            return GateStatus.INCONCLUSIVE, f"no interval{where}"
        if not meets(interval[0] if op == ">=" else interval[1]):
            straddling.append(candidate)
    if straddling:  # every undecided feature is named: rows_to_decide is the most any needs
        return GateStatus.INCONCLUSIVE, _straddle(*straddling)
    return GateStatus.PASS, None


#: Separates the features of a ``straddles:`` reason (never in a formatted number).
_ITEM = "\x1f"


def _straddle(*candidates: tuple) -> str:
    items = []
    for candidate in candidates:
        value, interval = candidate[0], candidate[1]
        where = f"{candidate[2]} ({value:.4g})" if len(candidate) > 2 else ""
        items.append(f"{where}|[{interval[0]:.4g}, {interval[1]:.4g}]")
    return "straddles:" + _ITEM.join(items)


def _rows_for(candidates, op, threshold, n, confidence, meets) -> int | None:
    """Most rows any undecided feature needs (None when one cannot be decided)."""
    needed = []
    for value, interval, *_ in candidates:
        if value is None or interval is None:
            continue
        lo, hi = interval
        if meets(lo) == meets(hi):
            continue  # decided
        end = (lo if op == ">=" else hi) if meets(value) else (hi if op == ">=" else lo)
        rows = rows_to_decide(value, end, threshold, n, confidence=confidence)
        if rows is None:
            return None
        needed.append(rows)
    return max(needed) if needed else None


def _intervals_expected(result: dict, metric: str) -> bool:
    """Whether the audit asked for intervals that this metric should have."""
    from promptaudit.spec import INTERVAL_GATE_METRICS

    if metric not in INTERVAL_GATE_METRICS:
        return False
    fairness = result.get("fairness") or {}
    bootstrap = fairness.get("bootstrap")
    if bootstrap is None:
        spec = (result.get("audit") or {}).get("spec") or {}
        bootstrap = (spec.get("fairness") or {}).get("bootstrap", 0)
    return isinstance(bootstrap, int) and not isinstance(bootstrap, bool) and bootstrap > 0


def _confidence(result: dict, section: str) -> float:
    fairness = result.get("fairness") or {}
    sources = [fairness.get("confidence")]
    if section == "counterfactual":
        sources.insert(0, (fairness.get("counterfactual") or {}).get("confidence"))
    if section == "task":
        sources.insert(0, ((result.get("task") or {}).get("competence") or {}).get("confidence"))
    spec = (result.get("audit") or {}).get("spec") or {}
    sources.append((spec.get("fairness") or {}).get("confidence"))
    for value in sources:
        number = _number(value)
        if number is not None and 0 < number < 1:
            return number
    return 0.95


def _sample_size(result: dict, section: str) -> tuple[int | None, str]:
    if section == "counterfactual":
        counterfactual = (result.get("fairness") or {}).get("counterfactual") or {}
        n = counterfactual.get("n_tuples")
        return (n if isinstance(n, int) else None), "tuples"
    n = (result.get("task") or {}).get("n_examples")
    return (n if isinstance(n, int) else None), "rows"


def _missing_reason(result: dict, gate: GateSpec) -> str:
    section, key, _ = GATE_METRICS[gate.metric]
    fairness = result.get("fairness") or {}
    if section == "disparities":
        if gate.feature is None:
            reasons = fairness.get("undefined") or {}
        else:
            reasons = ((fairness.get("by_feature") or {}).get(gate.feature) or {}).get(
                "undefined"
            ) or {}
        if key in reasons:
            return f"undefined: {reasons[key]}"
    if section == "task" and key == "accuracy_over_baseline":
        competence = (result.get("task") or {}).get("competence") or {}
        if competence.get("reason"):
            return f"not computed: {competence['reason']}"
    return "not computed"


def _message(
    gate, op, threshold, value, bound, status, passed, reason, interval,
    confidence, rows, unit, policy,
) -> str:
    if GATE_METRICS[gate.metric][0] != "disparities":
        where = ""
    else:
        where = f" for {gate.feature}" if gate.feature else " (worst over features)"
    if value is None:
        shown = reason or "not computed"
        return f"{gate.metric}{where} = {shown} ({bound}) FAILS {op} {threshold:g}"
    head = f"{gate.metric}{where} = {value:.4g} ({bound})"
    if status == GateStatus.PASS:
        return f"{head} passes {op} {threshold:g}"
    if status == GateStatus.FAIL:
        return f"{head} FAILS {op} {threshold:g}"
    level = f"{round(100 * confidence, 4):g}%"
    if reason and reason.startswith("no interval"):
        where = reason.removeprefix("no interval")
        why = f"the {level} interval{where} could not be computed (too few bootstrap resamples)"
    elif reason and reason.startswith("straddles:"):
        items = [item.rpartition("|") for item in reason.removeprefix("straddles:").split(_ITEM)]
        if len(items) > 1:
            named = "; ".join(f"{where} {shown}" for where, _, shown in items)
            why = f"{level} intervals straddle it for {named}"
        elif items[0][0]:
            why = f"{items[0][0]} has a {level} interval {items[0][2]} that straddles it"
        else:
            why = f"its {level} interval {items[0][2]} straddles it"
    else:
        why = f"a {level} interval straddles it"
    decide = ""
    if rows is not None:
        decide = f"; about {rows} {unit} would decide it"
    counted = "passes" if passed else "fails"
    return (
        f"{head} is INCONCLUSIVE against {op} {threshold:g}: {why}{decide}; "
        f"{counted} under gate_policy.inconclusive: {policy.value}"
    )


def _pair(value: Any) -> list[float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    lo, hi = _number(value[0]), _number(value[1])
    return None if lo is None or hi is None else [lo, hi]


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number
