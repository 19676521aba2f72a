"""Translate a soft prompt into a faithful, readable hard prompt (plain words).

:func:`translate_prompt` searches readable words that make the model decide like the
soft prompt, per seed (at least two): a PEZ phase (Wen et al. 2023: a continuous copy of
the prompt runs through its nearest allowed word embeddings and the gradient of
``KL(soft prompt's label distribution || the words')`` updates the copy, with
validation early stopping), then a coordinate search (each position's nearest words and
best first-order HotFlip-style candidates, screened on ``search_rows`` optimisation rows
and kept when they lower the KL on all of them). The run best on validation is the
translation; its fidelity (agreement of decisions with the soft prompt, 95% Wilson
interval) is measured once, on held-out rows no search or selection saw. The vocabulary
is whole words (:func:`readable_vocabulary`) or a word list; the text must round-trip
through the tokenizer (``round_trip_exact``); runs from different seeds are compared for
uniqueness (Khashabi et al. 2022). The README section "A faithful plain-text stand-in"
describes the method for users; ``benchmarks/bench_translation.py`` measures it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from promptaudit.errors import InputError
from promptaudit.projection import NO_PROMPT_MESSAGE, NO_TEXTS_MESSAGE, vocabulary_mask
from promptaudit.settings import TranslateSettings
from promptaudit.stats import wilson_interval

__all__ = [
    "TranslateSettings",
    "translate_prompt",
    "readable_vocabulary",
    "split_rows",
    "round_trip_ids",
    "wilson_interval",
    "word_overlap",
    "translation_summary",
    "MIN_WORD_LENGTH",
    "INTERVAL_METHOD",
    "SEVERAL_READINGS_SENTENCE",
    "STAND_IN_SENTENCE",
]

logger = logging.getLogger(__name__)

#: Shortest whole word kept in the default vocabulary (letters).
MIN_WORD_LENGTH = 2
#: How the fidelity interval is computed.
INTERVAL_METHOD = "wilson"
#: Most repair rounds of the joint round trip.
_MAX_REPAIRS = 50

SEVERAL_READINGS_SENTENCE = (
    "These words are one of several equally good readings: runs from different seeds found "
    "different texts whose fidelity intervals overlap, so don't over-read any single word."
)
STAND_IN_SENTENCE = (
    "a plain-text stand-in that reproduces {percent} ({low}-{high}, 95% Wilson interval) of the "
    "soft prompt's decisions on {n} held-out rows — not the prompt's meaning"
)

SEEDS_MESSAGE = "translate.seeds: {value!r}; give at least 2 distinct integer seeds"
TOO_FEW_TEXTS_MESSAGE = (
    "texts: {n} given; the translation needs at least {need} (split into optimisation, "
    "validation and held-out rows)"
)
WORD_LIST_MESSAGE = (
    "vocabulary {path}: {detail}; give a UTF-8 text file with one word per line "
    "(words that are a single whole-word token of the model's tokenizer)"
)



# ----------------------------------------------------------------- vocabulary
def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False,
                            clean_up_tokenization_spaces=False)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _reference_word_id(tokenizer, candidates: Sequence[int]) -> int:
    """A common whole word to test that a token starts a word when decoded after it."""
    for word in ("the", " the", "The", "a", " a"):
        ids = _encode(tokenizer, word)
        if len(ids) == 1:
            return ids[0]
    return int(candidates[0])


def _word_list_ids(tokenizer, path: Path, allowed: set[int]) -> tuple[list[int], list[str]]:
    """Token ids (ascending) of the words of ``path`` that are one allowed token each.

    Returns the ids and the words dropped (not one allowed token with or without a
    leading space).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(WORD_LIST_MESSAGE.format(path=path, detail=str(exc))) from exc
    words = list(dict.fromkeys(w.strip() for w in lines if w.strip()))
    if not words:
        raise InputError(WORD_LIST_MESSAGE.format(path=path, detail="no words"))
    wanted: list[int] = []
    dropped: list[str] = []
    for word in words:
        ids = _encode(tokenizer, word)
        pick = ids if len(ids) == 1 else _encode(tokenizer, " " + word)
        if len(pick) == 1 and pick[0] in allowed:
            wanted.append(pick[0])
        else:
            dropped.append(word)
    return sorted(set(wanted)), dropped


