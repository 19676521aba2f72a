"""Render a before / after comparison, a run's mitigation block and the mitigation trade-off.

The numbers come from :func:`promptaudit.compare.compare_results` and the mitigation
sweep; here they only become views (dicts of display strings) for the ``comparison``,
``mitigation`` and ``tradeoff`` templates, so rendering never imports the comparison logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from promptaudit.choices import GateStatus
from promptaudit.report.escape import Verbatim
from promptaudit.report.rendering import environment
from promptaudit.result_sections import GateResult

__all__ = ["comparison_html", "comparison_markdown", "comparison_view", "fmt_or_undefined",
           "mitigation_view", "tradeoff_markdown", "tradeoff_table"]


def fmt_or_undefined(value: Any) -> str:
    """Four decimals, or ``"undefined"`` for a metric that could not be computed.

    >>> fmt_or_undefined(0.5), fmt_or_undefined(None)
    ('0.5000', 'undefined')
    """
    return "undefined" if value is None else f"{value:.4f}"


# ------------------------------------------------------------------ the comparison
def comparison_html(comparison: Mapping) -> str:
    """The comparison as a self-contained HTML page (user text escaped)."""
    return environment("html").get_template("comparison.html").render(
        comparison=comparison_view(comparison))


def comparison_markdown(comparison: Mapping) -> str:
    """The comparison as Markdown (user text escaped)."""
    return environment("markdown").get_template("comparison.md").render(
        comparison=comparison_view(comparison))


def comparison_view(comparison: Mapping) -> dict[str, Any]:
    """The comparison as display strings, for ``_comparison.html`` and ``_comparison.md``.

    Returns
    -------
    dict
        ``sides`` (``role``, ``name``, ``prompt``, ``gates``), ``max_regression`` and
        ``regression`` (the gate's verdict; ``None`` without a threshold),
        ``differences`` (sentences), ``metrics`` (one row per comparable metric) and
        ``gates`` (a ``{headers, rows}`` table, ``None`` when neither side has gates).
        Text that is already Markdown (metric keys, intervals) is :class:`Verbatim`.
    """
    limit = comparison["max_regression"]
    gates = comparison["gates"]
    return {
        "sides": [{"role": role, "name": side["name"], "prompt": side["prompt"],
                   "gates": "passed" if side["passed"] else "failed"}
                  for role, side in (("before", comparison["before"]),
                                     ("after", comparison["after"]))],
        "max_regression": None if limit is None else f"{limit:g}",
        "regression": None if limit is None else Verbatim(_regression_verdict(comparison)),
        "differences": list(comparison.get("differences") or []),
        "metrics": [_metric_row(row) for row in comparison["metrics"]
                    if row["verdict"] != "not comparable"],
        "gates": {"headers": ["gate", "before", "after"],
                  "rows": [[name, Verbatim(_gate_cell(old)), Verbatim(_gate_cell(new))]
                           for name, old, new in _gate_pairs(gates["before"], gates["after"])]}
        if gates["before"] or gates["after"] else None,
    }


def _metric_row(row: Mapping) -> dict[str, Any]:
    differences = row.get("differences") or []
    return {
        "metric": Verbatim(row["metric"]),
        "marked": bool(differences),
        "title": "; ".join(differences),
        "direction": Verbatim(row["direction"]),
        "before": fmt_or_undefined(row["before"]),
        "after": fmt_or_undefined(row["after"]),
        "interval": Verbatim(_interval(row)),
        "change": "" if row["change"] is None else f"{row['change']:+.4f}",
        "verdict": Verbatim(row["verdict"]),
        "flag": Verbatim(_flag(row)),
        "css": "regressed" if row["regressed"] else row["verdict"].split()[0],
    }


def _interval(row: Mapping) -> str:
    interval = row.get("after_interval")
    if interval is None:
        return "point-only"
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def _flag(row: Mapping) -> str:
    status = row.get("regression")
    if status is None and row.get("regressed"):
        status = "regressed"
    if status == "regressed":
        return " (regression)"
    if status == "inconclusive":
        return " (inconclusive: the interval reaches back within the tolerance)"
    return ""


def _regression_verdict(comparison: Mapping) -> str:
    regressed = comparison.get("regressed") or []
    undecided = comparison.get("inconclusive_metrics") or []
    parts = []
    if regressed:
        parts.append("regressed: " + ", ".join(regressed))
    if undecided:
        policy = comparison.get("inconclusive") or "fail"
        parts.append(
            "inconclusive (worse beyond the threshold by the point value, within it by the "
            f"interval; counted as {policy}): " + ", ".join(undecided)
        )
    if not parts:
        return "no metric got worse by more than the threshold"
    return "; ".join(parts)


def _gate_pairs(before: list, after: list
                ) -> list[tuple[str, GateResult | None, GateResult | None]]:
    """(name, before gate, after gate) matched on metric, feature, operator and threshold.

    Each gate entry is read as a typed :class:`GateResult` (leniently: a partial
    entry still renders, its missing fields as n/a).
    """
    keys: dict[tuple, list] = {}
    for side, gates in ((0, before), (1, after)):
        for entry in gates:
            if isinstance(entry, Mapping):
                gate = GateResult.from_dict(dict(entry), strict=False)
                key = (gate.metric, gate.feature, gate.op, gate.threshold)
                keys.setdefault(key, [None, None])[side] = gate
    out = []
    for (metric, feature, op, threshold), (old, new) in keys.items():
        name = f"{metric}{'' if feature is None else f' ({feature})'} {op or ''} {threshold}"
        out.append((name, old, new))
    return out


def _gate_cell(gate: GateResult | None) -> str:
    """``PASS (0.91)``, ``FAIL (0.12)`` or ``INCONCLUSIVE, counted as pass (0.86)``."""
    if gate is None:
        return "-"
    status = gate.decided
    if status is GateStatus.INCONCLUSIVE:
        word = f"INCONCLUSIVE, counted as {'pass' if gate.passed is True else 'fail'}"
    else:
        word = status.value.upper()
    return f"{word} ({fmt_or_undefined(gate.value)})"


# ------------------------------------------------------- the mitigation trade-off
def tradeoff_table(rows: list, *, detailed: bool) -> dict[str, list]:
    """The weight sweep as one ``{headers, rows}`` table of display strings.

    Parameters
    ----------
    rows : list of mapping
        The sweep's rows (the first is the original prompt, ``weight`` None).
    detailed : bool
        The sweep's own table (``mitigation_tradeoff.md``: with the accuracy change and
        the Pareto front); otherwise the run report's shorter one.

    Returns
    -------
    dict
        ``headers`` (n_columns,) and ``rows`` (n_rows, n_columns) of strings.
    """
    headers = ["weight", "accuracy" if detailed else "val. accuracy"]
    headers += ["change"] * detailed + ["DP ratio (swapped)", "flip rate", "mean abs delta",
                                        "within budget"]
    headers += ["Pareto"] * detailed + ["chosen"]
    table = []
    for row in rows:
        weight = row.get("weight")
        cells = ["original" if weight is None else f"{float(weight):g}",
                 fmt_or_undefined(row.get("accuracy"))]
        cells += [f"{row['accuracy_change']:+.4f}"] * detailed
        cells += [fmt_or_undefined(row.get(key))
                  for key in ("dp_ratio", "flip_rate", "mean_abs_delta")]
        cells.append("yes" if row.get("within_budget") else "no")
        pareto = row.get("pareto")
        cells += ["-" if pareto is None else ("yes" if pareto else "no")] * detailed
        cells.append("yes" if row.get("chosen") else "")
        table.append(cells)
    return {"headers": headers, "rows": table}


def tradeoff_markdown(rows: list[dict], max_accuracy_drop: float) -> str:
    """The sweep's trade-off table as Markdown (the first row is the original prompt)."""
    return environment("markdown").get_template("tradeoff.md").render(
        max_accuracy_drop=f"{max_accuracy_drop:g}", table=tradeoff_table(rows, detailed=True))


def mitigation_view(block: Mapping | None) -> dict[str, Any] | None:
    """A result's ``mitigation`` block as display strings, for ``_mitigation.html`` and
    ``mitigation.md``; ``None`` when the result has none."""
    if not isinstance(block, Mapping):
        return None
    record = block.get("record") or {}
    comparison = block.get("comparison")
    return {
        "message": record.get("message", ""),
        "adapter": block.get("adapter"),
        "mitigated": bool(block.get("mitigated")),
        "tradeoff": tradeoff_table([row for row in (record.get("table") or [])
                                    if isinstance(row, Mapping)], detailed=False),
        "comparison": comparison_view(comparison) if comparison else None,
    }
