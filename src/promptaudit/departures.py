"""Where the soft prompt departs from plain language.

Plain-language *candidates* are put in place of the soft prompt (the rows of the input
embedding matrix for their token ids, where the soft prompt sits): the **init text** of a
PEFT ``TEXT``-initialised prompt as PEFT copied it, every **instruction** listed (its tokens
without special tokens), and any candidate given as **token ids** such as the translation.
:func:`compare_instructions` ranks them by **agreement** with the soft prompt's decisions
(and accuracy), each with a Wilson score interval. :func:`find_departures` lists the rows
where the best candidate disagrees, by direction, with each sensitive group's share among
them against its share of all rows (Clopper-Pearson interval; over-represented only where
the whole interval lies above); :func:`attribute_departures` attributes a few of those rows.
Fields: docs/result-json.md#projection (``instructions``, ``departures``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from promptaudit.data import MISSING_GROUP
from promptaudit.errors import InputError
from promptaudit.stats import clopper_pearson_interval, wilson_interval

__all__ = [
    "Candidate", "init_text_candidate", "plain_language_candidates", "instruction_candidate",
    "token_ids_candidate", "translation_candidate", "compare_instructions", "find_departures",
    "attribute_departures", "explain_departures", "DEFAULT_MAX_ATTRIBUTED",
    "EMPTY_INSTRUCTION_MESSAGE", "LONG_INSTRUCTION_MESSAGE", "TOKEN_IDS_MESSAGE",
    "AGREEMENT_INTERVAL_METHOD", "GROUP_INTERVAL_METHOD", "ATTRIBUTED_ROWS_RULE",
]

logger = logging.getLogger(__name__)

EMPTY_INSTRUCTION_MESSAGE = "instructions: {text!r} tokenizes to nothing; give a non-empty text"
LONG_INSTRUCTION_MESSAGE = (
    "instructions: {text!r} is {n_tokens} tokens; at most {limit} fit in front of the "
    "{max_length} input tokens within the model's {positions} positions")
TOKEN_IDS_MESSAGE = (
    "{source}: token ids {ids!r} are not ids of the embedding matrix; allowed: a non-empty "
    "list of integers 0..{max_id}")
#: How agreement and accuracy intervals are computed (recorded in the result).
AGREEMENT_INTERVAL_METHOD = "Wilson score interval for a binomial share of n independent rows"
#: How a group's share among the departures is bounded (recorded in the result).
GROUP_INTERVAL_METHOD = (
    "Clopper-Pearson exact binomial interval on the group's share of the departures; "
    "over-represented when its lower end is above the group's share of all rows")
#: Which departure rows get input-token attributions when they are more than the budget.
ATTRIBUTED_ROWS_RULE = (
    "at most max_attributed rows, taken in turn from each direction (largest first), "
    "in row order within a direction")
#: Departure rows attributed by default (each costs an integrated-gradients run).
DEFAULT_MAX_ATTRIBUTED = 2
#: Most departure rows listed per direction in the result (all are counted).
MAX_LISTED_ROWS = 200
_SOURCE_ORDER = {"init_text": 0, "instruction": 1, "translation": 2}


@dataclass(frozen=True)
class Candidate:
    """A plain-language stand-in for the soft prompt.

    Attributes
    ----------
    source : str
        ``"init_text"``, ``"instruction"``, ``"translation"`` or a caller's name.
    text : str
        What a reader sees.
    token_ids : tuple of int
        ``(n_tokens,)`` the ids whose embedding rows replace the soft prompt.
    note : str
        How the ids were made from the text.
    """

    source: str
    text: str
    token_ids: tuple[int, ...]
    note: str = ""


def _check_fits(prompted, text: str, n_tokens: int) -> None:
    config = getattr(prompted.model, "config", None)
    positions = (getattr(config, "max_position_embeddings", None)
                 or getattr(config, "n_positions", None))
    if positions is None:
        return
    # Inputs are cut at prompted.max_length; the longest encoded input may add special tokens.
    limit = int(positions) - int(prompted.max_length)
    if n_tokens > limit:
        raise InputError(LONG_INSTRUCTION_MESSAGE.format(
            text=text, n_tokens=n_tokens, limit=limit, max_length=prompted.max_length,
            positions=positions))


def instruction_candidate(prompted, text: str) -> Candidate:
    """An instruction typed in front of every input: its token ids, no special tokens.

    Parameters
    ----------
    prompted : PromptedModel
    text : str

    Raises
    ------
    InputError
        The text tokenizes to nothing, or is too long for the model's positions.
    """
    ids = list(prompted.tokenizer(str(text), add_special_tokens=False)["input_ids"])
    if not ids:
        raise InputError(EMPTY_INSTRUCTION_MESSAGE.format(text=text))
    _check_fits(prompted, str(text), len(ids))
    return Candidate("instruction", str(text), tuple(int(i) for i in ids),
                     "the instruction's tokens (no special tokens) in place of the soft prompt")


def init_text_candidate(prompted, init_text: str, num_virtual_tokens: int) -> Candidate:
    """The init text as PEFT initialised the prompt (special tokens, repeated or cut)."""
    from promptaudit.soft_prompts import text_init_token_ids

    ids = text_init_token_ids(prompted.tokenizer, str(init_text), int(num_virtual_tokens))
    if not ids:
        raise InputError(EMPTY_INSTRUCTION_MESSAGE.format(text=init_text))
    return Candidate("init_text", str(init_text), tuple(int(i) for i in ids),
                     f"the prompt before tuning: the init text's tokens as PEFT copied them "
                     f"into the {num_virtual_tokens} virtual tokens")


def token_ids_candidate(prompted, token_ids: Sequence[int], *, text: str | None = None,
                        source: str = "translation") -> Candidate:
    """A candidate given as token ids (e.g. ``projection.translation``).

    Parameters
    ----------
    prompted : PromptedModel
    token_ids : sequence of int
        ``(n_tokens,)`` ids of the embedding matrix.
    text : str, optional
        What a reader sees; by default ``tokenizer.decode(token_ids)``.
    source : str
        The candidate's kind, shown in the result.

    Examples
    --------
    >>> translation = result["projection"]["translation"]  # doctest: +SKIP
    >>> ids, text = translation["token_ids"], translation["text"]  # doctest: +SKIP
    >>> token_ids_candidate(prompted, ids, text=text)  # doctest: +SKIP
    """
    rows = int(prompted.word_embeddings.shape[0])
    try:
        ids = [int(i) for i in token_ids]
    except (TypeError, ValueError):
        ids = []
    if not ids or any(isinstance(i, bool) or not 0 <= i < rows for i in ids):
        raise InputError(TOKEN_IDS_MESSAGE.format(source=source, ids=list(token_ids)[:8],
                                                  max_id=rows - 1))
    shown = prompted.tokenizer.decode(ids) if text is None else str(text)
    _check_fits(prompted, shown, len(ids))
    return Candidate(str(source), shown, tuple(ids), "the given token ids in place of the "
                     "soft prompt")


def translation_candidate(prompted, projection: Mapping) -> Candidate | None:
    """``projection.translation`` (``text``, ``token_ids``) as a candidate, or None.

    The translation stage writes the translation into the projection; the audit
    and ``project`` rank it with the other candidates when it is there.
    """
    translation = projection.get("translation") if projection else None
    if not translation or not translation.get("token_ids"):
        return None
    return token_ids_candidate(prompted, translation["token_ids"],
                               text=translation.get("text"), source="translation")


# --------------------------------------------------------------- candidates
def plain_language_candidates(
    prompted, soft, projection: Mapping, instructions: Sequence[str]
) -> list[Candidate]:
    """Every plain-language reading to rank, in order: init text, instructions, translation.

    Parameters
    ----------
    prompted : PromptedModel
    soft : SoftPrompt or None
        The loaded prompt; its ``init_text`` (a TEXT-initialised prompt) comes first.
    projection : mapping
        The projection so far; its ``translation`` (when searched) comes last.
    instructions : sequence of str
        Plain-language instructions, each as its own tokens.

    Returns
    -------
    list of Candidate
        Empty when there is nothing to compare with.
    """
    candidates = []
    if soft is not None and soft.init_text:
        candidates.append(init_text_candidate(prompted, soft.init_text, soft.num_virtual_tokens))
    candidates += [instruction_candidate(prompted, text) for text in instructions]
    translation = translation_candidate(prompted, projection)  # when the projection has one
    if translation is not None:
        candidates.append(translation)
    return candidates


def _candidate_prompt(prompted, candidate: Candidate) -> torch.Tensor:
    ids = torch.tensor(list(candidate.token_ids), device=prompted.device)
    return prompted.word_embeddings.detach()[ids]


def compare_instructions(
    prompted,
    candidates: Sequence[Candidate],
    texts: Sequence[str],
    *,
    soft_pred: np.ndarray,
    label_ids: np.ndarray | None = None,
    confidence: float = 0.95,
    known_predictions: Mapping[int, np.ndarray] | None = None,
    progress: bool = False,
) -> tuple[list[dict], list[np.ndarray]]:
    """Rank candidates by agreement with the soft prompt's decisions.

    Parameters
    ----------
    prompted : PromptedModel
        The model with its soft prompt.
    candidates : sequence of Candidate
    texts : sequence of str
        ``(n,)`` inputs.
    soft_pred : numpy.ndarray
        ``(n,)`` the soft prompt's predicted label indices.
    label_ids : numpy.ndarray, optional
        ``(n,)`` true label indices (accuracy is None without them).
    confidence : float
        Level of the Wilson intervals.
    known_predictions : mapping of int to numpy.ndarray, optional
        ``candidate index -> (n,)`` predictions already computed (the audit's
        init-text baseline), so they are not predicted again.

    Returns
    -------
    (list of dict, list of numpy.ndarray)
        ``projection.instructions`` (docs/result-json.md#projection), best first, and each
        entry's ``(n,)`` predictions in the same order.
    """
    soft_pred = np.asarray(soft_pred)
    n = int(soft_pred.shape[0])
    known = dict(known_predictions or {})
    entries, predictions = [], []
    for i, candidate in enumerate(candidates):
        if i in known:
            pred = np.asarray(known[i])
        else:
            logger.info("instruction %d of %d: predicting %d texts with %r", i + 1,
                        len(candidates), n, candidate.text)
            probs = prompted.with_prompt(_candidate_prompt(prompted, candidate)).predict_proba(
                texts, progress=progress)
            pred = probs.argmax(axis=1)
        same = int((pred == soft_pred).sum())
        correct = None if label_ids is None else int((pred == np.asarray(label_ids)).sum())
        entries.append({
            "source": candidate.source,
            "text": candidate.text,
            "token_ids": list(candidate.token_ids),
            "n_tokens": len(candidate.token_ids),
            "note": candidate.note,
            "n_examples": n,
            "agreement": same / n if n else None,
            "agreement_interval": wilson_interval(same, n, confidence),
            "disagreements": n - same,
            "accuracy": None if correct is None or not n else correct / n,
            "accuracy_interval": None if correct is None else wilson_interval(correct, n,
                                                                              confidence),
        })
        predictions.append(pred)
    order = sorted(range(len(entries)), key=lambda i: (
        -(entries[i]["agreement"] or 0.0), _SOURCE_ORDER.get(entries[i]["source"], 3), i))
    ranked = [{"rank": rank, **entries[i]} for rank, i in enumerate(order, start=1)]
    return ranked, [predictions[i] for i in order]


# ---------------------------------------------------------------- departures
def _direction_words(soft_label: int, other_label: int, labels: Sequence[str],
                     positive: int | None) -> str:
    soft_name, other_name = labels[soft_label], labels[other_label]
    if positive is not None and len(labels) == 2:
        def verb(index: int) -> str:
            return "accepts" if index == positive else "rejects"

        return (f"the tuned prompt {verb(soft_label)} ({soft_name!r}) where the instruction "
                f"{verb(other_label)} ({other_name!r})")
    return f"the tuned prompt says {soft_name!r} where the instruction says {other_name!r}"


def _group_shares(groups: pd.DataFrame, departed: np.ndarray, confidence: float,
                  min_group_size: int) -> dict:
    out = {}
    n, m = len(departed), int(departed.sum())
    for feature in groups.columns:
        keys = np.array([MISSING_GROUP if pd.isna(v) else str(v) for v in groups[feature]],
                        dtype=object)
        rows = []
        for group in sorted(set(keys.tolist())):
            in_group = keys == group
            n_group, k = int(in_group.sum()), int((in_group & departed).sum())
            share_overall = n_group / n if n else None
            interval = clopper_pearson_interval(k, m, confidence)
            over = bool(interval is not None and share_overall is not None
                        and interval[0] > share_overall)
            rows.append({
                "group": group,
                "n_overall": n_group,
                "n_departures": k,
                "share_overall": share_overall,
                "share_departures": k / m if m else None,
                "departure_rate": k / n_group if n_group else None,
                "interval": interval,
                "over_represented": over,
                "small": n_group < min_group_size,
            })
        out[str(feature)] = rows
    return out


def _direction(soft_label: int, other_label: int, rows: list[int], texts: Sequence[str], *,
               labels: Sequence[str], positive: int | None, label_ids: np.ndarray | None,
               soft_probs: np.ndarray | None) -> dict:
    """One direction of :func:`find_departures`: its count and its first listed rows."""
    listed = [{
        "row": row,
        "text": str(texts[row]),
        "soft_label": labels[soft_label],
        "instruction_label": labels[other_label],
        "true_label": None if label_ids is None else labels[int(label_ids[row])],
        "soft_probability": None if soft_probs is None else float(soft_probs[row, soft_label]),
        "attributed": False,
    } for row in rows[:MAX_LISTED_ROWS]]
    return {
        "soft_label": labels[soft_label],
        "instruction_label": labels[other_label],
        "description": _direction_words(soft_label, other_label, labels, positive),
        "count": len(rows),
        "n_listed": len(listed),
        "rows": listed,
    }


def find_departures(
    texts: Sequence[str],
    soft_pred: np.ndarray,
    instruction_pred: np.ndarray,
    *,
    labels: Sequence[str],
    positive: int | None = None,
    label_ids: np.ndarray | None = None,
    soft_probs: np.ndarray | None = None,
    sensitive: pd.DataFrame | None = None,
    instruction: Mapping | None = None,
    confidence: float = 0.95,
    min_group_size: int = 30,
) -> dict:
    """The rows where the soft prompt and an instruction disagree, by direction.

    Parameters
    ----------
    texts : sequence of str
        ``(n,)`` inputs.
    soft_pred, instruction_pred : numpy.ndarray
        ``(n,)`` predicted label indices of the soft prompt and the instruction.
    labels : sequence of str
        Label names in index order.
    positive : int, optional
        Index of the favourable label (``model.positive_label``): with two
        labels directions read "accepts" / "rejects".
    label_ids : numpy.ndarray, optional
        ``(n,)`` true label indices.
    soft_probs : numpy.ndarray, optional
        ``(n, n_labels)`` the soft prompt's probabilities.
    sensitive : pandas.DataFrame, optional
        ``(n, n_features)`` sensitive features in row order.
    instruction : mapping, optional
        The compared candidate's entry (``source``, ``text``, ``rank``).
    confidence : float
        Level of the group intervals.
    min_group_size : int
        Groups smaller than this are marked ``small``.

    Returns
    -------
    dict
        ``projection.departures`` (docs/result-json.md#projection), ``attribution`` None.
    """
    soft_pred = np.asarray(soft_pred)
    instruction_pred = np.asarray(instruction_pred)
    n = int(soft_pred.shape[0])
    departed = soft_pred != instruction_pred
    pairs: dict[tuple[int, int], list[int]] = {}
    for row in np.flatnonzero(departed).tolist():
        pairs.setdefault((int(soft_pred[row]), int(instruction_pred[row])), []).append(row)
    directions = [
        _direction(soft_label, other_label, rows, texts, labels=labels, positive=positive,
                   label_ids=label_ids, soft_probs=soft_probs)
        for (soft_label, other_label), rows in sorted(pairs.items(),
                                                      key=lambda kv: (-len(kv[1]), kv[0]))]
    m = int(departed.sum())
    return {
        "instruction": None if instruction is None else {
            key: instruction.get(key) for key in ("source", "text", "rank", "agreement")},
        "n_examples": n,
        "n_departures": m,
        "share": m / n if n else None,
        "positive_label": None if positive is None else labels[positive],
        "directions": directions,
        "groups": None if sensitive is None else _group_shares(
            sensitive.reset_index(drop=True), departed, confidence, int(min_group_size)),
        "group_interval_method": GROUP_INTERVAL_METHOD,
        "confidence": float(confidence),
        "attribution": None,
    }


def _rows_to_attribute(directions: Sequence[Mapping], budget: int) -> list[tuple[int, int]]:
    """``(direction index, listed row index)`` pairs, in turn from each direction."""
    depth = max((len(direction["rows"]) for direction in directions), default=0)
    return [(d, i) for i in range(depth) for d, direction in enumerate(directions)
            if i < len(direction["rows"])][:max(budget, 0)]


def _no_attribution(departures: Mapping, max_attributed: int, n_attributed: int = 0) -> dict:
    """``departures.attribution`` before (or without) attribution."""
    return {
        "target": "the probability of the soft prompt's decision",
        "n_attributed": n_attributed,
        "n_departures": departures["n_departures"],
        "max_attributed": int(max_attributed),
        "rule": ATTRIBUTED_ROWS_RULE,
        "method": None, "baseline": None, "n_steps": None,
        "max_convergence_delta": None, "n_not_converged": None,
    }


def attribute_departures(prompted, departures: dict, *, max_attributed: int,
                         method=None, seed: int = 0) -> dict:
    """Add input-token attributions to at most ``max_attributed`` departure rows (in place).

    The attributed output is the probability of the *soft prompt's* decision
    (its predicted label), with :class:`promptaudit.attribution.PromptAttributor`,
    ``method`` (default: integrated gradients with its defaults) and ``seed``.
    Rows are chosen by :data:`ATTRIBUTED_ROWS_RULE`.

    Returns
    -------
    dict
        ``departures`` with ``attribution`` set and every attributed row carrying
        ``tokens``, ``token_attributions``, ``top_tokens`` and ``convergence_delta``.
    """
    from promptaudit.attribution import PromptAttributor

    chosen = _rows_to_attribute(departures["directions"], int(max_attributed))
    info = _no_attribution(departures, max_attributed, len(chosen))
    if chosen:
        rows = [departures["directions"][d]["rows"][i] for d, i in chosen]
        result = PromptAttributor(prompted, method, seed=seed).attribute(
            [r["text"] for r in rows])
        for row, example in zip(rows, result["examples"], strict=True):
            row.update({
                "attributed": True,
                "tokens": example["tokens"],
                "token_attributions": example["token_attributions"],
                "top_tokens": example["top_tokens"],
                "convergence_delta": example["convergence_delta"],
            })
        info.update({
            "method": result["method"], "baseline": result["baseline"],
            "n_steps": result["n_steps"],
            "max_convergence_delta": result["max_convergence_delta"],
            "n_not_converged": result.get("n_not_converged"),
        })
    departures["attribution"] = info
    return departures


def _summary(instructions: Sequence[Mapping], departures: Mapping) -> str:
    best = instructions[0]
    lo, hi = best["agreement_interval"] or (None, None)
    parts = [f"The closest plain-language instruction, {best['text']!r} ({best['source']}), "
             f"makes the soft prompt's decision on {best['agreement']:.1%} of "
             f"{best['n_examples']} rows (95% interval {lo:.1%} to {hi:.1%})."]
    m = departures["n_departures"]
    if m == 0:
        parts.append("It never departs from the soft prompt on these rows.")
    else:
        biggest = departures["directions"][0]
        parts.append(f"The tuned prompt departs from it on {m} rows; most often "
                     f"{biggest['description']} ({biggest['count']} rows).")
    flagged = [f"{feature} = {row['group']}"
               for feature, rows in (departures.get("groups") or {}).items()
               for row in rows if row["over_represented"]]
    if flagged:
        parts.append("Over-represented among the departures (interval above the group's "
                     "overall share): " + ", ".join(flagged) + ".")
    elif departures.get("groups") is not None and m:
        parts.append("No sensitive group is over-represented among the departures beyond "
                     "chance.")
    return " ".join(parts)


def explain_departures(
    prompted,
    texts: Sequence[str],
    *,
    soft_probs: np.ndarray,
    candidates: Sequence[Candidate],
    labels: Sequence[str] | None = None,
    positive: int | None = None,
    label_ids: np.ndarray | None = None,
    sensitive: pd.DataFrame | None = None,
    confidence: float = 0.95,
    min_group_size: int = 30,
    max_attributed: int = DEFAULT_MAX_ATTRIBUTED,
    known_predictions: Mapping[int, np.ndarray] | None = None,
    method=None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[list[dict], dict | None]:
    """Rank candidates, then describe where the soft prompt departs from the best one.

    Parameters
    ----------
    prompted : PromptedModel
        The model with its soft prompt.
    texts : sequence of str
        ``(n,)`` inputs.
    soft_probs : numpy.ndarray
        ``(n, n_labels)`` the soft prompt's probabilities on ``texts``.
    candidates : sequence of Candidate
        The init text, instructions, a translation (:func:`token_ids_candidate`).
    max_attributed : int
        Departure rows to attribute (0: none).
    method : IntegratedGradients, FeatureAblation or ShapleySampling, optional
        The attribution method of the departure rows (default: integrated gradients).

    Returns
    -------
    (list of dict, dict or None)
        ``projection.instructions`` and ``projection.departures`` (None without candidates).
    """
    if not candidates:
        return [], None
    labels = list(prompted.labels if labels is None else labels)
    soft_probs = np.asarray(soft_probs)
    soft_pred = soft_probs.argmax(axis=1)
    ranked, predictions = compare_instructions(
        prompted, candidates, texts, soft_pred=soft_pred, label_ids=label_ids,
        confidence=confidence, known_predictions=known_predictions, progress=progress)
    departures = find_departures(
        texts, soft_pred, predictions[0], labels=labels, positive=positive,
        label_ids=label_ids, soft_probs=soft_probs, sensitive=sensitive,
        instruction=ranked[0], confidence=confidence, min_group_size=min_group_size)
    departures["agreement_interval_method"] = AGREEMENT_INTERVAL_METHOD
    if max_attributed > 0 and departures["n_departures"]:
        attribute_departures(prompted, departures, max_attributed=max_attributed,
                             method=method, seed=seed)
    else:
        departures["attribution"] = _no_attribution(departures, max_attributed)
    departures["summary"] = _summary(ranked, departures)
    return ranked, departures
