"""Bias-audit figures across audit periods (``promptaudit trend R1.json R2.json ...``).

:func:`compute_trend` reads the results of the *same* audit run on the data of successive
periods and gives, per bias-audit table and category, the rate and impact ratio of every
period with their intervals (Wilson; Katz log, :func:`promptaudit.stats.katz_interval`)
and the ``crossed_below`` / ``crossed_above`` / ``moved`` flags. The rules (which results
are alike, non-overlapping periods, which categories are compared) are in
docs/bias-audit.md (Audit periods); anything else is refused with an
:class:`~promptaudit.errors.InputError` naming the file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from promptaudit.errors import InputError
from promptaudit.stats import katz_interval, two_sided_z, wilson_interval

__all__ = ["compute_trend"]

FEW_MESSAGE = "trend: give at least two result files (one per audit period); got {n}"
NO_BIAS_AUDIT_MESSAGE = (
    "{source}: has no bias_audit section; trend compares bias-audit tables "
    "(add bias_audit: {{categories: [...]}} to the spec)"
)
NO_PERIOD_MESSAGE = (
    "{source}: audit.audit_info.{key} is missing; trend orders audits by their period "
    "(add audit_info: {{data_start: YYYY-MM-DD, data_end: YYYY-MM-DD}} to the spec)"
)
BAD_DATE_MESSAGE = "{source}: audit.audit_info.{key} is {value!r}; allowed: an ISO date YYYY-MM-DD"
NAME_MESSAGE = (
    "{source}: is audit {name!r}, but {first_source} is audit {first!r}; trend compares "
    "periods of one audit"
)
UNLIKE_MESSAGE = "{source}: not measured like {first_source}: {difference}"
SETTING_MESSAGE = (
    "{source}: bias_audit.{key} is {value!r}, but {first_source} has {first!r}; the "
    "periods are not measured alike"
)
OVERLAP_MESSAGE = (
    "{source}: its period {period} overlaps {other_source} ({other}); give one result per "
    "period"
)
ALERT_MESSAGE = "--drift-alert: {value!r} is not allowed; allowed: 0 < value < 1 (e.g. 0.05)"


def compute_trend(
    results: Sequence[Mapping[str, Any]], *, sources: Sequence[str] | None = None,
    drift_alert: float = 0.05, confidence: float = 0.95,
) -> dict[str, Any]:
    """Rates and impact ratios per category over audit periods, with flags.

    Parameters
    ----------
    results : sequence of mapping
        Result JSON objects, one per period, in any order (sorted by ``data_start``).
    sources : sequence of str, optional
        Their file names, for messages (default ``result 1``, ``result 2``, ...).
    drift_alert : float
        A change of a category's impact ratio larger than this between consecutive
        periods is flagged ``moved``; ``0 < drift_alert < 1``.
    confidence : float
        Level of the intervals.

    Returns
    -------
    dict
        ``audit``, ``mode``, ``threshold``, ``drift_alert``, ``confidence``, ``periods``
        (``[{label, data_start, data_end, source, n_rows, signed}]``, in time order),
        ``tables`` (table -> category -> ``[point or None per period]``, a point being
        ``{n, n_selected, rate, rate_interval, impact_ratio, impact_ratio_interval,
        flagged, excluded, reference}``), ``flags`` (``[{table, group, kind, from,
        to, before, after, message}]``) and ``flagged`` (any flag).

    Raises
    ------
    InputError
        Fewer than two results, a result without a bias audit or period, results of
        different audits or measured unlike, overlapping periods, a bad ``drift_alert``.
    """
    if not isinstance(drift_alert, int | float) or not 0 < drift_alert < 1:
        raise InputError(ALERT_MESSAGE.format(value=drift_alert))
    if len(results) < 2:
        raise InputError(FEW_MESSAGE.format(n=len(results)))
    names = list(sources) if sources is not None else [
        f"result {i + 1}" for i in range(len(results))]
    entries = [(_period(result, source), source, result)
               for result, source in zip(results, names, strict=True)]
    entries.sort(key=lambda entry: entry[0])
    _check_alike(entries)
    _check_no_overlap(entries)
    first = entries[0][2]
    audit = first["bias_audit"]
    threshold = float(audit["threshold"])
    periods = [_period_entry(start, end, source, result)
               for (start, end), source, result in entries]
    tables = _series(entries, two_sided_z(confidence))
    flags = _flags(tables, periods, threshold=threshold, drift_alert=float(drift_alert))
    return {
        "audit": (first.get("audit") or {}).get("name"),
        "mode": audit.get("mode"),
        "threshold": threshold,
        "drift_alert": float(drift_alert),
        "confidence": float(confidence),
        "periods": periods,
        "tables": tables,
        "flags": flags,
        "flagged": bool(flags),
    }


def _check_no_overlap(entries: list[tuple[tuple[str, str], str, Mapping[str, Any]]]) -> None:
    """Refuse a period (``entries`` sorted by start) that overlaps an earlier one."""
    for (start, end), source, _ in entries[1:]:
        for (other_start, other_end), other_source, _ in entries:
            if other_source is source:
                break
            if start <= other_end and other_start <= end:
                raise InputError(OVERLAP_MESSAGE.format(
                    source=source, period=f"{start} to {end}", other_source=other_source,
                    other=f"{other_start} to {other_end}"))


def _period_entry(start: str, end: str, source: str, result: Mapping[str, Any]) -> dict:
    return {
        "label": f"{start} to {end}",
        "data_start": start,
        "data_end": end,
        "source": source,
        "n_rows": result["bias_audit"].get("n_rows"),
        "signed": "hmac_sha256" in (result.get("integrity") or {}),
    }


def _series(entries: list[tuple[tuple[str, str], str, Mapping[str, Any]]], z: float
            ) -> dict[str, dict[str, list[dict | None]]]:
    """Table -> category -> one point per period (None where the category is absent)."""
    tables: dict[str, dict[str, list[dict | None]]] = {}
    for index, (_, _, result) in enumerate(entries):
        for name, table in (result["bias_audit"].get("tables") or {}).items():
            series = tables.setdefault(str(name), {})
            for row in table.get("rows") or []:
                points = series.setdefault(str(row["group"]), [None] * len(entries))
                points[index] = _point(row, table, z)
    return tables


# ----------------------------------------------------------------------- helpers
def _period(result: Mapping[str, Any], source: str) -> tuple[str, str]:
    import datetime as _dt

    if not isinstance(result.get("bias_audit"), Mapping):
        raise InputError(NO_BIAS_AUDIT_MESSAGE.format(source=source))
    info = ((result.get("audit") or {}).get("audit_info") or {})
    dates = []
    for key in ("data_start", "data_end"):
        value = info.get(key)
        if value in (None, ""):
            raise InputError(NO_PERIOD_MESSAGE.format(source=source, key=key))
        try:
            dates.append(_dt.date.fromisoformat(str(value)).isoformat())
        except ValueError:
            raise InputError(BAD_DATE_MESSAGE.format(source=source, key=key, value=value)) from None
    return dates[0], dates[1]


def _check_alike(entries: list[tuple[tuple[str, str], str, Mapping[str, Any]]]) -> None:
    from promptaudit.comparability import result_differences

    _, first_source, first = entries[0]
    name = (first.get("audit") or {}).get("name")
    for _, source, result in entries[1:]:
        other = (result.get("audit") or {}).get("name")
        if other != name:
            raise InputError(NAME_MESSAGE.format(source=source, name=other,
                                               first_source=first_source, first=name))
        differences = result_differences(_without_data(first), _without_data(result))
        if differences:
            raise InputError(UNLIKE_MESSAGE.format(source=source, first_source=first_source,
                                                 difference="; ".join(differences)))
        for key in ("categories", "mode", "threshold", "exclude_below", "unknown_values"):
            old, new = first["bias_audit"].get(key), result["bias_audit"].get(key)
            if old != new:
                raise InputError(SETTING_MESSAGE.format(source=source, key=key, value=new,
                                                      first_source=first_source, first=old))


def _without_data(result: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with the data identity set aside: every period has its own data."""
    out = copy.deepcopy(dict(result))
    out["provenance"] = {**(out.get("provenance") or {}), "data": None}
    out["task"] = {**(out.get("task") or {}), "n_examples": None}
    return out


