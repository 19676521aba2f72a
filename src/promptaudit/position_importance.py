"""Which virtual tokens matter: ablate one position at a time.

For each virtual token, the soft prompt with that row alone replaced by a **neutral
embedding** (the mean word embedding of the filtered vocabulary,
:func:`promptaudit.projection.vocabulary_mask`: a vector that stands for no word, unlike the
often trained pad embedding) predicts the first ``max_examples`` rows again. The position
**matters** when the 95% Wilson interval of its share of changed decisions lies above
:data:`IMPORTANCE_FLOOR`; the others are ignored on these rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from promptaudit.errors import InputError
from promptaudit.stats import wilson_interval

__all__ = ["neutral_embedding", "position_importance", "IMPORTANCE_FLOOR", "DEFAULT_MAX_EXAMPLES",
           "NEUTRAL", "IMPORTANCE_RULE"]

logger = logging.getLogger(__name__)

#: A position matters when its interval's lower end is above this share of decisions.
IMPORTANCE_FLOOR = 0.01
#: Rows predicted per ablated position by default.
DEFAULT_MAX_EXAMPLES = 50
#: The neutral embedding's name in the result.
NEUTRAL = "mean_word_embedding"
IMPORTANCE_RULE = (
    f"a position matters when the lower end of the 95% Wilson interval of its share of "
    f"changed decisions is above {IMPORTANCE_FLOOR:g}; the others are ignored by the model "
    "on these rows"
)


def neutral_embedding(prompted) -> torch.Tensor:
    """The mean embedding of the filtered vocabulary.

    Returns
    -------
    torch.Tensor
        ``(hidden,)`` in the embedding matrix's dtype and device.
    """
    from promptaudit.projection import vocabulary_mask

    weights = prompted.word_embeddings.detach()
    mask = vocabulary_mask(prompted.tokenizer, weights.shape[0]).to(weights.device)
    return weights[mask].double().mean(dim=0).to(weights.dtype)


def _neutralised_positions(prompted, texts: list[str], soft_pred: np.ndarray,
                           confidence: float, floor: float) -> list[dict]:
    """Per virtual token: the decisions (of ``soft_pred``, ``(n,)``) that change when it
    alone is replaced by the neutral embedding, with their Wilson interval."""
    neutral = neutral_embedding(prompted)
    prompt = prompted.prompt.detach()
    n = len(texts)
    positions = []
    for index in range(int(prompt.shape[0])):
        ablated = prompt.clone()
        ablated[index] = neutral.to(ablated.device, ablated.dtype)
        pred = prompted.with_prompt(ablated).predict_proba(texts).argmax(axis=1)
        changed = int((pred != soft_pred).sum())
        interval = wilson_interval(changed, n, confidence)
        positions.append({
            "index": index,
            "changed": changed,
            "share": changed / n,
            "interval": interval,
            "matters": bool(interval[0] > floor),
        })
    return positions


def position_importance(
    prompted,
    texts: Sequence[str],
    *,
    soft_probs: np.ndarray | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    confidence: float = 0.95,
    floor: float = IMPORTANCE_FLOOR,
    progress: bool = False,
) -> dict:
    """Share of decisions that change when each virtual token alone is neutralised.

    Parameters
    ----------
    prompted : PromptedModel
        The model with its soft prompt ``(num_virtual_tokens, hidden)``.
    texts : sequence of str
        Inputs; the first ``max_examples`` are used.
    soft_probs : numpy.ndarray, optional
        ``(n_texts, n_labels)`` the soft prompt's probabilities on ``texts`` (or
        at least on the first ``max_examples``), if already computed.
    max_examples : int
        Rows per ablated position.
    confidence : float
        Level of the intervals.
    floor : float
        The share a position's lower interval end must exceed to matter.

    Returns
    -------
    dict
        ``projection.position_importance`` (docs/result-json.md#projection).
    """
    if prompted.prompt is None:
        raise InputError("prompt: the model has no soft prompt; position importance needs one")
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise InputError(f"position_importance_max_examples: {max_examples!r}; must be an "
                         "integer >= 1")
    texts = [str(t) for t in texts][:max_examples]
    n = len(texts)
    if n == 0:
        raise InputError("texts: no examples for position importance; give at least one text")
    if soft_probs is None:
        soft_probs = prompted.predict_proba(texts)
    soft_pred = np.asarray(soft_probs)[:n].argmax(axis=1)
    prompt = prompted.prompt.detach()
    logger.info("position importance: %d virtual tokens x %d rows", prompt.shape[0], n)
    positions = _neutralised_positions(prompted, texts, soft_pred, confidence, floor)
    important = [p["index"] for p in positions if p["matters"]]
    ignored = [p["index"] for p in positions if not p["matters"]]
    return {
        "neutral": NEUTRAL,
        "neutral_rule": "each position alone replaced by the mean embedding of the filtered "
                        "vocabulary (no special, unused or padding rows)",
        "n_examples": n,
        "max_examples": int(max_examples),
        "confidence": float(confidence),
        "floor": float(floor),
        "interval_method": "Wilson score interval",
        "rule": IMPORTANCE_RULE,
        "positions": positions,
        "important": important,
        "ignored": ignored,
        "summary": _summary(positions, important, ignored, n),
    }


def _summary(positions, important, ignored, n) -> str:
    total = len(positions)
    if not important:
        return (f"No virtual token alone changes more than {IMPORTANCE_FLOOR:.0%} of decisions "
                f"on {n} rows when replaced by a neutral embedding: the prompt acts through "
                "its positions together, or not at all; read no single position's words.")
    top = max(positions, key=lambda p: p["share"])
    text = (f"{len(important)} of {total} virtual tokens matter on their own (neutralising one "
            f"changes more than {IMPORTANCE_FLOOR:.0%} of decisions, 95% interval): "
            + ", ".join(str(i) for i in important)
            + f"; the largest is position {top['index']} ({top['share']:.1%} of {n} decisions).")
    if ignored:
        text += (f" The model ignores positions {', '.join(str(i) for i in ignored)} on these "
                 "rows: their words explain nothing.")
    return text
