"""Report figures: functions that take typed sections of the result and return Figures.

A section given as its JSON object is read leniently first. Figures are built directly
(Agg canvas, no ``pyplot`` global state); text from data is drawn with
``parse_math=False``. :func:`figure_to_data_uri` gives a PNG ``data:`` URI with stable bytes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from promptaudit.report._common import GROUP_METRIC_LABELS, as_float, as_list
from promptaudit.report._common import short_text as _short_text
from promptaudit.result_sections import AttributionResult, FairnessResult, FeatureEntry

__all__ = ["per_position_bars", "attribution_heatmap", "group_attribution_chart",
           "group_metric_chart", "figure_to_data_uri", "pareto_figure", "drawable"]

#: Colour-blind safe pair for positive / negative contributions (blue / orange).
_POSITIVE = "#2166ac"
_NEGATIVE = "#d6604d"
#: Colour-blind safe qualitative cycle (Okabe-Ito).
_CYCLE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]

@lru_cache(maxsize=1)
def _font_codepoints() -> frozenset[int]:
    """Code points the default matplotlib font can draw."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())


def drawable(text: str) -> str:
    """``text`` with every character the figure font cannot draw replaced by ``?``.

    Matplotlib would otherwise warn ("Glyph ... missing from font", with internal
    paths) and draw an empty box. Only figure labels are affected: the HTML tables
    show every name as it is.

    >>> drawable("caf\u00e9 \U0001F469")
    'caf\u00e9 ?'
    """
    known = _font_codepoints()
    return "".join(c if ord(c) in known or c in "\n\t " else "?" for c in str(text))


def short_text(value: Any, width: int) -> str:
    """:func:`~promptaudit.report._common.short_text` that the figure font can draw."""
    return drawable(_short_text(value, width))


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _numbers(values: Any) -> np.ndarray:
    """A float array with NaN where a value is missing or not a number."""
    out = [as_float(v) for v in as_list(values)]
    return np.array([np.nan if v is None else v for v in out], dtype=float)


def _position_labels(n: int, labels: Sequence[str] | None) -> list[str]:
    if labels is not None and len(labels) == n:
        return [short_text(label, 18) for label in labels]
    return [str(i) for i in range(n)]


def _style_axes(axes: Any) -> None:
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(labelsize=8)


def _typed(section: Any, kind: type) -> Any:
    """The typed section ``kind`` (its JSON object is read leniently)."""
    return section if isinstance(section, kind) else kind.from_dict(dict(section), strict=False)


def _position_ticks(axes: Any, n: int, labels: Sequence[str] | None) -> None:
    """Label the ``n`` prompt positions of the x axis (slanted when they carry words)."""
    axes.set_xticks(np.arange(n), _position_labels(n, labels), rotation=45 if labels else 0,
                    ha="right" if labels else "center", parse_math=False)


def per_position_bars(
    attribution: AttributionResult | Mapping[str, Any],
    *,
    position_labels: Sequence[str] | None = None,
) -> Figure:
    """Bar chart of the mean attribution to each virtual-token position.

    Parameters
    ----------
    attribution : AttributionResult or mapping
        The result's ``attribution`` section; reads ``per_position`` (signed mean,
        ``(num_virtual_tokens,)``) and, when present, ``per_position_abs`` (mean
        absolute attribution, drawn as markers).
    position_labels : sequence of str, optional
        One label per position (e.g. ``"0 qualified"``); defaults to the indices.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``per_position`` has no value.

    Examples
    --------
    >>> fig = per_position_bars({"per_position": [0.1, -0.05, 0.2]})
    >>> fig.axes[0].get_xlabel()
    'Virtual token (prompt position)'
    """
    attribution = _typed(attribution, AttributionResult)
    values = _numbers(attribution.per_position)
    if not np.isfinite(values).any():
        raise ValueError("attribution.per_position is empty; nothing to plot")
    n = values.size
    figure = _new_figure(max(5.0, min(11.0, 0.45 * n + 2.5)), 3.0)
    axes = figure.add_subplot()
    x = np.arange(n)
    heights = np.nan_to_num(values)
    colors = [_POSITIVE if v >= 0 else _NEGATIVE for v in heights]
    axes.bar(x, heights, color=colors, width=0.7, label="mean attribution (signed)")
    absolute = _numbers(attribution.per_position_abs)
    if absolute.size == n and np.isfinite(absolute).any():
        axes.plot(x, absolute, linestyle="none", marker="D", markersize=4, color="#444444",
                  label="mean |attribution|")
        axes.legend(fontsize=8, frameon=False, loc="best")
    axes.axhline(0, color="#666666", linewidth=0.8)
    _position_ticks(axes, n, position_labels)
    axes.set_xlabel("Virtual token (prompt position)")
    axes.set_ylabel("Attribution")
    axes.set_title("How much each prompt position pushes the predicted label", loc="left")
    _style_axes(axes)
    return figure


