"""Report views of the explanation stages: departures from plain language, position importance.

Plain dicts of display strings for the HTML and Markdown templates, read from the
typed result alone (torch-free). A section that was not computed is ``None``.
"""

from __future__ import annotations

from typing import Any

from promptaudit.report._common import (
    NA,
    as_float,
    fmt_interval,
    fmt_num,
    fmt_pct,
    short_text,
    text_or_na,
)
from promptaudit.report.escape import display_token
from promptaudit.result_sections import (
    AttributionGroups,
    AttributionResult,
    DeparturesResult,
    ProjectionResult,
)

__all__ = ["convergence_view", "departures_view", "position_importance_view",
           "importance_by_position", "group_difference_view", "neighbor_word"]

_SOURCE_WORDS = {"init_text": "init text (before tuning)", "instruction": "your instruction",
                 "translation": "translation (a plain-text stand-in)"}
#: Departure rows shown per direction in the report (the result lists more).
SHOWN_ROWS = 50


def neighbor_word(neighbor) -> str:
    """A nearest word as read: the result's ``word``, else the token with pieces marked."""
    word = getattr(neighbor, "word", None)
    if isinstance(word, str) and word:
        return word
    return display_token(neighbor.token, neighbor.display)


def departures_view(projection: ProjectionResult | None) -> dict[str, Any] | None:
    """The "Where the prompt departs from plain language" section, or None."""
    if projection is None:
        return None
    instructions = projection.instructions or []
    departures: DeparturesResult | None = projection.departures
    if not instructions and departures is None:
        return None
    view: dict[str, Any] = {"instructions": instructions, "sources": _SOURCE_WORDS,
                            "departures": None,
                            "method": (departures.agreement_interval_method
                                       if departures is not None else None) or
                            "Wilson score interval"}
    if departures is None:
        return view
    attribution = departures.attribution
    instruction = departures.instruction or {}
    view["departures"] = {
        "instruction": short_text(str(instruction.get("text") or NA), 300),
        "source": _SOURCE_WORDS.get(str(instruction.get("source")), str(instruction.get("source"))),
        "n_departures": str(departures.n_departures),
        "n_examples": str(departures.n_examples),
        "share": fmt_pct(departures.share),
        "directions": [_direction_view(direction) for direction in departures.directions],
        "groups": [(str(feature), share)
                   for feature, shares in (departures.groups or {}).items() for share in shares],
        "group_method": departures.group_interval_method,
        "confidence": fmt_pct(departures.confidence, 0),
        "n_attributed": str(attribution.n_attributed) if attribution is not None else "0",
        "max_attributed": str(attribution.max_attributed) if attribution is not None else NA,
        "attribution_rule": attribution.rule if attribution is not None else "",
        "attribution_method": str((attribution.method if attribution is not None else None)
                                  or NA).replace("_", " "),
        "attribution_baseline": str((attribution.baseline if attribution is not None else None)
                                    or NA),
        "summary": str(departures.summary or ""),
    }
    return view


def _direction_view(direction) -> dict[str, Any]:
    """One direction of departure: its rows (the first :data:`SHOWN_ROWS`) with top tokens."""
    shown = [(row, [{"token": str(t.token), "attribution": fmt_num(t.attribution),
                     "positive": (as_float(t.attribution) or 0.0) >= 0}
                    for t in (row.top_tokens or [])[:5]])
             for row in direction.rows[:SHOWN_ROWS]]
    hidden = direction.count - len(shown)
    return {
        "description": direction.description[:1].upper() + direction.description[1:],
        "count": str(direction.count),
        "rows": shown,
        "hidden": str(hidden) if hidden > 0 else "",
    }


def convergence_view(attribution: AttributionResult) -> dict[str, Any] | None:
    """Completeness against the run's tolerance (integrated gradients), or None."""
    tolerance = as_float(attribution.delta_tolerance)
    failed = attribution.n_not_converged
    if tolerance is None or failed is None:
        return None
    n = attribution.n_examples
    position = as_float(attribution.position_tolerance)
    return {
        "tolerance": f"{tolerance:g}",
        "adaptive": attribution.n_steps == "auto",
        "n_not_converged": str(failed),
        "n_converged": str(n - failed) if n is not None else NA,
        "all_converged": failed == 0,
        "n_gradient_evals": text_or_na(attribution.n_gradient_evals),
        "cap": text_or_na(attribution.max_gradient_evals),
        "position_tolerance": f"{position:g}" if position is not None else None,
    }


def importance_by_position(projection: ProjectionResult | None) -> dict[int, bool]:
    """``{position: matters}`` from ``projection.position_importance`` ({} when absent)."""
    importance = projection.position_importance if projection is not None else None
    return {int(p.index): bool(p.matters) for p in (importance.positions if importance else [])}


def position_importance_view(projection: ProjectionResult | None) -> dict[str, Any] | None:
    """The "Which positions matter" block, or None."""
    importance = projection.position_importance if projection is not None else None
    if importance is None:
        return None
    words = {}
    for position in projection.positions or []:
        if position.neighbors and position.index is not None:
            words[int(position.index)] = neighbor_word(position.neighbors[0])
    return {
        "rows": [(p, words.get(int(p.index), "")) for p in importance.positions],
        "n_examples": str(importance.n_examples),
        "neutral": "the mean word embedding" if importance.neutral == "mean_word_embedding"
        else str(importance.neutral),
        "floor": fmt_pct(importance.floor, 0),
        "ignored": ", ".join(str(i) for i in importance.ignored) or "none",
        "summary": str(importance.summary or ""),
        "rule": importance.rule,
    }


def group_difference_view(feature: str, block: AttributionGroups) -> dict[str, Any] | None:
    """One feature's like-for-like group comparison: the caveated sentence and the table."""
    like = block.like_for_like
    if like is None:
        return None
    rows = []
    for comparison in like.comparisons:
        differences = comparison.difference or []
        intervals = comparison.interval or []
        evidence = comparison.evidence or []
        for position, value in enumerate(differences):
            found = position < len(evidence) and evidence[position] is True
            rows.append({
                "group": str(comparison.group),
                "reference": str(comparison.reference),
                "position": str(position),
                "difference": fmt_num(value, 4),
                "interval": fmt_interval(intervals[position] if position < len(intervals)
                                         else None, 4) or NA,
                "verdict": "difference" if found else "no evidence of a difference",
                "evidence": found,
            })
    return {"feature": str(feature), "statement": str(like.statement or ""), "rows": rows}
