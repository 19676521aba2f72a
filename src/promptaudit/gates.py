"""Turn thresholds into verdicts. Pure functions: nothing here exits or prints.

A gate on a disparity reads every sensitive feature (the intersection included)
unless it names a ``feature``; its ``value`` is the worst over them. Each feature
gets a status of its own (:func:`reading_status`):

- ``pass``: the threshold is met, and where the metric has a bootstrap interval,
  the whole interval meets it.
- ``fail``: the threshold is missed, and the interval (if any) lies wholly on the
  failing side; or the value is undefined or was not computed (an audit must
  not pass on missing evidence).
- ``inconclusive``: the interval straddles the threshold, so the data cannot
  say which side the true value is on; or the value passes but its interval
  could not be computed (too few resamples).

and the gate combines them (:func:`combined_status`, the three-state rule):
``fail`` when any feature fails decisively, else ``inconclusive`` when any
straddles, else ``pass`` (every feature passes decisively). A decisive failure is
never hidden behind an inconclusive worst feature. An inconclusive entry carries
``rows_to_decide``, an estimate of the evaluation rows (tuples, for the flip rate)
that would decide it (:func:`rows_to_decide`): the largest any inconclusive
feature needs, since the gate is decided only when all of them are.

Where a value is a ratio or difference of counted rates (disparities with their
``exact_disparities``, ``min_impact_ratio`` with its tables' counts), the point
value meets the threshold in exact rational arithmetic on the counts
(:mod:`promptaudit.ratios`): a ratio of exactly 4/5 passes ``min: 0.8``.
Interval ends are bootstrap quantiles and are compared as floats.

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
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from statistics import NormalDist
from typing import Any, NamedTuple

from pydantic import ValidationError

from promptaudit.choices import GateStatus
from promptaudit.errors import SpecError
from promptaudit.metrics import GATE_METRICS, disparity_block
from promptaudit.ratios import exact_threshold, rate_ratio
from promptaudit.result import AuditResult, as_result
from promptaudit.result_sections import BiasAuditResult, FeatureEntry, GateResult
from promptaudit.spec import GateSpec, InconclusivePolicy

__all__ = [
    "GateStatus",
    "Reading",
    "combined_status",
    "evaluate_gates",
    "metric_value",
    "policy_of",
    "reading_status",
    "rows_to_decide",
]

#: Power of the :func:`rows_to_decide` estimate.
DECISION_POWER = 0.8


class Reading(NamedTuple):
    """One figure a gate reads: a feature's (or the metric's) value and evidence.

    ``value`` is the point value (None: undefined or not computed), ``interval``
    its bootstrap interval ``[lo, hi]`` or None, ``feature`` the sensitive feature
    it belongs to (None for a metric without features) and ``exact`` the point value
    as an exact fraction of counts, where the result records one.
    """

    value: float | None
    interval: list[float] | None = None
    feature: str | None = None
    exact: Fraction | None = None


def _meets(x: float | Fraction, op: str, threshold: float | Fraction) -> bool:
    return x >= threshold if op == ">=" else x <= threshold


def reading_status(
    reading: Reading, op: str, threshold: float, *, interval_expected: bool
) -> GateStatus:
    """One feature's verdict against ``op threshold`` (``">="`` or ``"<="``).

    ``fail`` when the value is undefined, or it misses the threshold and its
    interval (if any) lies wholly on the failing side; ``inconclusive`` when the
    interval straddles the threshold, or the value passes but the interval that
    ``interval_expected`` asked for is missing; else ``pass``. The point value is
    compared exactly (``reading.exact`` against the threshold read as a decimal,
    :func:`promptaudit.ratios.exact_threshold`) when the reading has an exact value.

    Examples
    --------
    >>> reading_status(Reading(0.85, [0.75, 0.95]), ">=", 0.8, interval_expected=True).value
    'inconclusive'
    """
    if reading.value is None:
        return GateStatus.FAIL
    if reading.exact is not None:
        point_meets = _meets(reading.exact, op, exact_threshold(threshold))
    else:
        point_meets = _meets(reading.value, op, threshold)
    interval = reading.interval
    if point_meets:
        if interval is None:
            return GateStatus.INCONCLUSIVE if interval_expected else GateStatus.PASS
        conservative = interval[0] if op == ">=" else interval[1]
        return GateStatus.PASS if _meets(conservative, op, threshold) else GateStatus.INCONCLUSIVE
    if interval is None:
        return GateStatus.FAIL
    favourable = interval[1] if op == ">=" else interval[0]
    return GateStatus.INCONCLUSIVE if _meets(favourable, op, threshold) else GateStatus.FAIL


def combined_status(statuses: Iterable[GateStatus | str]) -> GateStatus:
    """The three-state rule: one verdict from the verdicts of every feature a gate reads.

    ``fail`` when any is ``fail`` (a decisive failure is never hidden behind an
    inconclusive feature), else ``inconclusive`` when any is, else ``pass``; no
    verdict at all is ``fail`` (nothing was checked).

    Examples
    --------
    >>> combined_status(["inconclusive", "fail", "pass"]).value
    'fail'
    >>> combined_status(["pass", "inconclusive"]).value, combined_status([]).value
    ('inconclusive', 'fail')
    """
    seen = {GateStatus(status) for status in statuses}
    if not seen or GateStatus.FAIL in seen:
        return GateStatus.FAIL
    if GateStatus.INCONCLUSIVE in seen:
        return GateStatus.INCONCLUSIVE
    return GateStatus.PASS


def metric_value(
    result: AuditResult | Mapping[str, Any], metric: str, *, feature: str | None = None
) -> tuple[float | None, list | None]:
    """Point value and bootstrap interval of a gate metric (:mod:`promptaudit.metrics`).

    Parameters
    ----------
    result : AuditResult or mapping
        The typed result, or a result dict (read leniently, :func:`promptaudit.result.as_result`).
    metric : str
    feature : str, optional
        For a disparity: that feature's value instead of the worst over features.

    Returns
    -------
    (value, interval)
        ``value`` is None where the metric was not computed or is undefined;
        ``interval`` is ``[lo, hi]`` or None.
    """
    result = as_result(result)
    spec = GATE_METRICS[metric]
    interval = None if spec.interval is None else spec.interval(result, feature)
    return _number(spec.value(result, feature)), _pair(interval)


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
    result: AuditResult | Mapping[str, Any],
    *,
    inconclusive: str | InconclusivePolicy = InconclusivePolicy.FAIL,
) -> list[dict]:
    """Evaluate each gate against ``result``.

    Parameters
    ----------
    gates : sequence of GateSpec or dict
        The spec's gates.
    result : AuditResult or mapping
        The typed result, or a result dict read leniently (``task``, ``fairness``;
        ``fairness.bootstrap`` tells whether intervals were asked for).
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
    result = as_result(result)
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
    if GATE_METRICS[entry["metric"]].point_only:
        entry["point_only"] = True
        entry["message"] += " (point-only metric: it has no interval)"
    return entry


