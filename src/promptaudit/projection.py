"""Read a soft prompt: nearest vocabulary words, and how far to trust them.

A tuned virtual token is a point in the input-embedding space; its nearest vocabulary words
are the usual way to "read" it. Beside the words this module reports (fields and rules in
docs/result-json.md#projection):

* **typicality**: is the virtual token closer to a real word than chance? Its best cosine
  to any word is compared with that of seeded random vectors with the vocabulary's
  per-dimension mean and spread (``off_manifold`` at or below their 99th percentile), its
  norm with the vocabulary's norms (``unusual_norm``);
* **drift**: for a PEFT ``TEXT``-initialised prompt, how far each position moved from its
  init token (``still_init`` is None where that token is outside the filtered vocabulary);
* **fidelity**: whether the projected hard prompt (the top-1 words) makes the soft
  prompt's predictions;
* **trust**: one level from fidelity and typicality (:func:`projection_trust`).

Neighbour scores are higher-is-closer: ``cosine``, ``dot`` or ``l2`` (the negative
Euclidean distance). One batched matmul over the filtered vocabulary
(:func:`vocabulary_mask`: no special, unused/reserved, empty or padding rows) finds
candidates, re-scored exactly in float64 and sorted best first, ties to the lower token id.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from promptaudit.choices import UNKNOWN_PROJECTION_METRIC_MESSAGE, ProjectionMetric
from promptaudit.errors import InputError
from promptaudit.result_sections import Fidelity, Trust
from promptaudit.settings import DEFAULT_MAX_LENGTH
from promptaudit.soft_prompts import text_init_token_ids

__all__ = [
    "Metric", "vocabulary_mask", "decoded_token", "readable_word", "marks_word_starts",
    "PIECE_MARK", "nearest_words", "projection_fidelity", "project_prompt",
    "load_for_projection", "PromptInEmbeddingSpace", "format_projection_table",
    "projection_summary", "projection_trust", "TRUST_RULE",
    # one-line error messages, which tests assert
    "UNKNOWN_METRIC_MESSAGE", "TOP_K_MESSAGE", "PROMPT_SHAPE_MESSAGE", "NO_PROMPT_MESSAGE",
    "VOCAB_TOO_SMALL_MESSAGE", "NO_TEXTS_MESSAGE", "SOFT_PROBS_SHAPE_MESSAGE",
    "LABEL_IDS_LENGTH_MESSAGE", "LABEL_IDS_RANGE_MESSAGE", "PROJECTED_IDS_LENGTH_MESSAGE",
    "PROJECTED_IDS_RANGE_MESSAGE",
    # documented knobs
    "REFERENCE_SAMPLE_SIZE", "OFF_MANIFOLD_NORM_PERCENTILES", "HIGH_AGREEMENT",
    "MODERATE_AGREEMENT", "CHANCE_SAMPLE_SIZE", "CHANCE_PERCENTILE",
]

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------ messages
UNKNOWN_METRIC_MESSAGE = UNKNOWN_PROJECTION_METRIC_MESSAGE
TOP_K_MESSAGE = (
    "top_k: {top_k!r}; must be an integer between 1 and {vocab_size} "
    "(the filtered vocabulary size)")
PROMPT_SHAPE_MESSAGE = (
    "prompt: shape {shape}; expected (num_virtual_tokens, {hidden}) to match the word embeddings")
NO_PROMPT_MESSAGE = "prompt: the model has no soft prompt to project; load or train one first"
VOCAB_TOO_SMALL_MESSAGE = (
    "vocabulary: only {vocab_size} usable word(s) after filtering special and unused tokens; "
    "need at least 2")
NO_TEXTS_MESSAGE = "texts: no examples to measure fidelity on; give at least one text"
SOFT_PROBS_SHAPE_MESSAGE = (
    "soft_probs: shape {shape}; expected ({n}, {n_labels}) for {n} texts and {n_labels} labels")
LABEL_IDS_LENGTH_MESSAGE = (
    "label_ids: {got} labels for {n} texts; expected one label index per text")
LABEL_IDS_RANGE_MESSAGE = "label_ids: value {value!r} is not a label index; allowed: 0..{max_id}"
PROJECTED_IDS_LENGTH_MESSAGE = (
    "projected_ids: {got} token ids for {n} virtual tokens; expected one id per virtual token")
PROJECTED_IDS_RANGE_MESSAGE = (
    "projected_ids: id {value!r} is outside the embedding matrix; allowed: 0..{max_id}")

# ------------------------------------------------------------ documented knobs
#: Vocabulary rows sampled (seeded) for the word-to-word nearest-neighbour reference.
REFERENCE_SAMPLE_SIZE = 2000
#: ``unusual_norm`` when the norm percentile among word norms falls outside this range.
OFF_MANIFOLD_NORM_PERCENTILES = (1.0, 99.0)
#: Random word-like vectors (vocabulary mean and spread) whose best cosine to any word
#: is the chance reference.
CHANCE_SAMPLE_SIZE = 1000
#: A virtual token is off-manifold ("at chance") when its best cosine to any word is not
#: above this percentile of the random vectors' best cosine.
CHANCE_PERCENTILE = 99.0
#: Trust in the reading: high needs this agreement and this share of readable tokens ...
TRUST_HIGH_AGREEMENT = 0.9
TRUST_HIGH_READABLE = 0.8
#: ... low below this agreement or this share of readable tokens.
TRUST_LOW_AGREEMENT = 0.7
TRUST_LOW_READABLE = 0.5
#: Fidelity levels by agreement of argmax predictions (soft vs projected prompt).
HIGH_AGREEMENT = 0.9
MODERATE_AGREEMENT = 0.7

#: Extra candidates taken from the float32 search before exact float64 re-scoring.
_CANDIDATE_MARGIN = 16
#: Rows of the reference sample scored per matmul (bounds memory to chunk x vocab).
_REFERENCE_CHUNK = 512
#: ``still_init`` holds when the init token is within this cosine of the best word.
_STILL_INIT_TOLERANCE = 1e-6
_EPS = 1e-12
_NORM_QUANTILES = (1, 5, 50, 95, 99)
_SIMILARITY_QUANTILES = (5, 25, 50, 75, 95)
_UNUSED_TOKEN = re.compile(
    r"^(\[unused\d+\]|<\|?(reserved|unused)[^<>]*\|?>|<extra_id_\d+>|madeupword\d+)$",
    re.IGNORECASE,
)
_METRIC_WORDS = {"cosine": "cosine similarity", "dot": "dot product",
                 "l2": "negative Euclidean distance"}


#: How closeness is scored; defined with the other closed choices (torch-free module).
Metric = ProjectionMetric


# ----------------------------------------------------------------- vocabulary
def vocabulary_mask(tokenizer, vocab_rows: int) -> torch.Tensor:
    """Which rows of the input embedding matrix are real, readable words.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    vocab_rows : int
        Rows of the embedding matrix (often padded past ``len(tokenizer)``).

    Returns
    -------
    torch.BoolTensor
        ``(vocab_rows,)``; ``False`` for special tokens, unused/reserved slots, empty
        tokens and rows at or past ``len(tokenizer)``.

    Examples
    --------
    >>> from transformers import AutoTokenizer
    >>> from promptaudit.models import builtin_minilm_dir
    >>> tokenizer = AutoTokenizer.from_pretrained(builtin_minilm_dir())
    >>> mask = vocabulary_mask(tokenizer, 30522)
    >>> bool(mask[tokenizer.cls_token_id]), bool(mask[tokenizer.convert_tokens_to_ids("movie")])
    (False, True)
    """
    n_tokens = min(int(vocab_rows), len(tokenizer))
    special = _special_ids(tokenizer)
    keep = [
        bool(token) and token_id not in special and not _UNUSED_TOKEN.match(token)
        for token_id, token in enumerate(_id_tokens(tokenizer, n_tokens))
    ]
    mask = torch.zeros(int(vocab_rows), dtype=torch.bool)
    mask[:n_tokens] = torch.tensor(keep, dtype=torch.bool)
    return mask


def _id_tokens(tokenizer, n_tokens: int) -> list[str | None]:
    """Token strings of ids ``0..n_tokens-1`` (``None`` where an id has none)."""
    try:
        return list(tokenizer.convert_ids_to_tokens(list(range(n_tokens))))
    except (IndexError, KeyError, ValueError, TypeError):
        tokens: list[str | None] = []
        for token_id in range(n_tokens):
            try:
                tokens.append(tokenizer.convert_ids_to_tokens(token_id))
            except (IndexError, KeyError, ValueError, TypeError):
                tokens.append(None)
        return tokens


def _special_ids(tokenizer) -> set[int]:
    special = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []) if i is not None}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special.update(int(i) for i, token in added.items() if getattr(token, "special", False))
    return special


def decoded_token(tokenizer, token: str) -> str:
    """A raw vocabulary token decoded with its tokenizer (stored as the neighbour's ``display``;
    the report shows it through :func:`promptaudit.report.escape.display_token`).

    WordPiece continuations keep their ``##`` (``##ing``), SentencePiece ``▁``
    and byte-level BPE ``Ġ`` become a leading space, ``Ċ`` a newline; a lone
    byte of a multi-byte character is shown as ``<0xC3>``.
    """
    if token.startswith("##"):
        return token
    if "\u2581" in token:
        return token.replace("\u2581", " ")
    try:
        text = tokenizer.convert_tokens_to_string([token])
    except Exception:  # tokenizer-specific failures: fall back to the raw token
        return token
    if "\ufffd" in text and "\ufffd" not in token:
        byte_of = _byte_decoder()
        if all(ch in byte_of for ch in token):
            return "".join(f"<0x{byte_of[ch]:02X}>" for ch in token)
        return token
    return text or token


PIECE_MARK = "\u2026"


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE: printable character -> byte (GPT-2's table, inverted)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def marks_word_starts(tokenizer) -> bool:
    """Whether the tokenizer marks word *starts* (byte-level BPE ``Ġ``, SentencePiece ``▁``).

    With such a tokenizer a token without the mark continues a word; with
    WordPiece the continuations carry ``##`` instead.
    """
    try:
        ids = tokenizer(" hello world", add_special_tokens=False)["input_ids"]
        tokens = tokenizer.convert_ids_to_tokens(list(ids))
    except Exception:  # tokenizer-specific failures: assume WordPiece-like
        return False
    return any(str(t)[:1] in ("\u0120", "\u2581") for t in tokens or [])


def readable_word(tokenizer, token: str, *, word_starts: bool | None = None) -> tuple[str, bool]:
    """A token as a reader should see it: a whole word, or a marked word piece (``##lved``
    reads ``…lved``, and so does a BPE/SentencePiece token without its word-start mark).

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    token : str
        A raw vocabulary token.
    word_starts : bool, optional
        :func:`marks_word_starts` of the tokenizer (computed when None).

    Returns
    -------
    (str, bool)
        The word (no leading space) and whether it is a piece of a word.

    Examples
    --------
    >>> from transformers import AutoTokenizer
    >>> from promptaudit.models import builtin_minilm_dir
    >>> readable_word(AutoTokenizer.from_pretrained(builtin_minilm_dir()), "##lved")
    ('…lved', True)
    """
    if token.startswith("##") and len(token) > 2:
        return PIECE_MARK + token[2:], True
    shown = decoded_token(tokenizer, token)
    if word_starts is None:
        word_starts = marks_word_starts(tokenizer)
    if shown.startswith("<0x"):
        return shown, True
    if word_starts and not shown[:1].isspace() and shown.strip():
        return PIECE_MARK + shown, True
    return shown.strip() or shown, False


@dataclass(frozen=True)
class _Vocabulary:
    """The filtered vocabulary as float32 unit rows plus norms (one copy of the matrix).

    Attributes
    ----------
    ids : torch.LongTensor
        ``(vocab_size,)`` embedding-row ids that were kept.
    unit : torch.Tensor
        ``(vocab_size, hidden)`` float32 rows scaled to norm 1 (zero rows stay 0).
    norms : torch.Tensor
        ``(vocab_size,)`` float32 L2 norms of the rows.
    weights : torch.Tensor
        ``(vocab_rows, hidden)`` the full embedding matrix (not copied), for re-scoring.
    """

    ids: torch.Tensor
    unit: torch.Tensor
    norms: torch.Tensor
    weights: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    @property
    def rows(self) -> int:
        return int(self.weights.shape[0])


def _filtered_vocabulary(word_embeddings: torch.Tensor, mask: torch.Tensor) -> _Vocabulary:
    weights = word_embeddings.detach()
    ids = mask.to(torch.bool).nonzero().squeeze(1).to(weights.device)
    vectors = weights.index_select(0, ids).to(torch.float32)
    norms = vectors.norm(dim=1)
    unit = vectors.div_(norms.clamp_min(_EPS)[:, None])
    return _Vocabulary(ids=ids, unit=unit, norms=norms, weights=weights)


# ------------------------------------------------------------------ neighbours
def _check_prompt(prompt, hidden: int) -> torch.Tensor:
    prompt = torch.as_tensor(prompt)
    if prompt.ndim != 2 or prompt.shape[1] != hidden or prompt.shape[0] < 1:
        raise InputError(PROMPT_SHAPE_MESSAGE.format(shape=tuple(prompt.shape), hidden=hidden))
    return prompt.detach()


def _check_top_k(top_k, vocab_size: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or not (
        1 <= int(top_k) <= vocab_size
    ):
        raise InputError(TOP_K_MESSAGE.format(top_k=top_k, vocab_size=vocab_size))
    return int(top_k)


def _score_matrix(prompt: torch.Tensor, vocab: _Vocabulary, metric: Metric) -> torch.Tensor:
    """Scores of every virtual token against every filtered word, from one matmul.

    Parameters
    ----------
    prompt : torch.Tensor
        ``(num_virtual_tokens, hidden)`` float32 on the vocabulary's device.

    Returns
    -------
    torch.Tensor
        ``(num_virtual_tokens, vocab_size)`` float32, higher is closer.
    """
    prompt_norms = prompt.norm(dim=1, keepdim=True)
    if metric is Metric.COSINE:
        return (prompt / prompt_norms.clamp_min(_EPS)) @ vocab.unit.T
    dot = (prompt @ vocab.unit.T) * vocab.norms[None, :]
    if metric is Metric.DOT:
        return dot
    squared = prompt_norms**2 + vocab.norms[None, :] ** 2 - 2 * dot
    return -squared.clamp_min(0).sqrt()


def _exact_scores(prompt: torch.Tensor, words: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Float64 scores of each virtual token against its own candidate words.

    Parameters
    ----------
    prompt : torch.Tensor
        ``(num_virtual_tokens, hidden)``.
    words : torch.Tensor
        ``(num_virtual_tokens, n_candidates, hidden)``.

    Returns
    -------
    torch.Tensor
        ``(num_virtual_tokens, n_candidates)`` float64.
    """
    p = prompt.double()[:, None, :]
    w = words.double()
    if metric is Metric.L2:
        return 0.0 - (p - w).norm(dim=-1)  # 0.0 - x keeps an exact match at +0.0
    dot = (p * w).sum(dim=-1)
    if metric is Metric.DOT:
        return dot
    return dot / (p.norm(dim=-1) * w.norm(dim=-1)).clamp_min(_EPS)