def _point(row: Mapping[str, Any], table: Mapping[str, Any], z: float) -> dict[str, Any]:
    reference = table.get("reference_group")
    ref_row = next((r for r in table.get("rows") or [] if r["group"] == reference), None)
    is_reference = reference is not None and row["group"] == reference
    ratio_interval = None
    if ref_row is not None and not is_reference and not row.get("excluded"):
        ratio_interval = katz_interval(int(row["n_selected"]), int(row["n"]),
                                       int(ref_row["n_selected"]), int(ref_row["n"]), z)
    return {
        "n": int(row["n"]),
        "n_selected": int(row["n_selected"]),
        "rate": row.get("rate"),
        "rate_interval": _as_list(wilson_interval(int(row["n_selected"]), int(row["n"]), z=z)),
        "impact_ratio": row.get("impact_ratio"),
        "impact_ratio_interval": _as_list(ratio_interval),
        "flagged": bool(row.get("flagged")),
        "excluded": bool(row.get("excluded")),
        "reference": is_reference,
    }


def _as_list(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else [float(pair[0]), float(pair[1])]


def _flags(tables: Mapping[str, Mapping[str, list[dict | None]]], periods: list[dict], *,
           threshold: float, drift_alert: float) -> list[dict[str, Any]]:
    flags = []
    for table, series in tables.items():
        for group, points in series.items():
            for index in range(1, len(points)):
                before, after = points[index - 1], points[index]
                if not _comparable(before) or not _comparable(after):
                    continue
                old, new = float(before["impact_ratio"]), float(after["impact_ratio"])
                span = (periods[index - 1]["label"], periods[index]["label"])
                where = (f"{table} = {group}: impact ratio {old:.3f} \u2192 {new:.3f} "
                         f"({span[0]} \u2192 {span[1]})")
                if before["flagged"] != after["flagged"]:
                    kind = "crossed_below" if after["flagged"] else "crossed_above"
                    words = (f"fell below the {threshold:g} line" if after["flagged"]
                             else f"rose back to the {threshold:g} line or above")
                    flags.append(_flag(table, group, kind, span, old, new,
                                       f"{where}: {words}"))
                if abs(new - old) > drift_alert:
                    flags.append(_flag(table, group, "moved", span, old, new,
                                       f"{where}: moved {new - old:+.3f}, more than the "
                                       f"drift alert {drift_alert:g}"))
    return flags


def _comparable(point: Mapping[str, Any] | None) -> bool:
    return (point is not None and not point["excluded"]
            and point.get("impact_ratio") is not None)


def _flag(table: str, group: str, kind: str, span: tuple[str, str], old: float, new: float,
          message: str) -> dict[str, Any]:
    return {"table": table, "group": group, "kind": kind, "from": span[0], "to": span[1],
            "before": old, "after": new, "message": message}