# --------------------------------------------------------------------- one verdict


def _verdict(
    gate: GateSpec, op: str, threshold: float, result: AuditResult, policy: InconclusivePolicy
) -> dict:
    section = GATE_METRICS[gate.metric].family
    point, interval = metric_value(result, gate.metric, feature=gate.feature)
    readings = _readings(result, gate, point, interval)
    expected = _intervals_expected(result, gate.metric)
    confidence = _confidence(result, section)
    n, unit = _sample_size(result, section)

    bound = "point"
    value = point
    reason = None
    rows = None
    if gate.use_bound:
        # Each feature decides on its conservative end alone: a missing end fails.
        bound = "lower" if op == ">=" else "upper"
        ends = [
            Reading(None if r.interval is None else r.interval[0 if op == ">=" else 1])
            for r in readings
        ]
        status = combined_status(
            reading_status(end, op, threshold, interval_expected=False) for end in ends
        )
        value = _conservative_end(ends, op)
        if value is None:
            reason = "no interval" if point is not None else _missing_reason(result, gate)
    elif point is None:
        status = GateStatus.FAIL
        reason = _missing_reason(result, gate)
    else:
        statuses = [
            reading_status(r, op, threshold, interval_expected=expected) for r in readings
        ]
        status = combined_status(statuses)
        reason = _reason(readings, statuses, status, point)
        if status == GateStatus.INCONCLUSIVE and n:
            undecided = [
                r for r, s in zip(readings, statuses, strict=True)
                if s == GateStatus.INCONCLUSIVE
            ]
            rows = _rows_for(undecided, op, threshold, n, confidence)
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


