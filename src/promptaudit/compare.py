"""Compare two audit results (before / after) metric by metric, with a regression gate.

:func:`compare_results` reads every gate metric of :data:`promptaudit.metrics.GATE_METRICS`
from both results (worst over sensitive features, as gates read them), reports the
change and whether it is an improvement given the metric's direction, and, with
``max_regression``, marks a metric *regressed* when it got worse by more than that
with its after-interval wholly beyond the tolerance line, and *inconclusive* when the
point value is beyond it but the interval reaches back (:func:`regression_status`).
A metric defined before but undefined after counts as regressed (fail closed); one
undefined in both is listed as not comparable and gates nothing. Results measured
unlike (other data, features, labels, model, baselines, metric definitions:
:mod:`promptaudit.comparability`) are refused unless ``allow_different`` is set, and
then every affected row is marked.

:func:`comparison_markdown` and :func:`comparison_html` (in
:mod:`promptaudit.report.before_after`, re-exported here) render the comparison (all
user text escaped); :func:`write_comparison` writes ``comparison.md``,
``comparison.html`` and ``comparison.json`` atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from promptaudit.errors import InputError
from promptaudit.metrics import GATE_METRICS
from promptaudit.paths import COMPARISON_FILES, comparison_files
from promptaudit.report.before_after import (
    comparison_html,
    comparison_markdown,
)
from promptaudit.result import AuditResult, as_result

__all__ = [
    "compare_results",
    "regression_status",
    "comparison_html",
    "comparison_markdown",
    "write_comparison",
    "COMPARISON_FILES",
]


def compare_results(before: AuditResult | Mapping, after: AuditResult | Mapping, *,
                    max_regression: float | None = None, allow_different: bool = False,
                    inconclusive: str | None = None) -> dict:
    """Side-by-side gate metrics of two results, like for like, with an interval-aware gate.

    Parameters
    ----------
    before, after : AuditResult or mapping
        Results (``promptaudit run``); a mapping is read leniently.
    max_regression : float, optional
        Largest accepted worsening of any metric (in its own units, >= 0).
    allow_different : bool
        Compare results that were not measured alike (other data, features, labels,
        model, baselines, ...; :func:`promptaudit.comparability.result_differences`)
        and mark every row a difference affects, instead of refusing.
    inconclusive : {"fail", "pass"}, optional
        What an inconclusive regression does to ``passed`` (default: the after
        result's ``gate_policy.inconclusive``, else ``fail``).

    Returns
    -------
    dict
        ``before`` / ``after`` (name, prompt, passed, content hash), ``differences``
        (sentences; empty when like for like), ``metrics`` (one row per gate metric:
        ``metric``, ``direction``, ``before``, ``after``, ``after_interval``,
        ``change`` (after - before), ``worse_by`` (>0 when worse), ``verdict``
        (``improved``, ``worse``, ``unchanged``, ``undefined after``, ``not
        comparable``, ``new``), ``regression`` (``regressed``, ``inconclusive``,
        ``no`` or None without a threshold), ``regressed``, ``point_only`` and
        ``differences`` (the sentences that affect the row)), ``gates`` (each side's
        gate verdicts), ``max_regression``, ``inconclusive``, ``regressed`` and
        ``inconclusive_metrics`` (metric names) and ``passed``.

    Raises
    ------
    InputError
        ``max_regression`` below 0, or results that differ (one sentence per
        difference) without ``allow_different``.

    Notes
    -----
    The regression rule reads the after-result's interval. With ``t =
    max_regression`` and ``b`` the before value, a metric whose point value got worse
    by more than ``t`` is *regressed* only when its whole after-interval lies beyond
    the tolerance line (``hi < b - t`` for a higher-is-better metric, ``lo > b + t``
    for a lower-is-better one); when the interval reaches back over the line the
    change is *inconclusive* and counts under ``inconclusive`` (``fail`` by default,
    as for gates). A metric recorded without an interval (point-only) is judged on
    its point value. A metric defined before and undefined after is regressed.
    """
    from promptaudit.comparability import differences, differences_by_metric

    if max_regression is not None and not (max_regression >= 0):
        raise InputError(f"--max-regression {max_regression}: must be a number >= 0")
    old, new = as_result(before), as_result(after)
    policy = _policy(new, inconclusive)
    found = differences(old, new)
    if found and not allow_different:
        _refuse_unlike(found)
    affected = differences_by_metric(found, list(GATE_METRICS))
    rows = [_metric_row(name, old, new, affected[name], max_regression) for name in GATE_METRICS]
    regressed = [row["metric"] for row in rows if row["regression"] == "regressed"]
    undecided = [row["metric"] for row in rows if row["regression"] == "inconclusive"]
    return {
        "before": _side(old),
        "after": _side(new),
        "differences": [d.sentence for d in found],
        "metrics": rows,
        "gates": {side: [g.to_dict() for g in r.gates or []] for side, r in (("before", old),
                                                                         ("after", new))},
        "max_regression": max_regression,
        "inconclusive": policy,
        "regressed": regressed,
        "inconclusive_metrics": undecided,
        "passed": not regressed and (policy == "pass" or not undecided),
    }


def _policy(result: AuditResult, given: str | None) -> str:
    """``given``, else the result's ``gate_policy.inconclusive`` (default ``fail``)."""
    spec = None if result.audit is None else result.audit.spec
    gate_policy = None if spec is None else spec.gate_policy
    recorded = None if gate_policy is None else gate_policy.inconclusive
    policy = given or str(recorded or "fail")
    if policy not in ("fail", "pass"):
        raise InputError(f"--inconclusive {policy!r}: allowed: fail, pass")
    return policy


def _refuse_unlike(found: list) -> None:
    more = f" (and {len(found) - 1} more difference{'s' * (len(found) > 2)})" if len(
        found) > 1 else ""
    raise InputError(
        f"the results are not like for like: {found[0].sentence}{more}; compare audits "
        "of the same data, features, labels, model and baselines, or pass "
        "--allow-different to compare anyway with every affected row marked"
    )


def _metric_row(metric: str, before: AuditResult, after: AuditResult, affected: list[str],
                max_regression: float | None) -> dict:
    """One row of the comparison: both values, the change, its verdict and regression."""
    from promptaudit.gates import metric_value

    direction = GATE_METRICS[metric].direction
    old, _ = metric_value(before, metric)
    new, interval = metric_value(after, metric)
    row = {
        "metric": metric,
        "direction": direction,
        "before": old,
        "after": new,
        "after_interval": interval,
        "change": None,
        "worse_by": None,
        "regression": None,
        "regressed": False,
        "point_only": interval is None,
        "differences": affected,
    }
    if old is None and new is None:
        row["verdict"] = "not comparable"
    elif new is None:
        row["verdict"] = "undefined after"
        if max_regression is not None:
            row["regression"], row["regressed"] = "regressed", True
    elif old is None:
        row["verdict"] = "new"
    else:
        row["change"] = new - old
        row["worse_by"] = (old - new) if direction == "higher" else (new - old)
        if abs(row["change"]) < 1e-12:
            row["verdict"] = "unchanged"
        else:
            row["verdict"] = "worse" if row["worse_by"] > 0 else "improved"
        if max_regression is not None:
            row["regression"] = regression_status(
                old, new, interval, direction=direction, max_regression=max_regression
            )
            row["regressed"] = row["regression"] == "regressed"
    return row


def regression_status(
    before: float,
    after: float,
    after_interval: list | None,
    *,
    direction: str,
    max_regression: float,
) -> str:
    """``regressed``, ``inconclusive`` or ``no``: the regression rule (see :func:`compare_results`).

    Examples
    --------
    The point fell 0.044 -> -0.019 (beyond a tolerance of 0.05) but the interval
    reaches back over the line at -0.006:

    >>> regression_status(0.044, -0.019, [-0.047, 0.005], direction="higher",
    ...                   max_regression=0.05)
    'inconclusive'
    >>> regression_status(0.044, -0.019, [-0.047, -0.010], direction="higher",
    ...                   max_regression=0.05)
    'regressed'
    """
    worse_by = (before - after) if direction == "higher" else (after - before)
    if worse_by <= max_regression + 1e-12:
        return "no"
    if after_interval is None:
        return "regressed"  # point-only: the point decides
    lo, hi = after_interval
    if direction == "higher":
        beyond = hi < before - max_regression - 1e-12
    else:
        beyond = lo > before + max_regression + 1e-12
    return "regressed" if beyond else "inconclusive"


def _side(result: AuditResult) -> dict:
    audit, integrity, provenance = result.audit, result.integrity, result.provenance
    prompt = None if audit is None or audit.spec is None else audit.spec.extra.get("prompt")
    return {
        "name": None if audit is None else audit.name,
        "prompt": prompt.get("path") if isinstance(prompt, Mapping) else None,
        "passed": result.passed,
        "content_sha256": None if integrity is None else integrity.content_sha256,
        "created_at": None if provenance is None else provenance.created_at,
    }


def write_comparison(comparison: Mapping, out_dir: str | Path) -> dict[str, str]:
    """Write ``comparison.html``, ``.md`` and ``.json`` into ``out_dir`` (atomically)."""
    from promptaudit.atomic import atomic_write_text, prepare_output_dir
    from promptaudit.result import to_jsonable

    documents = {
        "html": comparison_html(comparison),
        "markdown": comparison_markdown(comparison),
        "json": json.dumps(to_jsonable(dict(comparison)), indent=2, sort_keys=True),
    }
    declared = comparison_files(out_dir)  # what `compare` checked against its inputs
    prepare_output_dir(out_dir)
    return {kind: str(atomic_write_text(declared[kind], text)) for kind, text in documents.items()}
