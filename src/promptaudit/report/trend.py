"""The trend across audit periods as Markdown, a self-contained HTML page and JSON.

``trend.md`` (:func:`trend_markdown`, also printed by ``promptaudit trend``), ``trend.html``
(:func:`trend_html`, with one :func:`trend_figure` chart per bias-audit table) and
:func:`write_trend`, which writes the three files atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from promptaudit.paths import TREND_FILES, trend_files  # declared with the command
from promptaudit.report._common import fmt_interval, fmt_num
from promptaudit.report.rendering import environment

__all__ = ["TREND_FILES", "trend_markdown", "trend_html", "trend_figure", "write_trend"]

def _cell(point: Mapping[str, Any] | None) -> str:
    if point is None:
        return "absent"
    rate = f"rate {fmt_num(point['rate'], 3)}"
    if point["rate_interval"]:
        rate += f" {fmt_interval(point['rate_interval'], 3)}"
    if point["excluded"]:
        ratio = "excluded"
    elif point["reference"]:
        ratio = "reference"
    elif point["impact_ratio"] is None:
        ratio = "IR undefined"
    else:
        ratio = f"IR {point['impact_ratio']:.3f}"
        if point["impact_ratio_interval"]:
            ratio += f" {fmt_interval(point['impact_ratio_interval'], 3)}"
        if point["flagged"]:
            ratio += " below the line"
    return f"{rate}; {ratio} (n {point['n']})"


def _headline(trend: Mapping[str, Any]) -> str:
    n = len(trend["flags"])
    periods = len(trend["periods"])
    if n:
        return (f"FLAGGED: {n} change{'s' if n != 1 else ''} across {periods} periods crossed "
                f"the {trend['threshold']:g} line or moved more than {trend['drift_alert']:g}.")
    return (f"No category crossed the {trend['threshold']:g} line or moved more than "
            f"{trend['drift_alert']:g} across {periods} periods.")


_EXPLANATION = (
    "Impact ratio (IR): a category's rate divided by the most-selected category's rate in "
    "the same period. A category is flagged when its impact ratio crosses the four-fifths "
    "line between two consecutive periods, or changes by more than the drift alert (point "
    "values; the intervals beside them show how much of a change the data can tell apart "
    "from noise: Wilson intervals for rates, Katz log intervals for impact ratios)."
)


def trend_markdown(trend: Mapping[str, Any]) -> str:
    """The trend as Markdown (every piece of result text escaped)."""
    return environment("markdown").get_template("trend.md").render(
        **_view(trend), audit=trend["audit"])


def trend_figure(trend: Mapping[str, Any], table: str) -> Figure:
    """Impact ratio per category over the periods (whiskers: its interval) and the line.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: x the periods in time order, y the impact ratio.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from promptaudit.report.figures import short_text

    figure = Figure(figsize=(7.5, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    periods = trend["periods"]
    xs = list(range(len(periods)))
    series = trend["tables"][table]
    for offset, (group, points) in enumerate(series.items()):
        shift = (offset - (len(series) - 1) / 2) * 0.04
        px, py, low, high = [], [], [], []
        for x, point in zip(xs, points, strict=True):
            if point is None or point["excluded"] or point["impact_ratio"] is None:
                continue
            ratio = float(point["impact_ratio"])
            interval = point["impact_ratio_interval"] or [ratio, ratio]
            px.append(x + shift)
            py.append(ratio)
            low.append(max(0.0, ratio - interval[0]))
            high.append(max(0.0, interval[1] - ratio))
        if px:
            axes.errorbar(px, py, yerr=[low, high], marker="o", capsize=3,
                          label=short_text(group, 30))
    axes.axhline(trend["threshold"], color="#8a1c1c", linestyle="--", linewidth=1,
                 label=f"{trend['threshold']:g} line")
    axes.set_xticks(xs, [short_text(p["data_end"], 12) for p in periods])
    axes.set_xlabel("audit period (end date)")
    axes.set_ylabel("impact ratio")
    axes.set_title(short_text(f"Impact ratio by {table} over audit periods", 80), loc="left",
                   parse_math=False)
    axes.legend(fontsize=7, loc="best")
    return figure


def trend_html(trend: Mapping[str, Any]) -> str:
    """The trend as one self-contained HTML page (figures embedded, no external reference)."""
    from promptaudit.report.figures import figure_to_data_uri

    view = _view(trend)
    for table in view["tables"]:
        table["figure"] = figure_to_data_uri(trend_figure(trend, table["name"]))
        table["alt"] = f"Impact ratio by {table['name']} over {len(trend['periods'])} audit periods"
    rate_label = "Scoring rate" if trend.get("mode") == "scoring" else "Selection rate"
    return environment("html").get_template("trend.html").render(
        **view, audit=str(trend["audit"]), flagged=trend["flagged"], rate_label=rate_label,
        confidence=f"{trend['confidence']:.0%}")


def _view(trend: Mapping[str, Any]) -> dict[str, Any]:
    """What both pages print: headline, periods, flags and one table per bias-audit table."""
    return {
        "headline": _headline(trend),
        "explanation": _EXPLANATION,
        "periods": trend["periods"],
        "flags": trend["flags"],
        "tables": [{"name": name,
                    "rows": [{"group": group, "cells": [_cell(p) for p in points]}
                             for group, points in series.items()]}
                   for name, series in trend["tables"].items()],
    }


def write_trend(trend: Mapping[str, Any], out_dir: str | Path) -> dict[str, str]:
    """Write ``trend.html``, ``trend.md`` and ``trend.json`` into ``out_dir`` atomically.

    All three are rendered before any is written.
    """
    from promptaudit.atomic import atomic_write_text, prepare_output_dir

    texts = {
        "html": trend_html(trend),
        "markdown": trend_markdown(trend),
        "json": json.dumps(trend, indent=1, sort_keys=True) + "\n",
    }
    files = trend_files(prepare_output_dir(out_dir))
    return {kind: str(atomic_write_text(files[kind], text)) for kind, text in texts.items()}