def _readings(
    result: AuditResult, gate: GateSpec, point: float | None, interval: list | None
) -> list[Reading]:
    """Every figure the gate stands for: each feature's for a worst-value disparity gate."""
    family, key = GATE_METRICS[gate.metric].family, gate.metric
    if family == "bias_audit":
        return [Reading(point, interval, None, _exact_min_impact_ratio(result.bias_audit, point))]
    if family != "disparities":
        return [Reading(point, interval)]
    if gate.feature is not None:
        block = disparity_block(result, gate.feature)
        return [Reading(point, interval, None, _exact_disparity(block, key, point))]
    out = []
    by_feature = None if result.fairness is None else result.fairness.by_feature
    for name, block in (by_feature or {}).items():
        if key not in (block.disparities or {}):
            continue
        value = _number(block.disparities[key])
        out.append(Reading(value, _pair((block.disparity_intervals or {}).get(key)), str(name),
                           _exact_disparity(block, key, value)))
    return out or [Reading(point, interval)]


def _exact_disparity(block: FeatureEntry | None, key: str, value: float | None) -> Fraction | None:
    """``exact_disparities.<key>`` (``[numerator, denominator]``) of a feature, if recorded.

    Used only when it agrees with the float value (a result edited by hand keeps
    its float verdict rather than a stale exact one).
    """
    pair = None if block is None else (block.exact_disparities or {}).get(key)
    return _agreeing_fraction(pair, value)


def _exact_min_impact_ratio(audit: BiasAuditResult | None, value: float | None) -> Fraction | None:
    """The smallest impact ratio as a fraction of the tables' counts, if they hold them.

    Each table's ratio of a compared (not excluded) category is ``(n_selected / n) /
    (reference's n_selected / n)``; None when a table cannot be read that way.
    """
    if value is None or audit is None or not audit.tables:
        return None
    ratios = []
    for table in audit.tables.values():
        rows = table.rows or []
        reference = next((row for row in rows if row.group == table.reference_group), None)
        if reference is None:
            return None
        for row in rows:
            if row.excluded or row.impact_ratio is None:
                continue
            counts = [row.n_selected, row.n, reference.n_selected, reference.n]
            if not all(c is not None and c >= 0 for c in counts):
                return None
            ratio = rate_ratio(*counts)
            if ratio is None:
                return None
            ratios.append(ratio)
    if not ratios:
        return None
    return _agreeing_fraction(min(ratios), value)


def _agreeing_fraction(pair: Any, value: float | None) -> Fraction | None:
    if value is None or pair is None:
        return None
    if isinstance(pair, Fraction):
        exact = pair
    else:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            return None
        num, den = pair
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (num, den)) or den <= 0:
            return None
        exact = Fraction(num, den)
    return exact if math.isclose(float(exact), value, rel_tol=1e-9, abs_tol=1e-12) else None


def _conservative_end(ends: list[Reading], op: str) -> float | None:
    """Lowest lower bound (min gate) or highest upper bound (max gate); None if one is missing."""
    values = [end.value for end in ends]
    if not values or any(v is None for v in values):
        return None
    return min(values) if op == ">=" else max(values)


def _reason(
    readings: list[Reading], statuses: list[GateStatus], status: GateStatus, point: float
) -> str | None:
    """Why a gate is inconclusive or fails on a feature other than the one shown."""
    if status == GateStatus.PASS:
        return None
    chosen = [r for r, s in zip(readings, statuses, strict=True) if s == status]
    if status == GateStatus.FAIL:
        shown = [r for r in chosen if r.value == point]
        if shown or not any(r.feature for r in chosen):
            return None  # the value shown fails by itself
        return "decided:" + _ITEM.join(_item(r) for r in chosen)
    missing = [r for r in chosen if r.interval is None]
    if missing:
        where = f" for {missing[0].feature}" if missing[0].feature else ""
        return f"no interval{where}"
    return _straddle(*chosen)