def attribution_heatmap(
    attribution: AttributionResult | Mapping[str, Any],
    max_examples: int = 20,
    *,
    position_labels: Sequence[str] | None = None,
) -> Figure:
    """Heat map of prompt-position attributions, one row per example.

    Parameters
    ----------
    attribution : AttributionResult or mapping
        The result's ``attribution`` section; reads ``examples[*].prompt_attributions``
        (``(num_virtual_tokens,)`` each) and ``examples[*].text`` for row labels.
    max_examples : int
        Plot at most this many examples (the first ones).
    position_labels : sequence of str, optional
        One label per position; defaults to the indices.

    Returns
    -------
    matplotlib.figure.Figure
        A diverging map centred on zero (blue pushes towards the target label,
        red away from it).

    Raises
    ------
    ValueError
        If no example has prompt attributions.
    """
    rows, labels = [], []
    for example in (_typed(attribution, AttributionResult).examples or [])[: max(max_examples, 0)]:
        values = _numbers(example.prompt_attributions)
        if np.isfinite(values).any():
            rows.append(values)
            target = example.target_label
            suffix = f" \u2192 {target}" if target not in (None, "") else ""
            labels.append(short_text(example.text or "", 42) + short_text(suffix, 16))
    if not rows:
        raise ValueError("attribution.examples holds no prompt_attributions; nothing to plot")
    width = max(len(r) for r in rows)
    matrix = np.full((len(rows), width), np.nan)
    for i, values in enumerate(rows):
        matrix[i, : values.size] = values
    finite = matrix[np.isfinite(matrix)]
    limit = float(np.max(np.abs(finite))) if finite.size else 1.0
    limit = limit or 1.0
    figure = _new_figure(max(6.0, min(11.0, 0.4 * width + 4.5)), 1.2 + 0.28 * len(rows))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap="RdBu", vmin=-limit, vmax=limit,
                        aspect="auto", interpolation="nearest")
    _position_ticks(axes, width, position_labels)
    axes.set_yticks(np.arange(len(rows)), labels, parse_math=False)
    axes.tick_params(labelsize=7)
    axes.set_xlabel("Virtual token (prompt position)")
    axes.set_title("Attribution per example and prompt position", loc="left")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.9, pad=0.01)
    colorbar.set_label("towards (blue) / away from (red) the label", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    return figure


def group_attribution_chart(
    attribution: AttributionResult | Mapping[str, Any],
    *,
    feature: str | None = None,
    position_labels: Sequence[str] | None = None,
) -> Figure:
    """Mean attribution per prompt position for each group, one panel per feature.

    Parameters
    ----------
    attribution : AttributionResult or mapping
        The result's ``attribution`` section; reads
        ``by_group.<feature>.groups.<group>`` (``(num_virtual_tokens,)``) and
        ``by_group.<feature>.counts``.
    feature : str, optional
        Draw only this feature; by default every feature gets a panel.
    position_labels : sequence of str, optional
        One label per position; defaults to the indices.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``by_group`` is missing or has no group with values and at least
        ``min_group_size`` examples (smaller groups are never drawn).
    """
    by_group = _typed(attribution, AttributionResult).by_group or {}
    features = [feature] if feature is not None else list(by_group)
    panels = []
    for name in features:
        block = by_group.get(name)
        if block is None:
            continue
        groups = {str(g): _numbers(v) for g, v in (block.groups or {}).items()}
        small = {str(g) for g in block.small_groups or []}
        floor = block.min_group_size if block.has("min_group_size") else None
        counts = block.counts or {}
        groups = {g: v for g, v in groups.items() if np.isfinite(v).any() and g not in small
                  and not (floor is not None and counts.get(g, floor) < floor)}
        if groups:
            panels.append((str(name), groups, block.counts or {}))
    if not panels:
        raise ValueError("attribution.by_group holds no per-group attributions; nothing to plot")
    n = max(v.size for _, groups, _ in panels for v in groups.values())
    figure = _new_figure(max(6.0, min(11.0, 0.45 * n + 3.5)), 0.4 + 2.3 * len(panels))
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (name, groups, counts) in zip(axes_list, panels, strict=True):
        for i, (group, values) in enumerate(groups.items()):
            count = counts.get(group)
            label = short_text(group, 28) + (f" (n={count})" if count is not None else "")
            axes.plot(np.arange(values.size), values, marker="o", markersize=3.5, linewidth=1.4,
                      color=_CYCLE[i % len(_CYCLE)], label=label)
        axes.axhline(0, color="#666666", linewidth=0.8)
        axes.set_ylabel("Mean attribution")
        axes.set_title(short_text(f"By {name}", 60), loc="left", parse_math=False)
        legend = axes.legend(fontsize=7, frameon=False, loc="center left",
                             bbox_to_anchor=(1.0, 0.5))
        for text in legend.get_texts():
            text.set_parse_math(False)
        _style_axes(axes)
    _position_ticks(axes_list[-1], n, position_labels)
    axes_list[-1].set_xlabel("Virtual token (prompt position)")
    return figure


def _feature_block(fairness: FairnessResult, feature: str) -> tuple[FeatureEntry, str]:
    """The block of ``feature`` (or of the intersection) and its name for a title."""
    by_feature = fairness.by_feature or {}
    block, title = None, feature
    if feature in by_feature:
        block = by_feature[feature]
    elif feature == "intersection":
        block = fairness.intersection
        title = " \u00d7 ".join(str(f) for f in fairness.sensitive_features or [])
    if block is None:
        raise ValueError(f"fairness has no feature {feature!r}")
    return block, title


def _group_rows(block: FeatureEntry, metric: str) -> list[tuple]:
    """``(group, value, lo, hi, small, count)`` per group, ``None`` where not computed."""
    rows = []
    intervals = block.intervals or {}
    for group, stats in (block.by_group or {}).items():
        value = as_float((stats.metrics or {}).get(metric))
        interval = (intervals.get(group) or {}).get(metric) or []
        lo = as_float(interval[0]) if len(interval) == 2 else None
        hi = as_float(interval[1]) if len(interval) == 2 else None
        rows.append((str(group), value, lo, hi, stats.small is True, stats.count))
    return rows


def group_metric_chart(
    fairness: FairnessResult | Mapping[str, Any], feature: str, metric: str = "selection_rate"
) -> Figure:
    """Horizontal bars of one metric per group with bootstrap-interval error bars.

    Parameters
    ----------
    fairness : FairnessResult or mapping
        The result's ``fairness`` section; reads ``by_feature.<feature>.by_group``
        and ``.intervals``. ``feature="intersection"`` (when no feature has that
        name) reads ``fairness.intersection``.
    feature : str
        The sensitive feature to draw.
    metric : str
        A per-group metric, e.g. ``"selection_rate"`` or ``"true_positive_rate"``.

    Returns
    -------
    matplotlib.figure.Figure
        Small groups (fewer than ``min_group_size`` examples) are hatched and
        labelled. For ``selection_rate`` a dashed line marks 80% of the highest
        group's rate (the four-fifths rule of thumb).

    Raises
    ------
    ValueError
        If the feature is unknown or no group has a value for ``metric``.
    """
    block, title_feature = _feature_block(_typed(fairness, FairnessResult), feature)
    rows = _group_rows(block, metric)
    if not any(value is not None for _, value, *_ in rows):
        raise ValueError(f"fairness feature {feature!r} has no values for {metric!r}")
    label = GROUP_METRIC_LABELS.get(metric, metric)
    figure = _new_figure(7.5, 0.9 + 0.38 * len(rows))
    axes = figure.add_subplot()
    y = np.arange(len(rows))[::-1]
    for yi, (_group, value, lo, hi, small, _count) in zip(y, rows, strict=True):
        if value is None:
            axes.text(0.005, yi, "n/a", va="center", fontsize=8, color="#555555")
            continue
        axes.barh(yi, value, height=0.6, color="#9ecae1" if small else "#3182bd",
                  hatch="//" if small else None, edgecolor="#08519c", linewidth=0.6)
        if lo is not None and hi is not None:
            axes.errorbar(value, yi, xerr=[[max(value - lo, 0)], [max(hi - value, 0)]],
                          fmt="none", ecolor="#222222", elinewidth=1.1, capsize=3)
        axes.text(min(max(hi or value, value), 1.0) + 0.01, yi, f"{value:.2f}", va="center",
                  fontsize=8)
    labels = [
        short_text(group, 34) + (f" (small, n={count})" if small else f" (n={count})"
                                 if count is not None else "")
        for group, _v, _lo, _hi, small, count in rows
    ]
    axes.set_yticks(y, labels, parse_math=False)
    values = [v for _, v, *_ in rows if v is not None]
    if metric == "selection_rate" and max(values) > 0:
        line = 0.8 * max(values)
        axes.axvline(line, color="#b2182b", linestyle="--", linewidth=1)
        axes.text(line, len(rows) - 0.45, " 80% of highest", color="#b2182b", fontsize=7,
                  va="bottom")
    axes.set_xlim(0, 1.12)
    axes.set_ylim(-0.6, len(rows) - 0.1)
    axes.set_xlabel(f"{label} (bars: point estimate; whiskers: bootstrap interval)")
    axes.set_title(short_text(f"{label} by {title_feature}", 80), loc="left", parse_math=False)
    _style_axes(axes)
    return figure


def pareto_figure(rows: list[dict], max_accuracy_drop: float) -> bytes:
    """PNG bytes: validation accuracy against DP ratio per weight, the budget and the front.

    Parameters
    ----------
    rows : list of dict
        The mitigation sweep's trade-off rows, the original prompt first.
    max_accuracy_drop : float
        The accuracy budget, drawn as a line below the original's accuracy.
    """
    fig = Figure(figsize=(5.5, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    original = rows[0]
    ax.axhline(original["accuracy"] - max_accuracy_drop, color="#999999", linestyle="--",
               linewidth=1, label=f"accuracy budget (-{max_accuracy_drop:g})")
    ax.axvline(0.8, color="#cc8800", linestyle=":", linewidth=1, label="four-fifths rule (0.8)")
    front = sorted((r for r in rows[1:] if r.get("pareto")), key=lambda r: r["dp_ratio"])
    if front:
        ax.plot([r["dp_ratio"] for r in front], [r["accuracy"] for r in front], color="#4477aa",
                linewidth=1, label="Pareto front")
    for row in rows:
        if row["dp_ratio"] is None:
            continue
        is_original = row["weight"] is None
        ax.scatter([row["dp_ratio"]], [row["accuracy"]],
                   marker="s" if is_original else ("*" if row.get("chosen") else "o"),
                   s=90 if row.get("chosen") else 40,
                   color="#aa3377" if is_original else "#4477aa")
        ax.annotate("original" if is_original else f"w={row['weight']:g}",
                    (row["dp_ratio"], row["accuracy"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xlabel("DP ratio on identity-swapped validation texts")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Mitigation trade-off (CLP weight sweep)")
    ax.legend(fontsize=7, loc="lower left")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def figure_to_data_uri(fig: Figure, *, dpi: int = 100) -> str:
    """Encode a figure as a PNG ``data:`` URI with stable bytes.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to encode.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    str
        ``"data:image/png;base64,..."``; the same figure always gives the same
        string (no software or time metadata is written).

    Examples
    --------
    >>> uri = figure_to_data_uri(per_position_bars({"per_position": [0.1, -0.2]}))
    >>> uri.startswith("data:image/png;base64,")
    True
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None},
                facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
