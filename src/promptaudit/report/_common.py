"""Formatting and plain-language sentences shared by every report format.

All of it reads the typed result (:func:`as_result`); a missing or non-finite value
formats as ``"n/a"``, so nothing raises on a partial result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptaudit.report.escape import NA, display_token
from promptaudit.result import AuditResult, as_result
from promptaudit.result_sections import (
    ClassStats,
    Competence,
    CounterfactualResult,
    FairnessResult,
    FeatureEntry,
    Fidelity,
    GateResult,
    GroupRow,
    ProjectionResult,
)

#: A gate's ``bound`` (which number it checked) in words.
BOUND_WORDS = {"point": "point estimate", "lower": "lower interval bound",
               "upper": "upper interval bound"}

#: Disparity key -> human label, in display order.
DISPARITY_LABELS: dict[str, str] = {
    "demographic_parity_ratio": "Demographic parity ratio",
    "demographic_parity_difference": "Demographic parity difference",
    "equalized_odds_difference": "Equalized odds difference",
    "equalized_odds_ratio": "Equalized odds ratio",
    "equal_opportunity_difference": "Equal opportunity difference",
}

#: Per-group metric key -> human label, in display order.
GROUP_METRIC_LABELS: dict[str, str] = {
    "selection_rate": "Selection rate",
    "accuracy": "Accuracy",
    "true_positive_rate": "True positive rate",
    "false_positive_rate": "False positive rate",
    "true_negative_rate": "True negative rate",
    "false_negative_rate": "False negative rate",
    "mean_score": "Mean score",
}


def disparity_order(names: Iterable[Any]) -> list[str]:
    """Disparity keys in display order: those of :data:`DISPARITY_LABELS`, then the rest."""
    found = list(dict.fromkeys(str(name) for name in names))
    return [n for n in DISPARITY_LABELS if n in found] + [
        n for n in found if n not in DISPARITY_LABELS]


def disparity_label(name: Any) -> str:
    """Human label of a metric key: ``"accuracy_difference"`` -> ``"Accuracy difference"``."""
    key = str(name)
    if key in DISPARITY_LABELS:
        return DISPARITY_LABELS[key]
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else key


def as_float(value: Any) -> float | None:
    """Return ``value`` as a finite float, or ``None`` (booleans, NaN, text and null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def as_list(value: Any) -> list[Any]:
    """Return ``value`` as a list if it is a list or tuple, else an empty list."""
    return list(value) if isinstance(value, list | tuple) else []


def text_or_na(value: Any) -> str:
    """``str(value)``, or ``"n/a"`` for ``None``."""
    return NA if value is None else str(value)


def fmt_num(value: Any, digits: int = 3) -> str:
    """Format a number with ``digits`` decimals; ``"n/a"`` when not computable.

    Examples
    --------
    >>> fmt_num(0.41999), fmt_num(None), fmt_num(float("nan"))
    ('0.420', 'n/a', 'n/a')
    """
    number = as_float(value)
    return NA if number is None else f"{number:.{digits}f}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    """Format a proportion in ``[0, 1]`` as a percentage (``0.075`` -> ``"7.5%"``)."""
    number = as_float(value)
    return NA if number is None else f"{100 * number:.{digits}f}%"


def fmt_pct_interval(value: Any) -> str:
    """Format ``[lo, hi]`` as percentages, ``"[35.0%, 49.0%]"``; ``""`` when not computable."""
    pair = as_list(value)
    if len(pair) != 2 or as_float(pair[0]) is None or as_float(pair[1]) is None:
        return ""
    return f"[{fmt_pct(pair[0])}, {fmt_pct(pair[1])}]"


def fmt_interval(value: Any, digits: int = 3) -> str | None:
    """Format ``[lo, hi]`` as ``"[0.350, 0.490]"``; ``None`` when absent or not computable."""
    pair = as_list(value)
    if len(pair) != 2:
        return None
    lo, hi = as_float(pair[0]), as_float(pair[1])
    if lo is None or hi is None:
        return None
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_threshold(value: Any) -> str:
    """Format a gate threshold the way a user wrote it (``0.8``, not ``0.800``)."""
    number = as_float(value)
    return NA if number is None else format(number, "g")


def _fmt_against(value: float, threshold: float | None, digits: int = 2) -> str:
    """``digits`` decimals, or more where fewer would make ``value`` look equal to ``threshold``."""
    text = f"{value:.{digits}f}"
    if threshold is not None and value != threshold:
        while digits < 6 and float(f"{value:.{digits}f}") == threshold:
            digits += 1
        text = f"{value:.{digits}f}"
    return text


def gate_name(gate: GateResult) -> str:
    """Name a gate the way a user reads it: ``"demographic_parity_ratio[gender] >= 0.8"``."""
    metric = str(gate.metric or "gate")
    feature = gate.feature
    where = f"[{feature}]" if feature not in (None, "") else ""
    op = str(gate.op or "?")
    return f"{metric}{where} {op} {fmt_threshold(gate.threshold)}"


def gate_counts(result: AuditResult | Mapping[str, Any]) -> tuple[int, int]:
    """Return ``(n_failed, n_gates)`` over the result's gates."""
    gates = as_result(result).gates or []
    failed = sum(1 for g in gates if g.passed is not True)
    return failed, len(gates)


def gate_status(gate: GateResult) -> str:
    """``"pass"``, ``"fail"`` or ``"inconclusive"``; read from ``passed`` in early results."""
    return gate.decided.value


def status_counts(result: AuditResult | Mapping[str, Any]) -> dict[str, int]:
    """Number of gates per status: ``{"pass": .., "fail": .., "inconclusive": ..}``."""
    counts = {"pass": 0, "fail": 0, "inconclusive": 0}
    for gate in as_result(result).gates or []:
        counts[gate_status(gate)] += 1
    return counts


def verdict_word(result: AuditResult | Mapping[str, Any]) -> str:
    """The headline: ``PASS``, ``FAIL``, or ``INCONCLUSIVE`` (no gate failed, one undecided).

    An inconclusive audit still has a ``passed`` decided by the spec's
    ``gate_policy.inconclusive``; :func:`verdict_sentence` says which way it counted.
    """
    result = as_result(result)
    counts = status_counts(result)
    if counts["fail"] == 0 and counts["inconclusive"] > 0:
        return "INCONCLUSIVE"
    return "PASS" if result.passed is True else "FAIL"


def _policy(result: AuditResult) -> str:
    spec = result.audit.spec if result.audit is not None else None
    policy = spec.gate_policy if spec is not None else None
    return str((policy.inconclusive if policy is not None else None) or "fail")


def _competence(result: AuditResult) -> Competence | None:
    return result.task.competence if result.task is not None else None


def competence_state(result: AuditResult | Mapping[str, Any]) -> str:
    """``"works"``, ``"broken"`` or ``"unknown"`` from ``task.competence.works``."""
    competence = _competence(as_result(result))
    works = competence.works if competence is not None else None
    return "works" if works is True else "broken" if works is False else "unknown"


def competence_sentence(result: AuditResult | Mapping[str, Any]) -> str | None:
    """Whether the prompt does its task, in words; ``None`` for results without competence.

    A prompt that does not work gets a sentence that says the fairness figures
    describe a model that does not do its task.
    """
    result = as_result(result)
    competence = _competence(result)
    if competence is None:
        return None
    reason = str(competence.reason or "").strip()
    reason = reason[:1].upper() + reason[1:] if reason else ""
    state = competence_state(result)
    if state == "works":
        return f"Competence: {reason}." if reason else "Competence: the prompt does its task."
    if state == "broken":
        return (
            f"Competence: {reason or 'the prompt does not do its task'}. The fairness figures "
            "below rest on a model that does not work: equal treatment by a useless classifier "
            "is not evidence of a fair one."
        )
    return f"Competence cannot be judged: {reason or 'no true labels were given'}."


def classification_rows(report: Mapping[str, ClassStats | float | None] | None
                        ) -> list[dict[str, str]]:
    """Rows ``{label, precision, recall, f1, support}`` of a scikit-learn report."""
    rows = []
    for label, stats in (report or {}).items():
        if not isinstance(stats, ClassStats):
            continue  # "accuracy" is a bare number
        support = stats.support
        rows.append({
            "label": str(label),
            "precision": fmt_num(stats.precision),
            "recall": fmt_num(stats.recall),
            "f1": fmt_num(stats.f1_score),
            "support": str(int(support)) if as_float(support) is not None else NA,
        })
    return rows


def verdict_sentence(result: AuditResult | Mapping[str, Any]) -> str:
    """One sentence: PASS/FAIL/INCONCLUSIVE and how many gates failed or were undecided."""
    result = as_result(result)
    failed, total = gate_counts(result)
    passed = result.passed is True
    counts = status_counts(result)
    if counts["inconclusive"]:
        policy = _policy(result)
        undecided = counts["inconclusive"]
        noun = "gate was" if total == 1 else "gates was" if undecided == 1 else "gates were"
        tail = (
            f"{undecided} of {total} {noun} inconclusive (the interval straddles the "
            f"threshold), counted as {'passed' if policy == 'pass' else 'failed'} under "
            f"gate_policy.inconclusive: {policy}"
        )
        if counts["fail"]:
            return f"FAIL: {counts['fail']} of {total} gates failed and {tail}."
        return f"INCONCLUSIVE: {tail}."
    if total == 0:
        return (
            "PASS: no gates were configured, so nothing was checked against a threshold."
            if passed
            else "FAIL: the audit did not pass (no gates were configured)."
        )
    if passed:
        noun = "gate" if total == 1 else "gates"
        return f"PASS: all {total} fairness {noun} passed."
    return f"FAIL: {failed} of {total} gates failed."


def verdict_detail(result: AuditResult | Mapping[str, Any]) -> str:
    """:func:`verdict_sentence` without its leading ``"PASS: "`` / ``"FAIL: "``."""
    sentence = verdict_sentence(result)
    head, _, rest = sentence.partition(": ")
    return (
        rest[:1].upper() + rest[1:]
        if head in ("PASS", "FAIL", "INCONCLUSIVE") and rest
        else sentence
    )


def short_text(text: Any, limit: int = 80) -> str:
    """Collapse whitespace and cut ``text`` to ``limit`` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: max(limit - 1, 1)].rstrip() + "\u2026"


# --------------------------------------------------------------------- gap sentences


def _find_gate(
    gates: Sequence[GateResult],
    metric: str,
    feature: str,
    worst_feature: Mapping[str, Any],
) -> GateResult | None:
    """The gate on ``metric`` that reads ``feature`` (named, or as the worst feature)."""
    for gate in gates:
        if gate.metric == metric and gate.feature == feature:
            return gate
    if worst_feature.get(metric) == feature:
        for gate in gates:
            if gate.metric == metric and gate.feature in (None, ""):
                return gate
    return None


def _threshold_phrase(
    name: str,
    value: float | None,
    gate: GateResult | None,
    confidence: float | None,
    digits: int = 2,
) -> str:
    """``"ratio 0.69, below the 0.8 threshold"`` and its variants.

    The comparison is made on the number the gate checked (the point estimate or
    an interval bound); the gate's own verdict is used only when that number is
    missing.
    """
    threshold = as_float(gate.threshold) if gate else None
    shown = NA if value is None else _fmt_against(value, threshold, digits)
    if gate is None or threshold is None:
        return f"{name} {shown}"
    bound = gate.bound or "point"
    checked = as_float(gate.value)
    if checked is None and bound == "point":
        checked = value
    if checked is None:
        verdict = "passes" if gate.passed is True else "counts it as failed"
        return f"{name} {shown}; the gate could not compute it and {verdict}"
    limit = fmt_threshold(threshold)
    # A gate that passed met its threshold, even where the float shown is a hair off it
    # (an exact 4/5 ratio prints as 0.7999999999999999; gates decide on the counts).
    passed = gate_status(gate) == "pass"
    if gate.op == "<=":
        where = (f"within the {limit} limit" if passed or checked <= threshold
                 else f"above the {limit} limit")
    else:
        where = (f"meets the {limit} threshold" if passed or checked >= threshold
                 else f"below the {limit} threshold")
    if gate_status(gate) == "inconclusive" and bound == "point":
        return f"{name} {shown}, {where}, but inconclusive: its interval straddles the threshold"
    if bound in ("lower", "upper"):
        level = f"{round(100 * confidence)}% " if confidence is not None else ""
        verb = "" if where.startswith("meets") else "is "
        return (
            f"{name} {shown}; the {bound} end of its {level}interval, "
            f"{_fmt_against(checked, threshold, digits)}, {verb}{where}"
        )
    return f"{name} {shown}, {where}"


def _extremes(
    by_group: Mapping[str, GroupRow], metric: str
) -> tuple[tuple[str, float], tuple[str, float]] | None:
    values = []
    for group, row in by_group.items():
        number = as_float(row.metrics.get(metric))
        if number is not None:
            values.append((str(group), number))
    if len(values) < 2:
        return None
    low = min(values, key=lambda item: item[1])
    high = max(values, key=lambda item: item[1])
    return low, high


def _small_note(block: FeatureEntry, groups: Sequence[str]) -> str:
    by_group = block.by_group or {}
    notes = []
    for group in groups:
        row = by_group.get(group)
        if row is not None and row.small is True:
            notes.append(f"group '{group}' has only {row.count} examples")
    if not notes:
        return ""
    return " Treat this gap with caution: " + " and ".join(notes) + "."


def feature_blocks(fairness: FairnessResult, *, titled: bool = False
                   ) -> list[tuple[str, str, FeatureEntry]]:
    """``(key, label, block)`` for each feature and the intersection (unless listed already).

    ``titled`` labels the intersection ``"gender \u00d7 age (intersection)"`` (a table
    heading) rather than ``"gender \u00d7 age"`` (in a sentence).
    """
    blocks = [(str(feature), str(feature), block)
              for feature, block in (fairness.by_feature or {}).items()]
    intersection = fairness.intersection
    listed = intersection is not None and str(intersection.feature) in (fairness.by_feature or {})
    if intersection is not None and not listed:
        label = " \u00d7 ".join(str(f) for f in fairness.sensitive_features or [])
        if titled:
            label = label + " (intersection)" if label else "Intersection"
        blocks.append(("intersection", label or "intersection", intersection))
    return blocks


def _counterfactual_change(source: Any) -> str:
    """What a counterfactual tuple varies, in words, from ``counterfactual.source``.

    >>> _counterfactual_change("pair_column:pair_id")
    "Changing only what differs between rows sharing a 'pair_id' (the user's pairs)"
    >>> _counterfactual_change("builtin:identity")
    'Changing only identity terms (names, pronouns, group words)'
    """
    text = "" if source is None else str(source)
    if text.startswith("pair_column:"):
        column = text.removeprefix("pair_column:")
        return f"Changing only what differs between rows sharing a '{column}' (the user's pairs)"
    if text == "builtin:identity":
        return "Changing only identity terms (names, pronouns, group words)"
    return "Changing only the identity terms of the term suite"


def gap_sentences(result: AuditResult | Mapping[str, Any], *, limit: int = 6) -> list[str]:
    """The worst fairness gaps and failed gates, in plain words.

    Each gap sentence names the two groups at the extremes, e.g. ``"gender:
    selection rate (share predicted 'accept') for group 'female' is 0.42 vs 0.61
    for 'male' (ratio 0.69, below the 0.8 threshold)."``. Features are those a
    gate reads plus the worst feature of each disparity. Failed gates that no
    sentence explains are listed by their own message.

    Parameters
    ----------
    result : AuditResult or mapping
        The audit result (a dict is read with :func:`as_result`).
    limit : int
        At most this many sentences.

    Returns
    -------
    list of str
        Plain text (not escaped); empty when fairness was not computed.
    """
    result = as_result(result)
    fairness = result.fairness or FairnessResult(sensitive_features=[])
    positive = result.task.positive_label if result.task is not None else None
    gaps = _GapContext(
        gates=result.gates or [],
        worst=fairness.worst_feature or {},
        confidence=as_float(fairness.confidence),
        positive=f"'{positive}'" if positive not in (None, "") else "positive",
        blocks={key: (label, block) for key, label, block in feature_blocks(fairness)},
    )
    sentences = _parity_sentences(gaps) + _odds_sentences(gaps)
    sentences += _flip_sentences(fairness.counterfactual, gaps)
    for gate in gaps.gates:  # failed gates not explained above
        if gate.passed is not True and id(gate) not in gaps.used:
            message = gate.message or f"value {fmt_num(gate.value)}"
            verb = "was inconclusive" if gate_status(gate) == "inconclusive" else "failed"
            sentences.append(f"Gate '{gate_name(gate)}' {verb}: {message}")
    return sentences[:limit]


@dataclass
class _GapContext:
    """What the gap sentences read: gates, worst features, blocks; ``used`` gate ids."""

    gates: Sequence[GateResult]
    worst: Mapping[str, Any]
    confidence: float | None
    positive: str
    blocks: dict[str, tuple[str, FeatureEntry]]
    used: set[int] = field(default_factory=set)

    def gate(self, metric: str, feature: str) -> GateResult | None:
        """The gate on ``metric`` reading ``feature``, marked as explained."""
        gate = _find_gate(self.gates, metric, feature, self.worst)
        if gate is not None:
            self.used.add(id(gate))
        return gate

    def features_for(self, metrics: Sequence[str]) -> list[str]:
        """Features a gate on ``metrics`` reads, then their worst features, else the first."""
        order: list[str] = []
        named = [gate.feature or self.worst.get(str(gate.metric))
                 for gate in self.gates if gate.metric in metrics]
        for feature in named + [self.worst.get(metric) for metric in metrics]:
            if isinstance(feature, str) and feature in self.blocks and feature not in order:
                order.append(feature)
        if not order and self.blocks:
            order.append(next(iter(self.blocks)))
        return order


def _parity_sentences(gaps: _GapContext) -> list[str]:
    """Selection-rate gaps (demographic parity), one per feature."""
    parity = ("demographic_parity_ratio", "demographic_parity_difference")
    sentences = []
    for feature in gaps.features_for(parity):
        label, block = gaps.blocks[feature]
        ends = _extremes(block.by_group or {}, "selection_rate")
        if ends is None:
            continue
        (low_g, low_v), (high_g, high_v) = ends
        disparities = block.disparities or {}
        has_ratio_gate = _find_gate(gaps.gates, parity[0], feature, gaps.worst) is not None
        if not has_ratio_gate and _find_gate(gaps.gates, parity[1], feature,
                                             gaps.worst) is not None:
            value = as_float(disparities.get(parity[1]))
            phrase = _threshold_phrase("difference", value, gaps.gate(parity[1], feature),
                                       gaps.confidence)
        else:
            value = as_float(disparities.get(parity[0]))
            if value is None and high_v > 0:
                value = low_v / high_v
            phrase = _threshold_phrase("ratio", value, gaps.gate(parity[0], feature),
                                       gaps.confidence)
        sentences.append(
            f"{label}: selection rate (share predicted {gaps.positive}) for group "
            f"'{low_g}' is {low_v:.2f} vs {high_v:.2f} for '{high_g}' ({phrase})."
            + _small_note(block, (low_g, high_g))
        )
    return sentences


def _odds_sentences(gaps: _GapContext) -> list[str]:
    """Error-rate gaps (equalized odds / equal opportunity): the wider of TPR and FPR."""
    odds = ("equalized_odds_difference", "equal_opportunity_difference", "equalized_odds_ratio")
    positive = gaps.positive
    sentences = []
    for feature in gaps.features_for(odds):
        label, block = gaps.blocks[feature]
        candidates = []
        for metric, words in (
            ("true_positive_rate", f"true positive rate (truly {positive} examples "
             f"predicted {positive})"),
            ("false_positive_rate", f"false positive rate (other examples predicted "
             f"{positive})"),
        ):
            ends = _extremes(block.by_group or {}, metric)
            if ends is not None:
                candidates.append((ends[1][1] - ends[0][1], metric, words, ends))
        if not candidates:
            continue
        _, metric, words, ((low_g, low_v), (high_g, high_v)) = max(candidates)
        name = next((n for n in odds
                     if _find_gate(gaps.gates, n, feature, gaps.worst) is not None), None)
        gate = gaps.gate(name, feature) if name is not None else None
        name = name or "equalized_odds_difference"
        value = as_float((block.disparities or {}).get(name))
        phrase = _threshold_phrase(disparity_label(name).lower(), value, gate, gaps.confidence)
        sentences.append(
            f"{label}: {words} for group '{low_g}' is {low_v:.2f} vs {high_v:.2f} "
            f"for '{high_g}' ({phrase})." + _small_note(block, (low_g, high_g))
        )
    return sentences


def _flip_sentences(counterfactual: CounterfactualResult | None,
                    gaps: _GapContext) -> list[str]:
    """The counterfactual flip rate in words (none when it was not computed)."""
    flip = as_float(counterfactual.flip_rate) if counterfactual is not None else None
    if flip is None:
        return []
    gate = next((g for g in gaps.gates if g.metric == "counterfactual_flip_rate"), None)
    if gate is not None:
        gaps.used.add(id(gate))
    n = counterfactual.n_tuples
    of = f" of {n} counterfactual tuples" if as_float(n) is not None else ""
    interval = fmt_interval(counterfactual.flip_rate_interval)
    spread = f", interval {interval}" if interval else ""
    return [
        f"{_counterfactual_change(counterfactual.source)} changed the decision for "
        f"{100 * flip:.1f}%{of}{spread} "
        f"({_threshold_phrase('flip rate', flip, gate, None, 3)})."
    ]


def projected_text(projection: ProjectionResult) -> str | None:
    """The prompt as words: the readable top-1 words (pieces marked "…"), else the
    fidelity check's projected text, else the top-1 tokens."""
    readable = projection.projected_words
    if isinstance(readable, str) and readable.strip():
        return readable
    fidelity = projection.fidelity
    text = fidelity.projected_text if fidelity is not None else None
    if isinstance(text, str) and text.strip():
        return text
    words = []
    for position in projection.positions or []:
        if position.neighbors:
            first = position.neighbors[0]
            words.append(display_token(first.token or "?", first.display))
    return " ".join(words) or None


def off_manifold_note(projection: ProjectionResult) -> str | None:
    """``"2 of 8 virtual tokens sit far from every real word ..."``, or ``None``."""
    positions = projection.positions or []
    off = sum(1 for p in positions if p.off_manifold is True)
    if not off:
        return None
    verb, pronoun = ("sits", "it") if off == 1 else ("sit", "them")
    return (
        f"{off} of {len(positions)} virtual tokens {verb} far from every real word "
        f"(off-manifold), so no word describes {pronoun} well."
    )


def reading_sentence(projection: ProjectionResult) -> str | None:
    """What the prompt reads as (projected text or top-1 words), or ``None``."""
    text = projected_text(projection)
    if text is None:
        return None
    sentence = (
        f"Read as its nearest vocabulary words, the prompt is closest to: \u201c{text}\u201d."
    )
    note = off_manifold_note(projection)
    return f"{sentence} {note}" if note else sentence


def translation_view(projection: ProjectionResult | None) -> dict[str, Any] | None:
    """The translation (``projection.translation``) in words, or ``None`` when not run.

    Returns
    -------
    dict or None
        ``{"text", "stand_in", "accuracy", "uniqueness", "runs": [{"seed", "text",
        "agreement"}], "round_trip"}``; plain strings (escape on output).
    """
    translation = projection.translation if projection is not None else None
    if translation is None or not isinstance(translation.text, str):
        return None
    fidelity = translation.fidelity
    agreement = as_float(fidelity.agreement) if fidelity is not None else None
    interval = fidelity.interval if fidelity is not None else None
    n = fidelity.n_heldout if fidelity is not None else None
    if agreement is None:
        stand_in = "a plain-text stand-in whose agreement with the soft prompt was not measured"
    else:
        span = ""
        if interval and len(interval) == 2 and None not in interval:
            span = f" ({100 * interval[0]:.0f}\u2013{100 * interval[1]:.0f}%, 95% interval)"
        stand_in = (f"a plain-text stand-in that reproduces {100 * agreement:.0f}%{span} of the "
                    f"soft prompt's decisions on {n if n is not None else NA} held-out rows "
                    "\u2014 not the prompt's meaning")
    accuracy = translation.accuracy
    accuracy_sentence = None
    if accuracy is not None and as_float(accuracy.translation) is not None \
            and as_float(accuracy.soft_prompt) is not None:
        accuracy_sentence = (f"Accuracy on those rows: {100 * accuracy.translation:.0f}% with "
                             f"these words, {100 * accuracy.soft_prompt:.0f}% with the soft "
                             "prompt.")
    uniqueness = translation.uniqueness
    runs = [{"seed": str(run.seed), "text": str(run.text),
             "agreement": fmt_num(run.agreement, 2)} for run in translation.runs or []]
    round_trip = None if translation.round_trip_exact is not False else (
        "Warning: this text does not tokenize back to the measured tokens.")
    return {
        "text": translation.text,
        "stand_in": stand_in,
        "accuracy": accuracy_sentence,
        "uniqueness": uniqueness.sentence if uniqueness is not None else None,
        "runs": runs,
        "round_trip": round_trip,
    }


def translation_sentence(projection: ProjectionResult | None) -> str | None:
    """One line: the translation, what it reproduces, and the uniqueness caution."""
    view = translation_view(projection)
    if view is None:
        return None
    parts = [f"Translation: \u201c{view['text']}\u201d, {view['stand_in']}."]
    parts += [x for x in (view["accuracy"], view["uniqueness"], view["round_trip"]) if x]
    return " ".join(parts)


FIDELITY_LEVELS = ("high", "moderate", "low")


def fidelity_level(fidelity: Fidelity | None) -> str | None:
    """The fidelity check's ``level``: ``"high"``, ``"moderate"`` or ``"low"``, else ``None``."""
    level = fidelity.level if fidelity is not None else None
    return level if level in FIDELITY_LEVELS else None


def fidelity_message(fidelity: Fidelity | None) -> str | None:
    """The sentence that explains the fidelity level (``verdict``), or ``None``."""
    text = fidelity.verdict if fidelity is not None else None
    return text.strip() if isinstance(text, str) and text.strip() else None


def fidelity_detail(projection: ProjectionResult) -> str | None:
    """The evidence behind the fidelity verdict in words, or ``None`` when not computed."""
    fidelity = projection.fidelity
    if fidelity is None:
        return None
    parts = []
    agreement = as_float(fidelity.agreement)
    if agreement is not None:
        parts.append(
            f"Used as a plain-text prompt, these words give the same decision as the soft "
            f"prompt on {100 * agreement:.0f}% of examples "
            f"(accuracy {fmt_num(fidelity.projected_accuracy, 2)} vs "
            f"{fmt_num(fidelity.soft_accuracy, 2)})."
        )
    message = fidelity_message(fidelity)
    if message:
        parts.append(message if message.endswith((".", "!", "?")) else message + ".")
    return " ".join(parts)


def trust_level(projection: ProjectionResult | None) -> str | None:
    """The projection's ``trust.level`` (fidelity and typicality together), else ``None``."""
    trust = projection.trust if projection is not None else None
    level = trust.level if trust is not None else None
    return level if level in FIDELITY_LEVELS else None


def trust_reason(projection: ProjectionResult | None) -> str | None:
    """The sentence behind ``trust.level``, or ``None``."""
    trust = projection.trust if projection is not None else None
    reason = trust.reason if trust is not None else None
    return reason.strip() if isinstance(reason, str) and reason.strip() else None


def fidelity_sentence(projection: ProjectionResult) -> str | None:
    """How far to trust the word reading, or ``None`` when fidelity was not computed."""
    fidelity = projection.fidelity
    if fidelity is None:
        return None
    verdict = trust_level(projection) or fidelity_level(fidelity) or NA
    detail = " ".join(x for x in (trust_reason(projection), fidelity_detail(projection)) if x)
    return f"Trust in this reading: {verdict}." + (f" {detail}" if detail else "")


def summary_view(result: AuditResult) -> dict[str, Any]:
    """The HTML page's summary box: verdict, competence, gaps and the prompt's reading."""
    projection = result.projection
    failed, total = gate_counts(result)
    passed = result.passed is True
    fairness = result.fairness
    verdict = trust_level(projection) or fidelity_level(
        projection.fidelity if projection is not None else None)
    word = verdict_word(result)
    counts = status_counts(result)
    return {
        "passed": passed,
        "verdict_word": word,
        "status_class": {"PASS": "pass", "FAIL": "fail"}.get(word, "inconclusive"),
        "inconclusive": counts["inconclusive"],
        "competence": competence_sentence(result),
        "competence_class": {"works": "pass", "broken": "fail"}.get(
            competence_state(result), "inconclusive"),
        "verdict": verdict_sentence(result),
        "verdict_detail": verdict_detail(result),
        "failed": counts["fail"] if counts["inconclusive"] else failed,
        "total": total,
        "gaps": gap_sentences(result),
        "reading": reading_sentence(projection) if projection else None,
        "translation": translation_view(projection),
        "fidelity": fidelity_sentence(projection) if projection else None,
        "fidelity_detail": " ".join(x for x in (trust_reason(projection),
                                                 fidelity_detail(projection)) if x)
        if projection else None,
        "fidelity_verdict": str(verdict or NA),
        "fidelity_class": verdict_class(verdict),
        "warnings": [str(w) for w in (fairness.warnings if fairness is not None else None) or []],
    }


def verdict_class(verdict: Any) -> str:
    """CSS class word for a fidelity verdict: ``high``, ``moderate``, ``low`` or ``na``."""
    word = str(verdict or "").lower()
    return word if word in ("high", "moderate", "low") else "na"


def attribution_budget_sentence(attribution: Any) -> str | None:
    """The attribution's gradient-evaluation budget and what it left out, or None without one.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> budget = NS(max_gradient_evals_total=4096, n_gradient_evals=4200, n_requested=200,
    ...             n_attributed=32, n_left_out=168)
    >>> attribution_budget_sentence(NS(budget=budget))[:80]
    'Budget: 4096 gradient evaluations (4200 used); 32 of 200 examples attributed, th'
    """
    budget = getattr(attribution, "budget", None)
    if budget is None:
        return None
    head = (f"Budget: {budget.max_gradient_evals_total} gradient evaluations "
            f"({budget.n_gradient_evals} used); ")
    if not budget.n_left_out:
        return head + f"all {budget.n_attributed} examples asked for were attributed."
    return head + (
        f"{budget.n_attributed} of {budget.n_requested} examples attributed, the other "
        f"{budget.n_left_out} left out (raise attribution.max_gradient_evals_total to "
        "attribute them)."
    )
