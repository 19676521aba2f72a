"""The bias-audit summary (NYC LL144 / EEOC four-fifths form) as display text and CSV.

:func:`bias_audit_view` gives unescaped display strings (the templates escape them);
:func:`bias_audit_csv` writes ``<name>.bias_audit.csv`` safe from formula injection.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from promptaudit.report._common import (
    NA,
    as_float,
    as_result,
    fmt_num,
    fmt_pct,
    fmt_threshold,
)
from promptaudit.result import AuditResult
from promptaudit.result_sections import BiasAuditResult, BiasAuditTable

__all__ = ["bias_audit_view", "bias_audit_csv", "csv_cell", "ordered_tables",
           "AUDIT_INFO_LABELS", "CSV_COLUMNS"]

#: ``audit_info`` key -> label, in display order (other keys follow, labelled by key).
AUDIT_INFO_LABELS: dict[str, str] = {
    "date": "Date of the bias audit",
    "auditor": "Auditor",
    "data_source": "Source of the data",
    "data_kind": "Kind of data",
    "test_data_statement": "Test data: why it was used and how it was made",
    "distribution_date": "Distribution date of the tool",
    "data_start": "First day of the data audited",
    "data_end": "Last day of the data audited",
}

CSV_COLUMNS = (
    "table", "kind", "group", "n", "n_selected", "rate", "impact_ratio", "excluded", "flagged",
    "p_value", "reference_group", "mode", "threshold", "note", "z_score", "z_p_value",
    "significant_2sd", "small_sample", "selections_to_four_fifths", "z_note",
)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One CSV cell as text, safe from spreadsheet formula injection.

    ``None`` is empty, booleans are ``true``/``false``, numbers use ``repr`` precision,
    and text starting with ``= + - @``, a tab or a carriage return gets a leading ``'``.

    Examples
    --------
    >>> csv_cell("=HYPERLINK(1)"), csv_cell(0.25), csv_cell(None), csv_cell(True)
    ("'=HYPERLINK(1)", '0.25', '', 'true')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def bias_audit_csv(result: AuditResult | Mapping[str, Any]) -> str | None:
    """The bias-audit tables as CSV text, or ``None`` when the result has none.

    Returns
    -------
    str or None
        A header line (:data:`CSV_COLUMNS`), then per table one ``category`` row per
        group and one ``unknown`` row (``n`` = the unknown count). Lines end in ``\\n``.
    """
    audit = as_result(result).bias_audit
    if audit is None:
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for name, table in ordered_tables(audit):
        shared = {"table": name, "reference_group": table.reference_group, "mode": audit.mode,
                  "threshold": audit.threshold}
        for row in table.rows or []:
            values = {column: getattr(row, column, None) for column in CSV_COLUMNS}
            values |= shared | {"kind": "category"}
            writer.writerow([csv_cell(values[column]) for column in CSV_COLUMNS])
        unknown, unknown_selected = table.unknown_count, table.unknown_selected
        values = dict.fromkeys(CSV_COLUMNS) | shared | {
            "kind": "unknown", "group": "", "n": unknown, "n_selected": unknown_selected,
            "rate": unknown_selected / unknown
            if isinstance(unknown, int) and unknown and isinstance(unknown_selected, int)
            else None,
            "excluded": True, "flagged": False,
            "note": "unknown or missing category: counted, left out of impact ratios",
            "z_note": "not benchmarked",
        }
        writer.writerow([csv_cell(values[column]) for column in CSV_COLUMNS])
    return buffer.getvalue()


def ordered_tables(audit: BiasAuditResult) -> list[tuple[str, BiasAuditTable]]:
    """Tables in the order of ``categories``, then their intersection, then any others.

    A result read back from its JSON file has its keys sorted; this restores the order
    the audit computed them in.
    """
    tables = {str(k): v for k, v in (audit.tables or {}).items()}
    names = [str(c) for c in audit.categories or []]
    if len(names) >= 2:
        names.append(" & ".join(names))
    order = [n for n in names if n in tables] + [n for n in tables if n not in names]
    return [(name, tables[name]) for name in order]


# ------------------------------------------------------------------------ display
def bias_audit_view(result: AuditResult | Mapping[str, Any]) -> dict[str, Any] | None:
    """Display strings of the bias-audit summary, or ``None`` when it was not computed.

    Returns
    -------
    dict or None
        ``intro`` (sentences), ``info`` (``[{label, value}]``, verbatim),
        ``info_missing`` (a sentence or ``None``), ``rate_label``, ``count_label``,
        ``tables`` (``[{name, caption, rows, notes}]``; a row holds display strings
        ``group, n, n_selected, rate, impact_ratio, flag, p_value`` and booleans
        ``flagged``, ``excluded``, ``reference``), ``warnings`` and ``min_impact_ratio``.
        Nothing is escaped here.
    """
    result = as_result(result)
    audit = result.bias_audit
    if audit is None:
        return None
    scoring = audit.mode == "scoring"
    threshold = as_float(audit.threshold)
    positive = result.task.positive_label if result.task is not None else None
    unknown_values = [str(v) for v in audit.unknown_values or []]
    tables = [
        _table_view(str(name), table, scoring=scoring, unknown_values=unknown_values,
                    threshold=threshold)
        for name, table in ordered_tables(audit)
    ]
    info, info_missing = _audit_info((result.audit.audit_info if result.audit is not None
                                      else None) or {})
    minimum = audit.min_impact_ratio
    return {
        "intro": _intro(audit, positive),
        "info": info,
        "info_missing": info_missing,
        "rate_label": "Scoring rate" if scoring else "Selection rate",
        "count_label": "Number scoring above the median" if scoring else "Number selected",
        "tables": tables,
        "warnings": [str(w) for w in audit.warnings or []],
        "threshold": fmt_threshold(threshold),
        "min_impact_ratio": fmt_num(minimum, 3) + _uncertainty(audit)
        if as_float(minimum) is not None
        else "undefined (no impact ratio can be computed for at least one table)",
    }


def _intro(audit: BiasAuditResult, positive: Any) -> list[str]:
    """The sentences that explain the rates, impact ratios and tests of the summary."""
    scoring = audit.mode == "scoring"
    threshold_text = fmt_threshold(as_float(audit.threshold))
    exclude_below = as_float(audit.exclude_below)
    n_rows = audit.n_rows
    intro = [
        f"Impact ratios in the form NYC Local Law 144 bias audits publish "
        f"(6 RCNY 5-300 to 5-303), computed on {n_rows if n_rows is not None else NA} rows.",
    ]
    if scoring:
        intro.append(
            "Scoring rate: the share of a category whose favourable-outcome score is "
            "strictly above the median score of the full sample (median "
            f"{fmt_num(audit.median_score, 4)}; a score equal to the median does "
            "not count)."
        )
    else:
        chosen = f"'{positive}'" if positive is not None else "the favourable outcome"
        intro.append(f"Selection rate: the share of a category the model selected ({chosen}).")
    intro.append(
        "Impact ratio: a category's rate divided by the rate of the most-selected category "
        "(the reference). Under the EEOC four-fifths rule (29 CFR 1607.4(D)) a ratio below "
        f"{threshold_text} is generally regarded as evidence of adverse impact, but smaller "
        "gaps may count when statistically and practically significant and larger ones may "
        "not on small numbers. The counts and a two-sided Fisher exact test against the "
        "reference are therefore shown beside each ratio; they are not merged into one "
        "verdict."
    )
    intro.append(
        "Standard-deviation analysis (Castaneda v. Partida; Hazelwood): the z-score is how "
        "many standard deviations a category's rate lies from the reference's if both had "
        "the same chance of selection (pooled two-proportion test, no continuity "
        "correction; negative means selected less often), with its two-sided p-value. "
        "Courts and agencies treat 2 or more standard deviations below as unlikely to be "
        "chance; under 30 people in the two categories together the approximation is "
        "unreliable ('small sample'): read the Fisher p-value instead. The shortfall is "
        "how many more people the category would have needed selected to reach four "
        "fifths of the reference's rate. Neither changes the four-fifths flag."
    )
    if exclude_below:
        intro.append(
            f"A category under {fmt_pct(exclude_below, 1)} of the data is listed with its "
            "count and rate but left out of impact ratios."
        )
    return intro


def _audit_info(info_raw: Mapping[str, Any]) -> tuple[list[dict[str, str]], str | None]:
    """``audit_info`` as ``[{label, value}]`` and the sentence naming what it leaves out."""
    keys = [k for k in AUDIT_INFO_LABELS if info_raw.get(k) not in (None, "")]
    keys += [k for k in info_raw if k not in AUDIT_INFO_LABELS and info_raw.get(k) is not None]
    info = [{"label": AUDIT_INFO_LABELS.get(k, str(k)), "value": str(info_raw[k])} for k in keys]
    missing = [AUDIT_INFO_LABELS[k].lower() for k in ("date", "data_source", "distribution_date")
               if info_raw.get(k) in (None, "")]
    kind = str(info_raw.get("data_kind") or "").lower()
    if "test" in kind and info_raw.get("test_data_statement") in (None, ""):
        missing.append("why test data was used and how it was made")
    info_missing = None
    if missing:
        info_missing = (
            "Not stated in this audit's audit_info: " + ", ".join(missing) + ". A published "
            "LL144 summary states them."
        )
    return info, info_missing


def _uncertainty(audit: BiasAuditResult) -> str:
    """`` (95% interval 0.465-1.000)`` or an explicit point-only note (one figure, one verdict)."""
    interval = audit.min_impact_ratio_interval
    if interval and all(as_float(end) is not None for end in interval):
        level = as_float(audit.interval_confidence)
        shown = f"{round(100 * level, 4):g}% " if level is not None else ""
        return f" ({shown}interval {fmt_num(interval[0], 3)}-{fmt_num(interval[1], 3)})"
    return " (point-only: no interval was computed; fairness.bootstrap 0 or too few resamples)"


def _table_view(
    name: str,
    table: BiasAuditTable,
    *,
    scoring: bool,
    unknown_values: list[str],
    threshold: float | None,
) -> dict[str, Any]:
    threshold_text = fmt_threshold(threshold)
    reference = table.reference_group
    rows = []
    notes = []
    for row in table.rows or []:
        group = str(row.group)
        excluded = row.excluded is True
        is_reference = reference is not None and group == str(reference)
        ratio = as_float(row.impact_ratio)
        if excluded:
            ratio_text, flag_text = "excluded", "\u2014"
        else:
            ratio_text = _fmt_ratio(ratio, threshold) if ratio is not None else "undefined"
            flag_text = (f"yes (below {threshold_text})" if row.flagged is True
                         else "no" if ratio is not None else "\u2014")
        p_text = ("reference" if is_reference else "\u2014"
                  if excluded or as_float(row.p_value) is None else _fmt_p(float(row.p_value)))
        rows.append({
            "group": group,
            "n": _count(row.n),
            "n_selected": _count(row.n_selected),
            "rate": fmt_num(row.rate, 3),
            "impact_ratio": ratio_text,
            "flag": flag_text,
            "p_value": p_text,
            "flagged": row.flagged is True,
            "excluded": excluded,
            "reference": is_reference,
            **_significance_view(row, is_reference=is_reference, excluded=excluded),
        })
        if excluded:
            notes.append(
                f"{group}: {row.note or 'left out of impact ratios'}; its count and "
                "rate are still shown."
            )
        elif not is_reference and row.z_score is None and row.z_note:
            notes.append(f"{group}: {row.z_note}.")
    if reference is not None:
        ref_rate = as_float(table.reference_rate)
        notes.insert(0, f"Impact ratios are relative to {reference}, the category with the "
                        f"highest {'scoring' if scoring else 'selection'} rate "
                        f"({fmt_num(ref_rate, 3)}).")
    unknown = table.unknown_count
    unknown_selected = table.unknown_selected
    described = "missing" + (" or " + ", ".join(repr(v) for v in unknown_values)
                             if unknown_values else "")
    if isinstance(unknown, int) and unknown > 0:
        verb = "scored above the median" if scoring else "were selected"
        notes.append(
            f"{unknown} rows have an unknown {name} ({described}); they are counted here and "
            f"left out of the table and of impact ratios"
            + (f" ({unknown_selected} of them {verb})." if isinstance(unknown_selected, int)
               else ".")
        )
    else:
        notes.append(f"No row has an unknown {name}.")
    minimum = as_float(table.min_impact_ratio)
    return {
        "name": name,
        "caption": f"{'Scoring' if scoring else 'Selection'} rates and impact ratios by {name}",
        "rows": rows,
        "notes": notes,
        "unknown_count": _count(unknown),
        "unknown_selected": _count(unknown_selected),
        "unknown_rate": fmt_num(table.unknown_rate, 3)
        if as_float(table.unknown_rate) is not None else "\u2014",
        "min_impact_ratio": fmt_num(minimum, 3) if minimum is not None else "undefined",
    }


def _significance_view(row: Any, *, is_reference: bool, excluded: bool) -> dict[str, str]:
    """Display strings ``z_score``, ``z_p_value``, ``sd2``, ``small_sample``, ``shortfall``."""
    dash = "\u2014"
    if is_reference or excluded:
        return dict.fromkeys(("z_score", "z_p_value", "sd2", "small_sample"), dash) | {
            "shortfall": _count(row.selections_to_four_fifths) if is_reference else dash}
    z = as_float(row.z_score)
    small = row.small_sample
    return {
        "z_score": f"{z:.2f}" if z is not None else "undefined",
        "z_p_value": _fmt_p(float(row.z_p_value)) if as_float(row.z_p_value) is not None
        else dash,
        "sd2": dash if row.significant_2sd is None
        else ("yes (2 SD or more below)" if row.significant_2sd else "no"),
        "small_sample": dash if small is None else ("yes (under 30 people)" if small else "no"),
        "shortfall": _count(row.selections_to_four_fifths)
        if row.selections_to_four_fifths is not None else dash,
    }


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else NA


def _fmt_ratio(value: float, threshold: float | None) -> str:
    """Three decimals, or more where three would put ``value`` on the wrong side of the flag."""
    digits = 3
    text = f"{value:.{digits}f}"
    while threshold is not None and digits < 9 and (
        (float(text) < threshold) != (value < threshold)
    ):
        digits += 1
        text = f"{value:.{digits}f}"
    return text


def _fmt_p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"