def readable_vocabulary(
    tokenizer,
    vocab_rows: int,
    *,
    word_list: str | Path | None = None,
    min_length: int = MIN_WORD_LENGTH,
) -> tuple[torch.Tensor, dict]:
    """Token ids of whole, readable, round-trip-safe words.

    A word is a token that is not special or unused
    (:func:`promptaudit.projection.vocabulary_mask`), is ASCII letters only, at least
    ``min_length`` long, starts a word (no ``##ing`` or non-initial BPE piece), and
    tokenizes back to itself after decoding.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    vocab_rows : int
        Rows of the input embedding matrix.
    word_list : str or Path, optional
        A file with one word per line; only those words are kept.
    min_length : int
        Shortest word (letters).

    Returns
    -------
    (torch.LongTensor, dict)
        ``(n_words,)`` allowed token ids (ascending) and a description
        ``{"source", "size", "rule", "dropped"}`` (``dropped``: words of the
        list that are not one whole-word token).
    """
    candidate_ids = torch.nonzero(vocabulary_mask(tokenizer, vocab_rows)).flatten().tolist()
    dropped: list[str] = []
    if word_list is not None:
        candidate_ids, dropped = _word_list_ids(tokenizer, Path(word_list), set(candidate_ids))
        source = str(Path(word_list))
        rule = "words of the list that are one whole-word, round-trip-safe token"
    else:
        source = "words"
        rule = (f"whole words: ASCII letters only, at least {min_length} long, word-initial "
                "tokens (no word pieces), no special or unused tokens, decode/tokenize round "
                "trip exact")
    texts = [_decode(tokenizer, [i]) for i in candidate_ids]
    reference = _reference_word_id(tokenizer, candidate_ids) if candidate_ids else 0
    reference_text = _decode(tokenizer, [reference]).strip()
    kept = []
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    for token_id, text, ids in zip(candidate_ids, texts, encoded, strict=True):
        word = text.strip()
        if word_list is None and not (word.isascii() and word.isalpha()
                                      and len(word) >= min_length):
            continue
        if not word or list(ids) != [token_id]:
            continue
        pair = _decode(tokenizer, [reference, token_id]).split()
        if pair != [reference_text, word]:
            continue
        kept.append(token_id)
    if word_list is not None:
        kept_set = set(kept)
        dropped += [_decode(tokenizer, [i]).strip() for i in candidate_ids if i not in kept_set]
    if len(kept) < 2:
        detail = f"only {len(kept)} usable whole word(s); need at least 2"
        if word_list is not None:
            raise InputError(WORD_LIST_MESSAGE.format(path=word_list, detail=detail))
        raise InputError(f"vocabulary: {detail}")
    info = {"source": source, "size": len(kept), "rule": rule, "dropped": dropped[:50]}
    return torch.tensor(kept, dtype=torch.long), info


def round_trip_ids(tokenizer, ids: Sequence[int]) -> bool:
    """Whether ``tokenize(decode(ids)) == ids`` (no special tokens added)."""
    return _encode(tokenizer, _decode(tokenizer, ids)) == list(ids)


def _repair_round_trip(
    tokenizer, ids: list[int], candidates: list[list[int]]
) -> tuple[list[int], int]:
    """Replace positions that break the joint round trip by their next candidate.

    Returns the repaired ids and the number of replacements.
    """
    ids = list(ids)
    replaced = 0
    pointer = [0] * len(ids)
    for _ in range(_MAX_REPAIRS):
        again = _encode(tokenizer, _decode(tokenizer, ids))
        if again == ids:
            return ids, replaced
        position = next((i for i, (a, b) in enumerate(zip(ids, again, strict=False)) if a != b),
                        min(len(ids), len(again)) - 1)
        position = max(0, min(position, len(ids) - 1))
        options = [c for c in candidates[position] if c != ids[position]]
        if pointer[position] >= len(options):
            break
        ids[position] = options[pointer[position]]
        pointer[position] += 1
        replaced += 1
    return ids, replaced