def _top_words(
    prompt: torch.Tensor, vocab: _Vocabulary, metric: Metric, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` words per virtual token, exactly scored and sorted best first.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Token ids ``(num_virtual_tokens, k)`` int64 and scores
        ``(num_virtual_tokens, k)`` float64; ties go to the lower token id.
    """
    prompt = prompt.to(vocab.unit.device, torch.float32)
    n_candidates = min(vocab.size, k + _CANDIDATE_MARGIN)
    candidates = torch.topk(_score_matrix(prompt, vocab, metric), n_candidates, dim=1).indices
    candidate_ids = vocab.ids[candidates]
    scores = _exact_scores(prompt, vocab.weights[candidate_ids], metric).cpu().numpy()
    token_ids = candidate_ids.cpu().numpy()
    order = np.stack([np.lexsort((ids, -row)) for ids, row in zip(token_ids, scores, strict=True)])
    order = order[:, :k]
    return np.take_along_axis(token_ids, order, 1), np.take_along_axis(scores, order, 1)


def _neighbor_dicts(tokenizer, token_ids: np.ndarray, scores: np.ndarray) -> list[list[dict]]:
    """Per virtual token, the neighbour entries of ``(n, k)`` ids and scores."""
    word_starts = marks_word_starts(tokenizer)

    def entry(token_id: int, score: float) -> dict:
        token = tokenizer.convert_ids_to_tokens(int(token_id))
        word, piece = readable_word(tokenizer, token, word_starts=word_starts)
        return {"token": token, "token_id": int(token_id), "score": float(score),
                "display": decoded_token(tokenizer, token), "word": word, "piece": piece}

    return [[entry(i, v) for i, v in zip(row_ids.tolist(), row_scores.tolist(), strict=True)]
            for row_ids, row_scores in zip(token_ids, scores, strict=True)]


def nearest_words(
    prompt: torch.Tensor,
    word_embeddings: torch.Tensor,
    *,
    tokenizer,
    top_k: int = 5,
    metric: Metric | str = Metric.COSINE,
    vocab_mask: torch.Tensor | None = None,
) -> list[list[dict]]:
    """The ``top_k`` vocabulary words nearest to each virtual token.

    Parameters
    ----------
    prompt : torch.Tensor
        ``(num_virtual_tokens, hidden)`` soft prompt.
    word_embeddings : torch.Tensor
        ``(vocab_rows, hidden)`` input embedding matrix.
    tokenizer : transformers.PreTrainedTokenizerBase
    top_k : int
        Neighbours per virtual token, ``1 <= top_k <= filtered vocabulary size``.
    metric : {"cosine", "dot", "l2"}
        Score, higher is closer (``l2`` is the negative distance).
    vocab_mask : torch.BoolTensor, optional
        ``(vocab_rows,)`` precomputed :func:`vocabulary_mask`.

    Returns
    -------
    list of list of dict
        Per virtual token, best first: ``{"token", "token_id", "score", "display", "word",
        "piece"}``.

    Raises
    ------
    InputError
        An unknown metric, a ``top_k`` out of range, or a prompt of another width.

    Examples
    --------
    >>> from transformers import AutoModel, AutoTokenizer
    >>> from promptaudit.models import builtin_minilm_dir
    >>> tok = AutoTokenizer.from_pretrained(builtin_minilm_dir())
    >>> words = AutoModel.from_pretrained(builtin_minilm_dir()).get_input_embeddings().weight
    >>> rows = words[tok.convert_tokens_to_ids(["the", "movie"])].detach()
    >>> [n[0]["token"] for n in nearest_words(rows, words.detach(), tokenizer=tok, top_k=1)]
    ['the', 'movie']
    """
    metric = Metric.parse(metric)
    prompt = _check_prompt(prompt, int(word_embeddings.shape[1]))
    if vocab_mask is None:
        vocab_mask = vocabulary_mask(tokenizer, word_embeddings.shape[0])
    vocab = _filtered_vocabulary(word_embeddings, vocab_mask)
    top_k = _check_top_k(top_k, vocab.size)
    token_ids, scores = _top_words(prompt, vocab, metric, top_k)
    return _neighbor_dicts(tokenizer, token_ids, scores)


# ----------------------------------------------------------------- typicality
@dataclass(frozen=True)
class _Reference:
    """What real words look like: their norms and word-to-word nearest-neighbour cosines.

    Attributes
    ----------
    norms : numpy.ndarray
        ``(vocab_size,)`` float64 norms of the filtered vocabulary, sorted.
    nn_similarity : numpy.ndarray
        ``(sample_size,)`` float64 best cosine of each sampled word to any
        other filtered word, sorted.
    """

    norms: np.ndarray
    nn_similarity: np.ndarray
    vocab_rows: int
    seed: int
    chance_similarity: np.ndarray | None = None

    @property
    def chance_threshold(self) -> float:
        """Best cosine to any word that random word-like vectors exceed only 1% of the time."""
        if self.chance_similarity is None or not self.chance_similarity.size:
            return -math.inf
        return float(np.percentile(self.chance_similarity, CHANCE_PERCENTILE))

    @property
    def median_norm(self) -> float:
        return float(np.median(self.norms))

    def to_dict(self) -> dict:
        low, high = OFF_MANIFOLD_NORM_PERCENTILES
        return {
            "vocab_rows": self.vocab_rows,
            "vocab_size": int(self.norms.shape[0]),
            "median_norm": self.median_norm,
            "norm_quantiles": {f"p{q}": float(np.percentile(self.norms, q))
                               for q in _NORM_QUANTILES},
            "nn_similarity_quantiles": {f"p{q}": float(np.percentile(self.nn_similarity, q))
                                        for q in _SIMILARITY_QUANTILES},
            "sample_size": int(self.nn_similarity.shape[0]),
            "seed": self.seed,
            "chance_similarity_quantiles": (
                None if self.chance_similarity is None else
                {f"p{q}": float(np.percentile(self.chance_similarity, q))
                 for q in (*_SIMILARITY_QUANTILES, 99)}
            ),
            "chance_sample_size": (
                0 if self.chance_similarity is None else int(self.chance_similarity.shape[0])
            ),
            "chance_threshold": self.chance_threshold,
            "off_manifold_rule": (
                f"best_similarity not above {self.chance_threshold:.4f}, the "
                f"{CHANCE_PERCENTILE:g}th percentile of the best cosine to any word of random "
                "vectors drawn from the vocabulary's per-dimension mean and spread (no closer "
                "to a word than chance)"
            ),
            "unusual_norm_rule": f"norm_percentile outside [{low:g}, {high:g}]",
        }


def _vocabulary_reference(vocab: _Vocabulary, *, sample_size: int, seed: int) -> _Reference:
    """Norms of all words and nearest-neighbour cosines of a seeded sample of words."""
    if vocab.size < 2:
        raise InputError(VOCAB_TOO_SMALL_MESSAGE.format(vocab_size=vocab.size))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(vocab.size, size=min(sample_size, vocab.size), replace=False))
    sample = torch.as_tensor(sample, device=vocab.unit.device)
    best = []
    for start in range(0, int(sample.shape[0]), _REFERENCE_CHUNK):
        rows = sample[start:start + _REFERENCE_CHUNK]
        sims = vocab.unit[rows] @ vocab.unit.T
        sims[torch.arange(rows.shape[0], device=sims.device), rows] = -math.inf
        best.append(sims.max(dim=1).values)
    nn_similarity = torch.cat(best).double().cpu().numpy()
    norms = vocab.norms.double().cpu().numpy()
    chance = _chance_similarity(vocab, sample_size=CHANCE_SAMPLE_SIZE, seed=seed)
    return _Reference(norms=np.sort(norms), nn_similarity=np.sort(nn_similarity),
                      vocab_rows=vocab.rows, seed=int(seed), chance_similarity=np.sort(chance))


def _chance_similarity(vocab: _Vocabulary, *, sample_size: int, seed: int) -> np.ndarray:
    """Best cosine to any word of random vectors that only *look* like word embeddings.

    The vectors are drawn (seeded, on the CPU) from a Gaussian with the filtered
    vocabulary's per-dimension mean and standard deviation, so they share the
    embedding space's common offset and spread but no word's meaning.

    Returns
    -------
    numpy.ndarray
        ``(sample_size,)`` float64.
    """
    vectors = vocab.unit * vocab.norms[:, None]  # the filtered rows, float32
    mean, spread = vectors.mean(dim=0).cpu(), vectors.std(dim=0).cpu()
    del vectors
    generator = torch.Generator().manual_seed(int(seed) + 1)
    best = []
    for start in range(0, sample_size, _REFERENCE_CHUNK):
        count = min(_REFERENCE_CHUNK, sample_size - start)
        noise = torch.randn(count, mean.shape[0], generator=generator)
        rows = (mean + spread * noise).to(vocab.unit.device)
        rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(_EPS)
        best.append((rows @ vocab.unit.T).max(dim=1).values)
    return torch.cat(best).double().cpu().numpy()


def _percent_below(sorted_values: np.ndarray, value: float) -> float:
    """Percent of ``sorted_values`` strictly smaller than ``value``."""
    below = np.searchsorted(sorted_values, value, side="left")
    return float(100.0 * below / sorted_values.shape[0])


def _typicality(norm: float, best_similarity: float, reference: _Reference) -> dict:
    """Norm ratio, percentiles and the off-manifold flag of one virtual token."""
    median = reference.median_norm
    norm_percentile = _percent_below(reference.norms, norm)
    low, high = OFF_MANIFOLD_NORM_PERCENTILES
    reasons = []
    if best_similarity <= reference.chance_threshold:
        reasons.append("at chance")
    chance = reference.chance_similarity
    return {
        "norm": norm,
        "norm_ratio": norm / median if median > 0 else None,
        "norm_percentile": norm_percentile,
        "best_similarity": best_similarity,
        "similarity_percentile": _percent_below(reference.nn_similarity, best_similarity),
        "chance_percentile": (
            None if chance is None or not chance.size else _percent_below(chance, best_similarity)
        ),
        "off_manifold": bool(reasons),
        "off_manifold_reasons": reasons,
        "unusual_norm": not low <= norm_percentile <= high,
    }


# ---------------------------------------------------------------------- drift
def _text_init(soft_prompt) -> str | None:
    """The init text of a PEFT ``TEXT``-initialised prompt, else ``None``."""
    if soft_prompt is None:
        return None
    config = getattr(soft_prompt, "config", None) or {}
    method = getattr(soft_prompt, "init_method", None) or config.get("prompt_tuning_init")
    if str(method or "").upper() != "TEXT":
        return None
    text = getattr(soft_prompt, "init_text", None) or config.get("prompt_tuning_init_text")
    return str(text) if text else None


def _drift(
    prompt: torch.Tensor,
    word_embeddings: torch.Tensor,
    init_ids: Sequence[int] | None,
    best_similarity: Sequence[float],
    tokenizer,
    vocab_mask: torch.Tensor | None = None,
) -> list[dict]:
    """Per position: the init token, cosine to it, and whether it is still the nearest word.

    ``still_init`` holds when the init token is at least as close (cosine, within
    1e-6) as every filtered word. Drift reads the same vocabulary as the nearest
    words: where the init token is outside it (PEFT's TEXT init copies
    ``[CLS]``/``[SEP]`` too) ``init_in_vocabulary`` is false and ``still_init``
    is ``None`` (that token can never be a nearest word).
    """
    n = int(prompt.shape[0])
    if not init_ids or len(init_ids) != n:
        return [dict.fromkeys(("init_token", "init_token_id", "init_similarity", "still_init",
                               "init_in_vocabulary"))
                for _ in range(n)]
    ids = torch.as_tensor(list(init_ids), device=word_embeddings.device)
    init_rows = word_embeddings.detach().index_select(0, ids)[:, None, :]
    similarity = _exact_scores(prompt.to(word_embeddings.device), init_rows, Metric.COSINE)
    similarity = similarity[:, 0].cpu().tolist()
    readable = [True] * n if vocab_mask is None else [
        0 <= int(i) < vocab_mask.shape[0] and bool(vocab_mask[int(i)]) for i in init_ids
    ]
    return [
        {
            "init_token": tokenizer.convert_ids_to_tokens(int(token_id)),
            "init_token_id": int(token_id),
            "init_similarity": float(sim),
            "still_init": bool(sim >= best - _STILL_INIT_TOLERANCE) if in_vocab else None,
            "init_in_vocabulary": in_vocab,
        }
        for token_id, sim, best, in_vocab in zip(init_ids, similarity, best_similarity, readable,
                                                 strict=True)
    ]


# ------------------------------------------------------------------- fidelity
def _check_projected_ids(projected_ids, n_virtual: int, vocab_rows: int) -> list[int]:
    ids = [int(i) for i in np.asarray(projected_ids).reshape(-1).tolist()]
    if len(ids) != n_virtual:
        raise InputError(PROJECTED_IDS_LENGTH_MESSAGE.format(got=len(ids), n=n_virtual))
    for token_id in ids:
        if not 0 <= token_id < vocab_rows:
            raise InputError(PROJECTED_IDS_RANGE_MESSAGE.format(value=token_id,
                                                                max_id=vocab_rows - 1))
    return ids


def _check_soft_probs(soft_probs, n: int, n_labels: int) -> np.ndarray:
    probs = np.asarray(soft_probs, dtype=np.float64)
    if probs.shape != (n, n_labels):
        raise InputError(SOFT_PROBS_SHAPE_MESSAGE.format(shape=probs.shape, n=n, n_labels=n_labels))
    return probs


def _check_label_ids(label_ids, n: int, n_labels: int) -> np.ndarray:
    labels = list(np.asarray(label_ids).reshape(-1).tolist())
    if len(labels) != n:
        raise InputError(LABEL_IDS_LENGTH_MESSAGE.format(got=len(labels), n=n))
    for value in labels:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_labels:
            raise InputError(LABEL_IDS_RANGE_MESSAGE.format(value=value, max_id=n_labels - 1))
    return np.asarray(labels, dtype=np.int64)


def _fidelity_level(agreement: float) -> str:
    if agreement >= HIGH_AGREEMENT:
        return "high"
    if agreement >= MODERATE_AGREEMENT:
        return "moderate"
    return "low"


def _fidelity_sentence(
    level: str, changed: int, n: int, soft_accuracy: float | None,
    projected_accuracy: float | None,
) -> str:
    """Plain-language verdict on how well the nearest words stand in for the prompt."""
    reading = {
        "high": "High fidelity: the nearest words behave like the soft prompt",
        "moderate": "Moderate fidelity: the nearest words are a partial explanation",
        "low": "Low fidelity: the nearest words are a weak explanation",
    }[level]
    sentence = (f"{reading}: replacing the prompt by them changes {_percent(changed / n)} "
                f"of predictions ({changed} of {n}).")
    if soft_accuracy is not None and projected_accuracy is not None:
        sentence += (f" Accuracy is {_percent(soft_accuracy)} with the soft prompt and "
                     f"{_percent(projected_accuracy)} with the words.")
    return sentence


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def projection_fidelity(
    prompted,
    texts: Sequence[str],
    *,
    label_ids: Sequence[int] | None = None,
    soft_probs: np.ndarray | None = None,
    projected_ids: Sequence[int],
    projected_probs: np.ndarray | None = None,
) -> dict:
    """How the projected hard prompt (the embedding rows of ``projected_ids`` in place of
    the soft prompt) performs against the soft one.

    Parameters
    ----------
    prompted : PromptedModel
        The model with its soft prompt.
    texts : sequence of str
        ``n`` inputs.
    label_ids : sequence of int, optional
        ``(n,)`` true label indices; accuracies are ``None`` without them.
    soft_probs : numpy.ndarray, optional
        ``(n, n_labels)`` the soft prompt's probabilities, if already computed.
    projected_ids : sequence of int
        ``(num_virtual_tokens,)`` one token id per virtual token (top-1 words).
    projected_probs : numpy.ndarray, optional
        ``(n, n_labels)`` the projected prompt's probabilities, if already
        computed (the audit pipeline reuses them for its baselines).

    Returns
    -------
    dict
        ``projection.fidelity`` (docs/result-json.md#projection).
    """
    texts = [str(t) for t in texts]
    n = len(texts)
    if n == 0:
        raise InputError(NO_TEXTS_MESSAGE)
    n_labels = len(prompted.labels)
    embeddings = prompted.word_embeddings
    ids = _check_projected_ids(projected_ids, prompted.num_virtual_tokens, embeddings.shape[0])
    labels = None if label_ids is None else _check_label_ids(label_ids, n, n_labels)
    if soft_probs is None:
        soft_probs = prompted.predict_proba(texts)
    soft = _check_soft_probs(soft_probs, n, n_labels)
    if projected_probs is None:
        hard_prompt = embeddings.detach()[torch.as_tensor(ids, device=embeddings.device)]
        logger.info("fidelity: predicting %d texts with the projected hard prompt", n)
        projected_probs = prompted.with_prompt(hard_prompt).predict_proba(texts)
    projected = _check_soft_probs(projected_probs, n, n_labels)
    soft_pred, projected_pred = soft.argmax(axis=1), projected.argmax(axis=1)
    changed = int((soft_pred != projected_pred).sum())
    agreement = 1.0 - changed / n
    soft_accuracy = None if labels is None else float((soft_pred == labels).mean())
    projected_accuracy = None if labels is None else float((projected_pred == labels).mean())
    level = _fidelity_level(agreement)
    return Fidelity(
        projected_text=prompted.tokenizer.decode(ids),
        projected_token_ids=ids,
        n_examples=n,
        agreement=agreement,
        changed=changed,
        mean_prob_shift=float(0.5 * np.abs(soft - projected).sum(axis=1).mean()),
        soft_accuracy=soft_accuracy,
        projected_accuracy=projected_accuracy,
        level=level,
        verdict=_fidelity_sentence(level, changed, n, soft_accuracy, projected_accuracy),
    ).to_dict()


# ---------------------------------------------------------------- loading
@dataclass(frozen=True)
class PromptInEmbeddingSpace:
    """A soft prompt beside the embedding matrix it is read against (no task, no head).

    What :func:`project_prompt` needs when fidelity is not measured.

    Attributes
    ----------
    prompt : torch.Tensor
        ``(num_virtual_tokens, hidden)``.
    word_embeddings : torch.Tensor
        ``(vocab_rows, hidden)``.
    tokenizer : transformers.PreTrainedTokenizerBase
    """

    prompt: torch.Tensor
    word_embeddings: torch.Tensor
    tokenizer: object

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.prompt.shape[0])


def load_for_projection(
    model: str,
    prompt: str,
    *,
    task=None,
    labels: Sequence[str] | None = None,
    device: str = "auto",
    needs_predictions: bool = False,
    allow_untrained_head: bool = False,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 32,
):
    """Load what a projection needs: the embedding matrix, and a task model for fidelity.

    Without ``needs_predictions`` no task (and no trained head) is asked for; with it the
    task must be known (``task`` or the adapter's ``task_type``).

    Returns
    -------
    (PromptedModel or PromptInEmbeddingSpace, SoftPrompt)
    """
    from promptaudit.models import Task, load_input_embeddings
    from promptaudit.prompted_model import load_prompted_model
    from promptaudit.soft_prompts import check_prompt_tensor, load_prompt

    if needs_predictions:
        soft = load_prompt(prompt)
        if task is None and soft.task is None:
            allowed = ", ".join(t.value for t in Task)
            raise InputError(
                f"task: not given and the prompt {soft.source} does not say; fidelity (--data) "
                f"runs predictions, so pass --task (allowed: {allowed}), or leave out --data "
                "to read the nearest words alone"
            )
        prompted, soft, _ = load_prompted_model(
            model, prompt, task=task, labels=labels, device=device, max_length=max_length,
            batch_size=batch_size, allow_untrained_head=allow_untrained_head,
        )
        return prompted, soft
    soft = load_prompt(prompt)
    weights, tokenizer, _ = load_input_embeddings(model, device=device)
    check_prompt_tensor(soft.embeddings, source=soft.source, hidden_size=int(weights.shape[1]))
    view = PromptInEmbeddingSpace(soft.embeddings.to(weights.device, weights.dtype), weights,
                                  tokenizer)
    return view, soft


# ---------------------------------------------------------------- entry point
def _positions(prompt: torch.Tensor, vocab, metric: Metric, scores: torch.Tensor,
               neighbors: list, reference, init_text: str | None, *, tokenizer,
               embeddings: torch.Tensor, mask) -> list[dict]:
    """``projection.positions``: per virtual token its neighbours, typicality and drift.

    ``prompt`` is ``(n, hidden)``, ``scores`` ``(n, top_k)`` in ``metric``.
    """
    n = int(prompt.shape[0])
    if metric is Metric.COSINE:
        best_cosine = scores[:, 0]
    else:
        best_cosine = _top_words(prompt, vocab, Metric.COSINE, 1)[1][:, 0]
    norms = prompt.double().norm(dim=1).cpu().tolist()
    init_ids = text_init_token_ids(tokenizer, init_text, n) if init_text else None
    drift = _drift(prompt, embeddings, init_ids, best_cosine.tolist(), tokenizer, mask)
    return [
        {"index": i, "neighbors": neighbors[i],
         **_typicality(norms[i], float(best_cosine[i]), reference), **drift[i]}
        for i in range(n)
    ]


def _prompt_and_vocabulary(prompted):
    """The checked prompt ``(n, hidden)`` float32, the word embeddings ``(V, hidden)``, the
    vocabulary mask and the filtered vocabulary."""
    if prompted.prompt is None:
        raise InputError(NO_PROMPT_MESSAGE)
    embeddings = prompted.word_embeddings.detach()
    prompt = _check_prompt(prompted.prompt, int(embeddings.shape[1])).to(torch.float32)
    mask = vocabulary_mask(prompted.tokenizer, embeddings.shape[0])
    return prompt, embeddings, mask, _filtered_vocabulary(embeddings, mask)


def project_prompt(
    prompted,
    *,
    soft_prompt=None,
    top_k: int = 5,
    metric: Metric | str = Metric.COSINE,
    texts: Sequence[str] | None = None,
    label_ids: Sequence[int] | None = None,
    soft_probs: np.ndarray | None = None,
    seed: int = 0,
    reference_sample_size: int = REFERENCE_SAMPLE_SIZE,
) -> dict:
    """Project a soft prompt onto its nearest words and say how far to trust them.

    Parameters
    ----------
    prompted : PromptedModel
        The model with the soft prompt ``(num_virtual_tokens, hidden)`` to read.
    soft_prompt : SoftPrompt, optional
        Where the prompt came from; a PEFT ``TEXT`` init enables the drift fields.
    top_k : int
        Neighbours per virtual token.
    metric : {"cosine", "dot", "l2"}
        Neighbour score (higher is closer; ``l2`` is the negative distance).
        Typicality and drift always use cosine.
    texts : sequence of str, optional
        Inputs for the fidelity check; ``fidelity`` is ``None`` without them.
    label_ids : sequence of int, optional
        True label indices of ``texts`` for accuracies.
    soft_probs : numpy.ndarray, optional
        ``(n, n_labels)`` the soft prompt's probabilities on ``texts``, if known.
    seed, reference_sample_size : int
        Seed and size of the vocabulary sample behind the nearest-neighbour reference.

    Returns
    -------
    dict
        The result's ``projection`` object (docs/result-json.md#projection), plain Python.
    """
    metric = Metric.parse(metric)
    prompt, embeddings, mask, vocab = _prompt_and_vocabulary(prompted)
    top_k, tokenizer = _check_top_k(top_k, vocab.size), prompted.tokenizer
    n = int(prompt.shape[0])
    logger.info("projecting %d virtual tokens onto %d vocabulary words (%s)", n, vocab.size,
                metric.value)
    token_ids, scores = _top_words(prompt, vocab, metric, top_k)
    neighbors = _neighbor_dicts(tokenizer, token_ids, scores)
    reference = _vocabulary_reference(vocab, sample_size=reference_sample_size, seed=seed)
    init_text = _text_init(soft_prompt)
    positions = _positions(prompt, vocab, metric, scores, neighbors, reference, init_text,
                           tokenizer=tokenizer, embeddings=embeddings, mask=mask)
    projected_ids = [int(i) for i in token_ids[:, 0]]
    fidelity = None if texts is None else projection_fidelity(
        prompted, texts, label_ids=label_ids, soft_probs=soft_probs, projected_ids=projected_ids)
    projection = {
        "metric": metric.value,
        "top_k": top_k,
        "num_virtual_tokens": n,
        "vocab_size": vocab.size,
        "init": None if init_text is None else {"method": "TEXT", "text": init_text},
        "projected_text": tokenizer.decode(projected_ids),
        "projected_words": " ".join(nb[0]["word"] for nb in neighbors),
        "positions": positions,
        "reference": reference.to_dict(),
        "fidelity": fidelity,
    }
    projection["trust"] = projection_trust(projection)
    projection["summary"] = projection_summary(projection)
    return projection


TRUST_RULE = (
    f"high: fidelity agreement >= {TRUST_HIGH_AGREEMENT:g} and at least "
    f"{TRUST_HIGH_READABLE:.0%} of virtual tokens readable (closer to a word than chance); "
    f"low: fewer than {TRUST_LOW_READABLE:.0%} readable or agreement < {TRUST_LOW_AGREEMENT:g}; "
    "moderate: otherwise; without a fidelity check at most moderate"
)


def projection_trust(projection: dict) -> dict:
    """How far to trust the word reading, from fidelity and typicality (:data:`TRUST_RULE`).

    Parameters
    ----------
    projection : dict
        With ``positions`` (``off_manifold`` each) and ``fidelity`` (or ``None``).

    Returns
    -------
    dict
        ``{"level": "high" | "moderate" | "low", "readable": int, "n": int,
        "readable_share": float, "agreement": float | None, "reason": str,
        "rule": str}``.
    """
    positions = projection["positions"]
    n = len(positions)
    readable = sum(1 for p in positions if not p.get("off_manifold"))
    share = readable / n if n else 0.0
    fidelity = projection.get("fidelity")
    agreement = None if not fidelity else fidelity.get("agreement")
    said = f"{readable} of {n} virtual tokens are closer to a word than chance"
    if share < TRUST_LOW_READABLE:
        level, why = "low", (f"only {said}" if readable else
                             f"none of the {n} virtual tokens is closer to a word than chance")
        why += ", so most nearest words say nothing about the prompt"
    elif agreement is None:
        level, why = "moderate", f"{said}; the words were not checked against predictions"
    elif agreement < TRUST_LOW_AGREEMENT:
        level, why = "low", (f"{said}, but the words give the soft prompt's decision on only "
                             f"{agreement:.0%} of examples")
    elif agreement >= TRUST_HIGH_AGREEMENT and share >= TRUST_HIGH_READABLE:
        level, why = "high", (f"{said} and the words give the soft prompt's decision on "
                              f"{agreement:.0%} of examples")
    else:
        level, why = "moderate", (f"{said}; the words give the soft prompt's decision on "
                                  f"{agreement:.0%} of examples")
    return Trust(level=level, readable=readable, n=n, readable_share=share, agreement=agreement,
                 reason=why[0].upper() + why[1:] + ".", rule=TRUST_RULE).to_dict()


def projection_summary(projection: dict) -> str:
    """One plain-language paragraph on what the projection says and how far to trust it."""
    positions = projection["positions"]
    n = len(positions)
    reference = projection["reference"]
    off = sum(p["off_manifold"] for p in positions)
    best = float(np.median([p["best_similarity"] for p in positions]))
    words = projection.get("projected_words") or projection["projected_text"]
    parts = [
        f"Read against {projection['vocab_size']:,} vocabulary words by "
        f"{_METRIC_WORDS[projection['metric']]}, the {n} virtual tokens project to "
        f"\"{words}\""
        + (" (a leading \u2026 marks a piece of a word)." if PIECE_MARK in words else "."),
    ]
    if off:
        parts.append(f"{off} of {n} are no closer to any word than random vectors are "
                     "(off-manifold), so their nearest words say nothing about them.")
    else:
        parts.append(f"All {n} are closer to a word than random vectors are, so their nearest "
                     "words are plausible readings.")
    chance = reference.get("chance_threshold")
    parts.append(f"Their best cosine similarity to any word is {best:.2f} at the median"
                 + (f", against {chance:.2f} that random word-like vectors reach 1% of the time"
                    if isinstance(chance, float) and math.isfinite(chance) else "")
                 + f" and {reference['nn_similarity_quantiles']['p50']:.2f} between a typical "
                 "word and its nearest neighbour.")
    loud = sum(bool(p.get("unusual_norm")) for p in positions)
    if loud:
        parts.append(f"{loud} of {n} have a norm outside the vocabulary's range (median "
                     f"{float(np.median([p['norm_ratio'] or 0 for p in positions])):.1f}x a "
                     "typical word).")
    if projection["init"] is not None:
        comparable = [p for p in positions if p.get("still_init") is not None]
        readable = [p for p in comparable if not p.get("off_manifold")]
        still = sum(bool(p["still_init"]) for p in readable)
        drift = float(np.median([p["init_similarity"] for p in positions]))
        outside = len(positions) - len(comparable)
        at_chance = len(comparable) - len(readable)
        kept = (f"{still} of {len(readable)} readable positions initialised from a vocabulary "
                "word are still nearest it" if readable else
                f"none of the {len(comparable)} positions initialised from a vocabulary word is "
                "readable, so none can be said to keep its initial word")
        parts.append(f"Initialised from the text \"{projection['init']['text']}\", {kept} "
                     f"(median cosine to the init token {drift:.2f})"
                     + (f"; {at_chance} are off-manifold, so whether they kept their initial "
                        "word says nothing" if at_chance else "")
                     + (f"; {outside} started as special tokens outside the vocabulary read."
                        if outside else "."))
    fidelity = projection["fidelity"]
    parts.append(fidelity["verdict"] if fidelity else
                 "Fidelity was not measured (no texts given).")
    trust = projection.get("trust") or projection_trust(projection)
    parts.append(f"Trust in this reading: {trust['level']}. {trust['reason']}")
    return " ".join(parts)


# ---------------------------------------------------------------------- table
def _cell_token(display: str, width: int = 14) -> str:
    text = repr(display)
    return text if len(text) <= width else text[:width - 2] + "…" + text[0]


def _table_row(position: dict) -> list[str]:
    words = "  ".join(f"{_cell_token(nb.get('word') or nb['display'])} {nb['score']:.3f}"
                      for nb in position["neighbors"])
    ratio = position["norm_ratio"]
    off = ", ".join(position.get("off_manifold_reasons") or []) or (
        "yes" if position["off_manifold"] else "")
    drift = ""
    if position["init_token"] is not None:
        state = {True: "still", False: "moved", None: "special"}[position.get("still_init")]
        if position.get("off_manifold") and position.get("still_init") is not None:
            state = "at chance"  # an off-manifold position has no word, its initial one neither
        drift = f"{_cell_token(position['init_token'])} {position['init_similarity']:.3f} {state}"
    return [str(position["index"]), words, "-" if ratio is None else f"{ratio:.2f}",
            f"{position['best_similarity']:.3f}", off, drift]


def format_projection_table(projection: dict) -> str:
    """A terminal table of a projection followed by the fidelity verdict.

    Parameters
    ----------
    projection : dict
        As returned by :func:`project_prompt` (or read back from result JSON).

    Returns
    -------
    str
        Header line, one row per virtual token (position, nearest words with
        scores, norm ratio, best cosine, off-manifold reasons, drift from the
        init token), the reference numbers and the fidelity sentence.
    """
    header = ["pos", f"nearest words ({projection['metric']})", "norm×", "best cos",
              "off-manifold", "init drift"]
    rows = [_table_row(p) for p in projection["positions"]]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    aligned = [">", "<", ">", ">", "<", "<"]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{cell:{align}{width}}" for cell, align, width
                         in zip(cells, aligned, widths, strict=True)).rstrip()

    reference = projection["reference"]
    quantiles = reference["nn_similarity_quantiles"]
    lines = [
        f"Soft prompt: {projection['num_virtual_tokens']} virtual tokens read against "
        f"{projection['vocab_size']:,} vocabulary words (top {projection['top_k']}, "
        f"{_METRIC_WORDS[projection['metric']]})",
        line(header),
        line(["-" * w for w in widths]),
        *(line(r) for r in rows),
        "",
        f"Projected words: \"{projection.get('projected_words') or projection['projected_text']}\""
        + (" (\u2026 marks a piece of a word)"
           if PIECE_MARK in (projection.get("projected_words") or "") else ""),
        f"Reference: median word norm {reference['median_norm']:.3f}; nearest-neighbour cosine "
        f"between words p5 {quantiles['p5']:.3f}, median {quantiles['p50']:.3f}.",
    ]
    fidelity = projection["fidelity"]
    lines.append(fidelity["verdict"] if fidelity else
                 "Fidelity: not measured (no texts given).")
    trust = projection.get("trust") or projection_trust(projection)
    lines.append(f"Trust in this reading: {trust['level']}. {trust['reason']}")
    if projection.get("translation"):  # promptaudit.translation (--translate)
        lines.append(f"Plain-text stand-in (translation): {projection['translation']['summary']}")
    return "\n".join(lines)