#: Separates the features of a ``straddles:`` reason (never in a formatted number).
_ITEM = "\x1f"


def _item(reading: Reading) -> str:
    shown = "undefined" if reading.value is None else f"{reading.value:.4g}"
    where = f"{reading.feature} ({shown})" if reading.feature else ""
    if reading.interval is None or reading.value is None:
        return f"{where}|"
    return f"{where}|[{reading.interval[0]:.4g}, {reading.interval[1]:.4g}]"


def _straddle(*readings: Reading) -> str:
    return "straddles:" + _ITEM.join(_item(r) for r in readings)


def _rows_for(undecided: list[Reading], op, threshold, n, confidence) -> int | None:
    """Most rows any straddling feature needs (None when one cannot be decided)."""
    needed = []
    for value, interval, *_ in undecided:
        if value is None or interval is None:
            continue
        lo, hi = interval
        end = (lo if op == ">=" else hi) if _meets(value, op, threshold) else (
            hi if op == ">=" else lo
        )
        rows = rows_to_decide(value, end, threshold, n, confidence=confidence)
        if rows is None:
            return None
        needed.append(rows)
    return max(needed) if needed else None


def _spec_setting(result: AuditResult, section: str, key: str) -> Any:
    """``audit.spec.<section>.<key>`` as the run recorded it (None where absent)."""
    spec = None if result.audit is None else result.audit.spec
    block = None if spec is None else spec.extra.get(section)
    return block.get(key) if isinstance(block, Mapping) else None


def _intervals_expected(result: AuditResult, metric: str) -> bool:
    """Whether the audit asked for intervals that this metric should have."""
    if GATE_METRICS[metric].point_only:
        return False
    bootstrap = None if result.fairness is None else result.fairness.bootstrap
    if bootstrap is None:
        bootstrap = _spec_setting(result, "fairness", "bootstrap") or 0
    return isinstance(bootstrap, int) and not isinstance(bootstrap, bool) and bootstrap > 0


def _confidence(result: AuditResult, section: str) -> float:
    fairness = result.fairness
    sources = [None if fairness is None else fairness.confidence]
    if section == "counterfactual":
        sources.insert(0, _counterfactual(result, "confidence"))
    if section == "task":
        competence = None if result.task is None else result.task.competence
        sources.insert(0, None if competence is None else competence.confidence)
    sources.append(_spec_setting(result, "fairness", "confidence"))
    for value in sources:
        number = _number(value)
        if number is not None and 0 < number < 1:
            return number
    return 0.95


def _counterfactual(result: AuditResult, name: str) -> Any:
    counterfactual = None if result.fairness is None else result.fairness.counterfactual
    return None if counterfactual is None else getattr(counterfactual, name)


def _sample_size(result: AuditResult, section: str) -> tuple[int | None, str]:
    if section == "counterfactual":
        return _counterfactual(result, "n_tuples"), "tuples"
    return (None if result.task is None else result.task.n_examples), "rows"


def _missing_reason(result: AuditResult, gate: GateSpec) -> str:
    family = GATE_METRICS[gate.metric].family
    if family == "disparities":
        block = disparity_block(result, gate.feature)
        reasons = (None if block is None else block.undefined) or {}
        if gate.metric in reasons:
            return f"undefined: {reasons[gate.metric]}"
    if gate.metric == "accuracy_over_baseline":
        competence = None if result.task is None else result.task.competence
        if competence is not None and competence.reason:
            return f"not computed: {competence.reason}"
    return "not computed"


def _message(
    gate, op, threshold, value, bound, status, passed, reason, interval,
    confidence, rows, unit, policy,
) -> str:
    if GATE_METRICS[gate.metric].family != "disparities":
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
        if reason and reason.startswith("decided:"):
            items = [item.rpartition("|") for item in reason.removeprefix("decided:").split(_ITEM)]
            level = f"{round(100 * confidence, 4):g}%"
            named = "; ".join(
                f"{where} {f'(interval {shown}) ' if shown else ''}".rstrip()
                for where, _, shown in items
            )
            return (
                f"{head} FAILS {op} {threshold:g}: {named} "
                f"{'fails' if len(items) == 1 else 'fail'} it decisively "
                f"({level} intervals, where computed, wholly on the failing side)"
            )
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
