"""Render a before / after comparison and a run's mitigation block (HTML and Markdown).

The numbers come from :func:`promptaudit.compare.compare_results` and from the
``mitigation`` key that ``run`` adds to a result; here they are only rendered, with
every piece of user text escaped. The report package owns this so that rendering
never imports the comparison logic (and through it the spec and gates).
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from promptaudit.choices import GateStatus
from promptaudit.result_types import GateResult

__all__ = ["comparison_html", "comparison_markdown", "mitigation_html", "mitigation_markdown"]


def _fmt(value) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def _signed(value) -> str:
    return "" if value is None else f"{value:+.4f}"


def _md(text) -> str:
    """Escape user text for Markdown (the report's escaper: no markup, no raw HTML)."""
    from promptaudit.report._common import escape_markdown

    return escape_markdown(text)


def comparison_markdown(comparison: Mapping) -> str:
    """The comparison as Markdown (user text escaped)."""
    b, a = comparison["before"], comparison["after"]
    lines = [
        "# Before and after",
        "",
        f"- before: {_md(b['name'])} (prompt {_md(b['prompt'])}), gates "
        f"{'passed' if b['passed'] else 'failed'}",
        f"- after: {_md(a['name'])} (prompt {_md(a['prompt'])}), gates "
        f"{'passed' if a['passed'] else 'failed'}",
    ]
    if comparison["max_regression"] is not None:
        lines.append(
            f"- regression gate (max {comparison['max_regression']:g}): "
            f"{_regression_verdict(comparison)}"
        )
    differences = comparison.get("differences") or []
    if differences:
        lines += ["", "**Not like for like** (compared with --allow-different; rows marked †):", ""]
        lines += [f"- {_md(sentence)}" for sentence in differences]
    lines += [
        "",
        "| metric | better | before | after | after interval | change | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in comparison["metrics"]:
        if row["verdict"] == "not comparable":
            continue
        mark = " †" if row.get("differences") else ""
        lines.append(
            f"| {row['metric']}{mark} | {row['direction']} | {_fmt(row['before'])} | "
            f"{_fmt(row['after'])} | {_interval(row)} | {_signed(row['change'])} | "
            f"{row['verdict']}{_flag(row)} |"
        )
    gates = comparison["gates"]
    if gates["before"] or gates["after"]:
        lines += ["", "| gate | before | after |", "|---|---|---|"]
        for name, old, new in _gate_pairs(gates["before"], gates["after"]):
            lines.append(f"| {_md(name)} | {_gate_cell(old)} | {_gate_cell(new)} |")
    return "\n".join(lines) + "\n"


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


def _gate_key(gate: GateResult) -> tuple:
    return (gate.metric, gate.feature, gate.op, gate.threshold)


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
                keys.setdefault(_gate_key(gate), [None, None])[side] = gate
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
    return f"{word} ({_fmt(gate.value)})"


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;"
    "text-align:right}td:first-child,th:first-child{text-align:left}"
    ".improved{color:#1a7f37}.worse{color:#b42318}.regressed{font-weight:bold;color:#b42318}"
)


def comparison_html(comparison: Mapping) -> str:
    """The comparison as a self-contained HTML page (user text escaped)."""
    e = html.escape
    b, a = comparison["before"], comparison["after"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>promptaudit comparison</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Before and after</h1><ul>",
        f"<li>before: {e(str(b['name']))} (prompt {e(str(b['prompt']))}), gates "
        f"{'passed' if b['passed'] else 'failed'}</li>",
        f"<li>after: {e(str(a['name']))} (prompt {e(str(a['prompt']))}), gates "
        f"{'passed' if a['passed'] else 'failed'}</li>",
    ]
    if comparison["max_regression"] is not None:
        parts.append(
            f"<li>regression gate (max {comparison['max_regression']:g}): "
            f"{e(_regression_verdict(comparison))}</li>"
        )
    parts.append("</ul>")
    differences = comparison.get("differences") or []
    if differences:
        parts.append("<p><strong>Not like for like</strong> (compared with --allow-different; "
                     "rows marked &dagger;):</p><ul>")
        parts += [f"<li>{e(str(sentence))}</li>" for sentence in differences]
        parts.append("</ul>")
    parts.append(
        "<table><thead><tr><th>metric</th><th>better</th><th>before</th><th>after</th>"
        "<th>after interval</th><th>change</th><th>verdict</th></tr></thead><tbody>"
    )
    for row in comparison["metrics"]:
        if row["verdict"] == "not comparable":
            continue
        css = "regressed" if row["regressed"] else row["verdict"].split()[0]
        mark = " &dagger;" if row.get("differences") else ""
        title = e("; ".join(row.get("differences") or []), quote=True)
        parts.append(
            f"<tr><td title='{title}'>{e(row['metric'])}{mark}</td>"
            f"<td>{e(row['direction'])}</td>"
            f"<td>{_fmt(row['before'])}</td><td>{_fmt(row['after'])}</td>"
            f"<td>{e(_interval(row))}</td>"
            f"<td>{_signed(row['change'])}</td><td class='{css}'>{e(row['verdict'])}"
            f"{e(_flag(row))}</td></tr>"
        )
    parts.append("</tbody></table>")
    gates = comparison["gates"]
    if gates["before"] or gates["after"]:
        parts.append(
            "<table><thead><tr><th>gate</th><th>before</th><th>after</th></tr></thead><tbody>"
        )
        for name, old, new in _gate_pairs(gates["before"], gates["after"]):
            parts.append(
                f"<tr><td>{e(name)}</td><td>{e(_gate_cell(old))}</td>"
                f"<td>{e(_gate_cell(new))}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "".join(parts)


# ----------------------------------------------- the mitigation block of a run
def _tradeoff_rows(record: Mapping) -> list[dict]:
    return [row for row in (record.get("table") or []) if isinstance(row, Mapping)]


def _weight(row: Mapping) -> str:
    weight = row.get("weight")
    return "original" if weight is None else f"{float(weight):g}"


def mitigation_markdown(block: Mapping) -> str:
    """Markdown section for a result's ``mitigation`` block (before / after side by side)."""
    record = block.get("record") or {}
    lines = ["", "### Mitigation (counterfactual logit pairing)", ""]
    lines.append(_md(record.get("message", "")))
    if block.get("adapter"):
        lines += ["", f"Mitigated adapter: {_md(str(block['adapter']))}"]
    if not block.get("mitigated"):
        lines.append("")
        lines.append(
            "No weight met the accuracy budget: the report above is the original prompt's "
            "audit, and no prompt is claimed as mitigated."
        )
    lines += [
        "",
        "| weight | val. accuracy | DP ratio (swapped) | flip rate | mean abs delta | "
        "within budget | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in _tradeoff_rows(record):
        lines.append(
            f"| {_weight(row)} | {_fmt(row.get('accuracy'))} | {_fmt(row.get('dp_ratio'))} | "
            f"{_fmt(row.get('flip_rate'))} | {_fmt(row.get('mean_abs_delta'))} | "
            f"{'yes' if row.get('within_budget') else 'no'} | "
            f"{'yes' if row.get('chosen') else ''} |"
        )
    comparison = block.get("comparison")
    if comparison:
        lines += [
            "",
            "Before (original prompt) and after (mitigated prompt), same evaluation data:",
        ]
        body = comparison_markdown(comparison).split("\n", 2)[2]  # drop the page title
        lines.append(body.rstrip("\n"))
    return "\n".join(lines) + "\n"


def mitigation_html(block: Mapping) -> str:
    """HTML section for a result's ``mitigation`` block (before / after side by side)."""
    e = html.escape
    record = block.get("record") or {}
    parts = [
        "<section id='mitigation'><h2>Mitigation (counterfactual logit pairing)</h2>",
        f"<p>{e(str(record.get('message', '')))}</p>",
    ]
    if block.get("adapter"):
        parts.append(f"<p>Mitigated adapter: <code>{e(str(block['adapter']))}</code></p>")
    if not block.get("mitigated"):
        parts.append(
            "<p><strong>No weight met the accuracy budget</strong>: this report is the original "
            "prompt's audit, and no prompt is claimed as mitigated.</p>"
        )
    parts.append(
        "<table><thead><tr><th>weight</th><th>val. accuracy</th><th>DP ratio (swapped)</th>"
        "<th>flip rate</th><th>mean abs delta</th><th>within budget</th><th>chosen</th></tr>"
        "</thead><tbody>"
    )
    for row in _tradeoff_rows(record):
        parts.append(
            f"<tr><td>{e(_weight(row))}</td><td>{_fmt(row.get('accuracy'))}</td>"
            f"<td>{_fmt(row.get('dp_ratio'))}</td><td>{_fmt(row.get('flip_rate'))}</td>"
            f"<td>{_fmt(row.get('mean_abs_delta'))}</td>"
            f"<td>{'yes' if row.get('within_budget') else 'no'}</td>"
            f"<td>{'yes' if row.get('chosen') else ''}</td></tr>"
        )
    parts.append("</tbody></table>")
    comparison = block.get("comparison")
    if comparison:
        page = comparison_html(comparison)
        inner = page[page.index("<h1>Before and after</h1>") : page.index("</body>")]
        parts.append(
            "<h3>Before and after, same evaluation data</h3>"
            + inner.replace("<h1>Before and after</h1>", "")
        )
    parts.append("</section>")
    return "".join(parts)