# ------------------------------------------------------------------ statistics
def word_overlap(a: Sequence[str], b: Sequence[str]) -> dict:
    """Jaccard overlap of two word sequences' word sets, and the share of equal positions."""
    set_a, set_b = set(a), set(b)
    union = set_a | set_b
    jaccard = len(set_a & set_b) / len(union) if union else 1.0
    n = max(len(a), len(b))
    positional = sum(x == y for x, y in zip(a, b, strict=False)) / n if n else 1.0
    return {"jaccard": float(jaccard), "positional": float(positional)}


# ------------------------------------------------------------------ the model
class _Rows:
    """Encoded rows with the soft prompt's label distribution (kept for exact scoring)."""

    def __init__(self, prompted, texts: list[str], batch_size: int) -> None:
        self.prompted = prompted
        self.texts = texts
        self.batch_size = batch_size
        order = np.argsort([len(t) for t in texts], kind="stable")
        self.batches = []
        for start in range(0, len(texts), batch_size):
            index = order[start:start + batch_size]
            encoded = prompted.encode([texts[i] for i in index]).to(prompted.device)
            with torch.no_grad():
                embeds = prompted.embed(encoded.input_ids)
            self.batches.append((torch.as_tensor(index), encoded, embeds))

    def log_probs(self, prompt: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
        """``(n_rows, n_labels)`` log-probabilities with ``prompt`` in the virtual slots."""
        out = None
        context = torch.enable_grad() if grad else torch.no_grad()
        with context:
            for index, encoded, embeds in self.batches:
                logits = self.prompted.label_logits(
                    prompt, embeds, encoded.attention_mask, encoded.token_type_ids,
                    encoded.readout_index,
                )
                logp = torch.log_softmax(logits.float(), dim=-1)
                if out is None:
                    out = logp.new_zeros(len(self.texts), logp.shape[1])
                out = out.index_copy(0, index.to(logp.device), logp)
        return out


def _kl(soft_logp: torch.Tensor, hard_logp: torch.Tensor) -> torch.Tensor:
    """Mean ``KL(soft || hard)`` over rows."""
    return (soft_logp.exp() * (soft_logp - hard_logp)).sum(dim=-1).mean()


def _normalized(matrix: torch.Tensor) -> torch.Tensor:
    return matrix / matrix.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _nearest(continuous: torch.Tensor, words_unit: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``(n_positions, k)`` indices into the allowed words, nearest by cosine."""
    scores = _normalized(continuous.float()) @ words_unit.T
    return scores.topk(k, dim=-1).indices


@dataclass
class _Run:
    seed: int
    ids: list[int]
    validation_agreement: float
    validation_kl: float
    steps: int
    sweeps: int
    seconds: float
    candidates: list[list[int]] = field(default_factory=list)


class _Search:
    """One model, its allowed words and the row splits; runs seeds."""

    def __init__(self, prompted, allowed_ids: torch.Tensor, rows_opt: list[str],
                 rows_val: list[str], settings: TranslateSettings) -> None:
        self.prompted = prompted
        self.settings = settings
        weights = prompted.word_embeddings.detach()
        self.allowed_ids = allowed_ids.to(weights.device)
        self.words = weights[self.allowed_ids].float()  # (n_words, hidden)
        self.words_unit = _normalized(self.words)
        self.dtype = weights.dtype
        soft = prompted.prompt.detach()
        self.soft = soft
        self.opt = _Rows(prompted, rows_opt, settings.batch_size)
        self.val = _Rows(prompted, rows_val, 64)
        self.opt_soft = self.opt.log_probs(soft)
        self.val_soft = self.val.log_probs(soft)
        self.val_soft_pred = self.val_soft.argmax(-1)

    # -------------------------------------------------------------- scoring
    def _prompt_of(self, word_index: torch.Tensor) -> torch.Tensor:
        return self.words[word_index].to(self.dtype)

    def validate(self, word_index: torch.Tensor) -> tuple[float, float]:
        logp = self.val.log_probs(self._prompt_of(word_index))
        agreement = float((logp.argmax(-1) == self.val_soft_pred).float().mean())
        return agreement, float(_kl(self.val_soft, logp))

    def _better(self, a: tuple[float, float], b: tuple[float, float] | None) -> bool:
        """Validation (agreement, kl) ``a`` beats ``b``: higher agreement, then lower KL."""
        return b is None or a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])

    # ------------------------------------------------------------------ PEZ
    def pez(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """PEZ phase; returns (best word indices, continuous copy, steps run)."""
        s = self.settings
        generator = torch.Generator().manual_seed(seed)
        continuous = self.soft.float().clone()
        if seed != s.seed:  # restarts start from a perturbed copy
            noise = torch.randn(continuous.shape, generator=generator)
            continuous = continuous + 0.5 * noise.to(continuous.device) * continuous.std()
        continuous.requires_grad_(True)
        optimizer = torch.optim.Adam([continuous], lr=s.learning_rate)
        n_batches = len(self.opt.batches)
        best_index = _nearest(continuous.detach(), self.words_unit)[:, 0]
        best_score = self.validate(best_index)
        stale, step = 0, 0
        for step in range(1, s.steps + 1):
            batch_number = int(torch.randint(n_batches, (1,), generator=generator))
            index, encoded, embeds = self.opt.batches[batch_number]
            word_index = _nearest(continuous.detach(), self.words_unit)[:, 0]
            hard = self.words[word_index]
            projected = continuous + (hard - continuous).detach()  # straight-through
            logits = self.prompted.label_logits(
                projected.to(self.dtype), embeds, encoded.attention_mask,
                encoded.token_type_ids, encoded.readout_index,
            )
            loss = _kl(self.opt_soft[index.to(logits.device)],
                       torch.log_softmax(logits.float(), dim=-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % s.eval_every == 0 or step == s.steps:
                word_index = _nearest(continuous.detach(), self.words_unit)[:, 0]
                score = self.validate(word_index)
                if self._better(score, best_score):
                    best_index, best_score, stale = word_index.clone(), score, 0
                else:
                    stale += 1
                logger.info("translate seed %d: PEZ step %d/%d, validation agreement %.3f "
                            "(best %.3f)", seed, step, s.steps, score[0], best_score[0])
                if stale >= s.patience:
                    break
        return best_index, continuous.detach(), step

    # -------------------------------------------------------- coordinate search
    def _search_rows(self, seed: int) -> list:
        """A seeded random sample of ``search_rows`` optimisation rows that screens candidates.

        A random sample keeps the KL an unbiased estimate of the optimisation rows'
        KL (choosing the hardest rows instead over-fitted them: on the demo prompt the
        validation agreement fell from 0.80 to 0.58 in one sweep).

        Returns
        -------
        list of (index, input_embeds, attention_mask, token_type_ids, readout_index)
        """
        generator = torch.Generator().manual_seed(seed)
        n = len(self.opt.texts)
        chosen = torch.randperm(n, generator=generator)[: self.settings.search_rows].sort().values
        return self._gather(chosen)

    def _gather(self, rows: torch.Tensor) -> list:
        """Batches ``(index, embeds, mask, types, readout)`` of the given optimisation rows."""
        where = {}
        for b, (index, _, _) in enumerate(self.opt.batches):
            for k, row in enumerate(index.tolist()):
                where[row] = (b, k)
        parts: dict[int, list[tuple[int, int]]] = {}
        for row in rows.tolist():
            b, k = where[row]
            parts.setdefault(b, []).append((row, k))
        out = []
        for b, members in sorted(parts.items()):
            _, encoded, embeds = self.opt.batches[b][:3]
            ks = torch.tensor([k for _, k in members], device=embeds.device)
            out.append((
                torch.tensor([row for row, _ in members]),
                embeds[ks], encoded.attention_mask[ks].to(embeds.device),
                None if encoded.token_type_ids is None else encoded.token_type_ids[ks],
                None if encoded.readout_index is None else encoded.readout_index[ks],
            ))
        return out

    def _kl_on(self, batches, prompts: torch.Tensor) -> torch.Tensor:
        """Mean KL on ``batches`` for each of ``prompts (n_candidates, n_positions, hidden)``.

        Returns
        -------
        torch.Tensor
            ``(n_candidates,)``.
        """
        n_candidates = prompts.shape[0]
        totals = torch.zeros(n_candidates, dtype=torch.float64)
        count = 0
        with torch.no_grad():
            for index, embeds, mask, types, readout in batches:
                rows = len(index)
                soft = self.opt_soft[index.to(self.opt_soft.device)]
                # candidates x rows in one forward, in chunks of about 4 batches of rows
                per = max(1, (4 * self.settings.batch_size) // rows)
                for c0 in range(0, n_candidates, per):
                    chunk = prompts[c0:c0 + per]
                    k = chunk.shape[0]
                    prompt = chunk.repeat_interleave(rows, dim=0)
                    logits = self.prompted.label_logits(
                        prompt.to(self.dtype), embeds.repeat(k, 1, 1), mask.repeat(k, 1),
                        None if types is None else types.repeat(k, 1),
                        None if readout is None else readout.repeat(k),
                    )
                    logp = torch.log_softmax(logits.float(), dim=-1).view(k, rows, -1)
                    kl = (soft.exp() * (soft - logp)).sum(-1).sum(-1)
                    totals[c0:c0 + k] += kl.double().cpu()
                count += rows
        return totals / max(count, 1)

    def _gradient(self, batches, word_index: torch.Tensor) -> torch.Tensor:
        """``(n_positions, hidden)`` gradient of the KL w.r.t. the hard prompt's embeddings."""
        prompt = self.words[word_index].clone().requires_grad_(True)
        total = 0
        for index, embeds, mask, types, readout in batches:
            logits = self.prompted.label_logits(prompt.to(self.dtype), embeds, mask, types,
                                                readout)
            logp = torch.log_softmax(logits.float(), dim=-1)
            soft = self.opt_soft[index.to(logp.device)]
            (soft.exp() * (soft - logp)).sum().backward()
            total += len(index)
        return prompt.grad / max(total, 1)

    def coordinate_search(self, seed: int, word_index: torch.Tensor,
                          continuous: torch.Tensor) -> tuple[torch.Tensor, int, list[list[int]]]:
        """Greedy sweeps over positions with exact scoring of ``top_k`` candidates each."""
        s = self.settings
        current = word_index.clone()
        best_index, best_score = current.clone(), self.validate(current)
        near = _nearest(continuous, self.words_unit, k=s.top_k)  # (n_positions, k)
        sweeps_done = 0
        every_row = self._gather(torch.arange(len(self.opt.texts)))
        full_kl = float(self._kl_on(every_row, self._prompt_of(current)[None])[0])
        for sweep in range(1, s.sweeps + 1):
            improved = False
            batches = self._search_rows(seed * 1000 + sweep)
            grad = self._gradient(batches, current)  # (n_positions, hidden)
            # First-order change of the KL for swapping each word in: (e_w - e_cur) . grad
            linear = grad @ self.words.T - (grad * self.words[current]).sum(-1, keepdim=True)
            flips = (-linear).topk(s.top_k, dim=-1).indices
            generator = torch.Generator().manual_seed(seed * 1000 + sweep)
            for position in torch.randperm(len(current), generator=generator).tolist():
                options = [o for o in dict.fromkeys(near[position].tolist()
                                                    + flips[position].tolist())
                           if o != int(current[position])]
                if not options:
                    continue
                trials = torch.cat([current[None], current.repeat(len(options), 1)])
                trials[1:, position] = torch.tensor(options, device=trials.device)
                # screen on the sample (the current words included), confirm on every row
                kls = self._kl_on(batches, self.words[trials])
                best = int(kls[1:].argmin()) + 1
                if float(kls[best]) >= float(kls[0]) - 1e-6:
                    continue
                confirmed = float(self._kl_on(every_row, self.words[trials[best]][None])[0])
                if confirmed < full_kl - 1e-6:
                    current, full_kl, improved = trials[best].clone(), confirmed, True
            current_kl = full_kl
            sweeps_done = sweep
            score = self.validate(current)
            if self._better(score, best_score):
                best_index, best_score = current.clone(), score
            logger.info("translate seed %d: coordinate sweep %d/%d, search KL %.4f, validation "
                        "agreement %.3f (best %.3f)", seed, sweep, s.sweeps, current_kl,
                        score[0], best_score[0])
            if not improved:
                break
        # Candidates per position for the round-trip repair: the kept word, then its neighbours.
        repair = _nearest(self.words[best_index], self.words_unit, k=min(16, len(self.words)))
        candidates = [[int(self.allowed_ids[j]) for j in row] for row in repair.tolist()]
        return best_index, sweeps_done, candidates

    def run(self, seed: int) -> _Run:
        start = time.perf_counter()
        torch.manual_seed(seed)
        word_index, continuous, steps = self.pez(seed)
        word_index, sweeps, candidates = self.coordinate_search(seed, word_index, continuous)
        agreement, kl = self.validate(word_index)
        ids = [int(self.allowed_ids[j]) for j in word_index.tolist()]
        return _Run(seed=seed, ids=ids, validation_agreement=agreement, validation_kl=kl,
                    steps=steps, sweeps=sweeps, seconds=time.perf_counter() - start,
                    candidates=candidates)


# ---------------------------------------------------------------- entry point
def split_rows(n: int, settings: TranslateSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of ``n`` rows into (optimisation, validation, held-out) indices.

    A permutation of ``range(n)`` drawn with ``settings.seed``: the first
    ``round(n * heldout_fraction)`` rows (at least 1) are held out, the next
    ``round(n * validation_fraction)`` (at least 1) validate, the rest optimise.
    Each part is returned sorted, ``(n_part,)`` int arrays.
    """
    order = np.random.default_rng(settings.seed).permutation(n)
    n_held = max(1, int(round(n * settings.heldout_fraction)))
    n_val = max(1, int(round(n * settings.validation_fraction)))
    held, val, opt = order[:n_held], order[n_held:n_held + n_val], order[n_held + n_val:]
    return np.sort(opt), np.sort(val), np.sort(held)


def _measure(prompted, ids: list[int], texts: list[str], soft_pred: np.ndarray,
             labels: np.ndarray | None) -> dict:
    embeddings = prompted.word_embeddings.detach()
    hard = embeddings[torch.as_tensor(ids, device=embeddings.device)]
    pred = prompted.with_prompt(hard).predict_proba(texts).argmax(axis=1)
    agree = int((pred == soft_pred).sum())
    n = len(texts)
    return {
        "agreement": agree / n,
        "agreement_interval": wilson_interval(agree, n),
        "accuracy": None if labels is None else float((pred == labels).mean()),
    }


def _words(tokenizer, ids: Sequence[int]) -> list[str]:
    return [_decode(tokenizer, [i]).strip() for i in ids]


def _checked_inputs(prompted, texts: Sequence[str],
                    label_ids: Sequence[int] | None) -> tuple[list[str], np.ndarray | None]:
    """The texts as strings and the labels as ``(n,)`` int64, or a one-line InputError."""
    if prompted.prompt is None:
        raise InputError(NO_PROMPT_MESSAGE)
    texts = [str(t) for t in texts]
    if not texts:
        raise InputError(NO_TEXTS_MESSAGE)
    need = 6
    if len(texts) < need:
        raise InputError(TOO_FEW_TEXTS_MESSAGE.format(n=len(texts), need=need))
    if label_ids is None:
        return texts, None
    labels = np.asarray(list(label_ids), dtype=np.int64)
    if labels.shape != (len(texts),):
        raise InputError(f"label_ids: {labels.shape[0]} labels for {len(texts)} texts; "
                         "expected one label index per text")
    return texts, labels


def _run_dict(prompted, run: _Run, held_texts: list[str], soft_pred: np.ndarray,
              held_labels: np.ndarray | None) -> dict:
    """One run's words after the round-trip repair, measured on the held-out rows."""
    tokenizer = prompted.tokenizer
    ids, repaired = _repair_round_trip(tokenizer, run.ids, run.candidates)
    measured = _measure(prompted, ids, held_texts, soft_pred, held_labels)
    return {
        "seed": run.seed, "text": _decode(tokenizer, ids), "token_ids": ids,
        "words": _words(tokenizer, ids), "round_trip_exact": round_trip_ids(tokenizer, ids),
        "repaired_positions": repaired,
        "agreement": measured["agreement"], "interval": measured["agreement_interval"],
        "accuracy": measured["accuracy"],
        "validation_agreement": run.validation_agreement, "steps": run.steps,
        "sweeps": run.sweeps, "seconds": run.seconds,
    }


def _nearest_words(prompted, allowed: torch.Tensor, held_texts: list[str],
                   soft_pred: np.ndarray, held_labels: np.ndarray | None) -> dict:
    """The baseline: each virtual token's nearest allowed word (cosine), measured."""
    words_unit = _normalized(prompted.word_embeddings.detach()[allowed].float().cpu())
    index = _nearest(prompted.prompt.detach().float().cpu(), words_unit)[:, 0]
    ids = [int(allowed[j]) for j in index.tolist()]
    measured = _measure(prompted, ids, held_texts, soft_pred, held_labels)
    return {"text": _decode(prompted.tokenizer, ids), "token_ids": ids,
            "agreement": measured["agreement"], "interval": measured["agreement_interval"],
            "accuracy": measured["accuracy"]}


def _search_runs(prompted, allowed: torch.Tensor, rows_opt: list[str], rows_val: list[str],
                 settings: TranslateSettings, seeds: list[int]) -> list[_Run]:
    """One search run per seed, on a float32 copy of the model."""
    from promptaudit.prompted_model import float32_model

    with float32_model(prompted) as model32:
        search = _Search(model32, allowed, rows_opt, rows_val, settings)
        return [search.run(seed) for seed in seeds]


def translate_prompt(
    prompted,
    texts: Sequence[str],
    *,
    label_ids: Sequence[int] | None = None,
    settings: TranslateSettings | None = None,
) -> dict:
    """Find readable words that make the model decide like its soft prompt.

    Parameters
    ----------
    prompted : PromptedModel
        The model with the soft prompt ``(num_virtual_tokens, hidden)``.
    texts : sequence of str
        ``n`` inputs; split (seeded) into optimisation, validation and held-out rows.
    label_ids : sequence of int, optional
        ``(n,)`` true label indices, for accuracies on the held-out rows.
    settings : TranslateSettings, optional

    Returns
    -------
    dict
        The ``projection.translation`` object of the result contract::

            {"text", "token_ids", "words", "fidelity": {"agreement", "interval",
             "interval_method", "n_heldout", "level"}, "accuracy": {"translation",
             "soft_prompt"} , "nearest_words_agreement", "round_trip_exact",
             "repaired_positions", "whole_words", "vocabulary": {...},
             "rows": {"optimisation", "validation", "heldout"}, "seeds", "steps",
             "sweeps", "seconds", "runs": [{"seed", "text", "token_ids",
             "agreement", "interval", "validation_agreement", "steps", "sweeps",
             "seconds"}], "uniqueness": {"overlap": [...], "equally_good",
             "sentence"}, "stand_in", "settings": {...}}
    """
    settings = settings or TranslateSettings()
    texts, labels = _checked_inputs(prompted, texts, label_ids)
    start = time.perf_counter()
    cpu_start = time.process_time()
    tokenizer = prompted.tokenizer
    word_list = None if settings.vocabulary == "words" else settings.vocabulary
    allowed, vocabulary = readable_vocabulary(tokenizer, prompted.word_embeddings.shape[0],
                                              word_list=word_list)
    opt, val, held = split_rows(len(texts), settings)
    logger.info("translate: %d allowed words; %d optimisation, %d validation, %d held-out rows",
                len(allowed), len(opt), len(val), len(held))
    seeds = [settings.seed + r for r in range(settings.restarts)]
    runs = _search_runs(prompted, allowed, [texts[i] for i in opt], [texts[i] for i in val],
                        settings, seeds)
    held_texts = [texts[i] for i in held]
    held_labels = None if labels is None else labels[held]
    soft_pred = prompted.predict_proba(held_texts).argmax(axis=1)
    run_dicts = [_run_dict(prompted, run, held_texts, soft_pred, held_labels) for run in runs]
    # The translation is the run best on validation (never on held-out rows).
    best = min(range(len(runs)), key=lambda i: (-runs[i].validation_agreement,
                                                runs[i].validation_kl, i))
    chosen = run_dicts[best]
    soft_accuracy = None if held_labels is None else float((soft_pred == held_labels).mean())
    fidelity = {"agreement": chosen["agreement"], "interval": chosen["interval"],
                "interval_method": INTERVAL_METHOD, "n_heldout": len(held),
                "level": _level(chosen["agreement"])}
    allowed_set = set(allowed.tolist())
    translation = {
        "text": chosen["text"], "token_ids": chosen["token_ids"], "words": chosen["words"],
        "seed": chosen["seed"], "fidelity": fidelity,
        "accuracy": {"translation": chosen["accuracy"], "soft_prompt": soft_accuracy},
        "nearest_words": _nearest_words(prompted, allowed, held_texts, soft_pred, held_labels),
        "round_trip_exact": chosen["round_trip_exact"],
        "repaired_positions": chosen["repaired_positions"],
        "whole_words": all(i in allowed_set for i in chosen["token_ids"]),
        "vocabulary": vocabulary,
        "rows": {"optimisation": len(opt), "validation": len(val), "heldout": len(held)},
        "seeds": seeds, "steps": settings.steps,
        "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
        "runs": run_dicts, "uniqueness": _uniqueness(run_dicts), "settings": settings.model_dump(),
    }
    translation["stand_in"] = stand_in_sentence(translation)
    translation["summary"] = translation_summary(translation)
    logger.info("translate: %s", translation["summary"])
    return translation


def _level(agreement: float) -> str:
    return "high" if agreement >= 0.9 else "moderate" if agreement >= 0.7 else "low"


def _uniqueness(runs: list[dict]) -> dict:
    pairs = []
    equally_good = False
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            a, b = runs[i], runs[j]
            overlap = word_overlap(a["words"], b["words"])
            same_text = a["token_ids"] == b["token_ids"]
            overlapping = (a["interval"] is not None and b["interval"] is not None
                           and a["interval"][0] <= b["interval"][1]
                           and b["interval"][0] <= a["interval"][1])
            tie = (not same_text) and overlapping
            equally_good = equally_good or tie
            pairs.append({"seeds": [a["seed"], b["seed"]], **overlap,
                          "same_text": same_text, "intervals_overlap": overlapping})
    if equally_good:
        sentence = SEVERAL_READINGS_SENTENCE
    else:
        sentence = ("Runs from different seeds agree on the text, or one reading is clearly "
                    "better than the others." if pairs else "Only one run: uniqueness unknown.")
    return {"pairs": pairs, "equally_good": equally_good, "sentence": sentence}


def stand_in_sentence(translation: dict) -> str:
    """"a plain-text stand-in that reproduces X% (interval) of ... — not the prompt's meaning"."""
    fidelity = translation["fidelity"]
    low, high = fidelity["interval"]
    return STAND_IN_SENTENCE.format(
        percent=f"{100 * fidelity['agreement']:.1f}%", low=f"{100 * low:.1f}%",
        high=f"{100 * high:.1f}%", n=fidelity["n_heldout"],
    )


def translation_summary(translation: dict) -> str:
    """One paragraph: the text as a stand-in, accuracies, baseline, uniqueness."""
    parts = [f"Translation \"{translation['text']}\": {translation['stand_in']}."]
    accuracy = translation["accuracy"]
    if accuracy["translation"] is not None and accuracy["soft_prompt"] is not None:
        parts.append(f"Accuracy on those rows: {100 * accuracy['translation']:.1f}% with the "
                     f"translation, {100 * accuracy['soft_prompt']:.1f}% with the soft prompt.")
    nearest = translation.get("nearest_words")
    if nearest:
        parts.append(f"The nearest whole words reproduce {100 * nearest['agreement']:.1f}%.")
    if not translation["round_trip_exact"]:
        parts.append("Warning: the text does not tokenize back to the measured token ids.")
    parts.append(translation["uniqueness"]["sentence"])
    return " ".join(parts)
