"""Compare two audit results (before / after) metric by metric, with a regression gate.

:func:`compare_results` reads every gate metric of :data:`promptaudit.spec.GATE_METRICS`
from both results (worst over sensitive features, as gates read them), reports the
change and whether it is an improvement given the metric's direction, and, with
``max_regression``, marks a metric *regressed* when it got worse by more than that.
A metric defined before but undefined after counts as regressed (fail closed); one
undefined in both is listed as not comparable and gates nothing.

:func:`comparison_markdown` and :func:`comparison_html` (in
:mod:`promptaudit.report.comparison`, re-exported here) render the comparison (all
user text escaped); :func:`write_comparison` writes ``comparison.md``,
``comparison.html`` and ``comparison.json`` atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from promptaudit.errors import InputError
from promptaudit.paths import COMPARISON_FILES, comparison_files
from promptaudit.report.comparison import (
    comparison_html,
    comparison_markdown,
)

__all__ = [
    "compare_results",
    "comparison_html",
    "comparison_markdown",
    "write_comparison",
    "COMPARISON_FILES",
]


def compare_results(
    before: Mapping, after: Mapping, *, max_regression: float | None = None
) -> dict:
    """Side-by-side gate metrics of two results.

    Parameters
    ----------
    before, after : mapping
        Result JSON objects (``promptaudit run``).
    max_regression : float, optional
        Largest accepted worsening of any metric (in its own units, >= 0).

    Returns
    -------
    dict
        ``before`` / ``after`` (name, prompt, passed, content hash), ``metrics`` (one
        row per gate metric: ``metric``, ``direction``, ``before``, ``after``,
        ``change`` (after - before), ``worse_by`` (>0 when worse), ``verdict``
        (``improved``, ``worse``, ``unchanged``, ``undefined after``, ``not comparable``),
        ``regressed``), ``gates`` (each side's gate verdicts), ``max_regression``,
        ``regressed`` (metric names) and ``passed`` (no regression; True without a
        threshold).
    """
    from promptaudit.gates import metric_value
    from promptaudit.spec import GATE_METRICS

    if max_regression is not None and not (max_regression >= 0):
        raise InputError(f"--max-regression {max_regression}: must be a number >= 0")
    rows = []
    for metric, (_, _, direction) in GATE_METRICS.items():
        old, _ = metric_value(dict(before), metric)
        new, _ = metric_value(dict(after), metric)
        row = {
            "metric": metric,
            "direction": direction,
            "before": old,
            "after": new,
            "change": None,
            "worse_by": None,
            "regressed": False,
        }
        if old is None and new is None:
            row["verdict"] = "not comparable"
        elif new is None:
            row["verdict"] = "undefined after"
            row["regressed"] = max_regression is not None
        elif old is None:
            row["verdict"] = "new"
        else:
            row["change"] = new - old
            row["worse_by"] = (old - new) if direction == "higher" else (new - old)
            if abs(row["change"]) < 1e-12:
                row["verdict"] = "unchanged"
            else:
                row["verdict"] = "worse" if row["worse_by"] > 0 else "improved"
            row["regressed"] = (
                max_regression is not None and row["worse_by"] > max_regression + 1e-12
            )
        rows.append(row)
    regressed = [row["metric"] for row in rows if row["regressed"]]
    return {
        "before": _side(before),
        "after": _side(after),
        "metrics": rows,
        "gates": {
            "before": list(before.get("gates") or []),
            "after": list(after.get("gates") or []),
        },
        "max_regression": max_regression,
        "regressed": regressed,
        "passed": not regressed,
    }


def _side(result: Mapping) -> dict:
    audit = result.get("audit") or {}
    spec = audit.get("spec") or {}
    return {
        "name": audit.get("name"),
        "prompt": (spec.get("prompt") or {}).get("path"),
        "passed": result.get("passed"),
        "content_sha256": (result.get("integrity") or {}).get("content_sha256"),
        "created_at": (result.get("provenance") or {}).get("created_at"),
    }


def write_comparison(comparison: Mapping, out_dir: str | Path) -> dict[str, str]:
    """Write ``comparison.html``, ``.md`` and ``.json`` into ``out_dir`` (atomically)."""
    from promptaudit.atomic import atomic_write_text, prepare_output_dir
    from promptaudit.results import to_jsonable

    documents = {
        "html": comparison_html(comparison),
        "markdown": comparison_markdown(comparison),
        "json": json.dumps(to_jsonable(dict(comparison)), indent=2, sort_keys=True),
    }
    declared = comparison_files(out_dir)  # what `compare` checked against its inputs
    prepare_output_dir(out_dir)
    return {kind: str(atomic_write_text(declared[kind], text)) for kind, text in documents.items()}
