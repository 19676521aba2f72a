"""Mitigation: re-tune an audited soft prompt with counterfactual logit pairing.

Counterfactual logit pairing (CLP; Garg et al., 2019, "Counterfactual Fairness in
Text Classification through Robustness") adds to the task loss

    weight * mean_i | m(x_i) - m(x'_i) |

where ``x'_i`` is an identity-swapped variant of ``x_i`` (``"He is a nurse"`` ->
``"She is a nurse"``) and ``m`` is the logit *margin* of the positive label: the
positive logit minus the log-sum-exp of the other labels' logits (for two labels,
``logit_pos - logit_neg``, whose sigmoid is the positive probability). Pairs need
no labels.

Swaps come from a term suite (``builtin:identity``, all features or those named,
or a user suite; :func:`promptaudit.corpora.make_counterfactuals`) or from a pair
column (rows with the same id are variants of each other). With group columns an
optional group penalty adds ``group_weight`` times fairret's ``NormLoss`` over
``PositiveRate`` (the L1 distance of each group's positive rate, relative to the
overall rate, from parity) in each batch.

:func:`mitigate_prompt` warm-starts from the audited prompt (and, for
``SEQ_CLS``, the classifier head it came with) through
:func:`promptaudit.training.train_prompt`, so seeding, checkpoints, ``resume``
and progress bars are those of ``promptaudit train``. It sweeps a few weights,
evaluates each on a held-out validation split (accuracy, demographic-parity
ratio over the identity-swapped validation texts, flip rate) and keeps the
strongest mitigation whose accuracy is within ``max_accuracy_drop`` of the
original's. When no weight meets that budget nothing is claimed as mitigated:
no adapter is written and the result says so.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from promptaudit.choices import (
    DEFAULT_MITIGATION_EPOCHS,
    DEFAULT_MITIGATION_LEARNING_RATE,
    DEFAULT_PAIRING_WEIGHTS,
)
from promptaudit.errors import InputError
from promptaudit.report.comparison import fmt_or_undefined as _fmt

__all__ = [
    "DEFAULT_WEIGHTS",
    "MitigationMethod",
    "MitigationSettings",
    "MitigationResult",
    "PairingLoss",
    "build_variants",
    "clp_loss",
    "evaluate_prompt",
    "logit_margin",
    "mitigate_prompt",
    "select_weight",
]

logger = logging.getLogger(__name__)

#: Pairing weights tried when none are given (defined in :mod:`promptaudit.choices`).
DEFAULT_WEIGHTS = DEFAULT_PAIRING_WEIGHTS
#: Files of a PEFT adapter copied from the chosen candidate into the output folder.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "training_info.json")
RECORD_FILE = "mitigation.json"
TABLE_FILES = ("mitigation_tradeoff.csv", "mitigation_tradeoff.md", "mitigation_pareto.png")
SWEEP_DIR = ".sweep"


class MitigationMethod(enum.StrEnum):
    """Mitigation methods (closed choice)."""

    CLP = "clp"


@dataclass(frozen=True)
class MitigationSettings:
    """How to mitigate.

    Attributes
    ----------
    weights : tuple of float
        Pairing weights swept (each >= 0; 0 re-tunes on the task loss alone).
    max_accuracy_drop : float
        Largest accepted drop in validation accuracy versus the original prompt.
    epochs, learning_rate, batch_size, max_length, seed :
        Training settings of each candidate (see :class:`TrainingConfig`).
    validation_fraction : float
        Seeded share of the data held out to choose the weight.
    suite : str or None
        Term suite for swaps (``builtin:identity`` or a file); None with a pair column.
    features : list of str or None
        Features of the suite to swap (default: all).
    max_pairs_per_batch : int or None
        Cap on pairs per batch (default: the batch size), bounding the extra cost.
    group_weight : float
        Weight of the fairret group penalty (0: off; needs group columns).
    keep_dropout : bool
        Keep the base model's dropout active while re-tuning (default False: it is
        switched off, because the pairing term compares two forward passes, and with
        dropout their difference holds dropout noise as large as the identity effect
        on MiniLM, which the penalty can only "reduce" by shrinking every margin).
    """

    weights: tuple[float, ...] = DEFAULT_WEIGHTS
    max_accuracy_drop: float = 0.02
    epochs: int = DEFAULT_MITIGATION_EPOCHS
    learning_rate: float = DEFAULT_MITIGATION_LEARNING_RATE
    batch_size: int = 32
    max_length: int = 128
    seed: int = 0
    validation_fraction: float = 0.2
    suite: str | None = "builtin:identity"
    features: tuple[str, ...] | None = None
    max_pairs_per_batch: int | None = None
    group_weight: float = 0.0
    keep_dropout: bool = False

    def check(self) -> None:
        """Raise :class:`InputError` naming the first out-of-range field."""
        if not self.weights:
            raise InputError("weights: give at least one pairing weight")
        for weight in self.weights:
            if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
                raise InputError(f"weights: {weight!r} is not allowed; each weight must be >= 0")
        if len(set(self.weights)) != len(self.weights):
            raise InputError(f"weights: {list(self.weights)} lists a weight twice")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise InputError(
                f"max_accuracy_drop: {self.max_accuracy_drop}; must be between 0 and 1"
            )
        if not 0 < self.validation_fraction < 1:
            raise InputError(
                f"validation_fraction: {self.validation_fraction}; must be strictly between 0 and 1"
            )
        if self.max_pairs_per_batch is not None and self.max_pairs_per_batch < 1:
            raise InputError(f"max_pairs_per_batch: {self.max_pairs_per_batch}; must be >= 1")
        if not (math.isfinite(self.group_weight) and self.group_weight >= 0):
            raise InputError(f"group_weight: {self.group_weight}; must be >= 0")


@dataclass
class MitigationResult:
    """What :func:`mitigate_prompt` found.

    Attributes
    ----------
    mitigated : bool
        True when a weight met the accuracy budget and its adapter was written.
    adapter_dir : Path or None
        The chosen adapter (a plain PEFT adapter), None when not mitigated.
    chosen_weight : float or None
    table : list of dict
        One row per candidate (``weight`` None for the original prompt): ``accuracy``,
        ``accuracy_change``, ``dp_ratio``, ``flip_rate``, ``mean_abs_delta``,
        ``within_budget``, ``pareto``, ``chosen``, ``n_pairs``.
    record : dict
        The JSON written to ``mitigation.json``.
    paths : dict
        Written files by kind.
    message : str
        One sentence for the console.
    """

    mitigated: bool
    adapter_dir: Path | None
    chosen_weight: float | None
    table: list[dict] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    message: str = ""


# ------------------------------------------------------------------- the loss
def logit_margin(logits: torch.Tensor, positive: int) -> torch.Tensor:
    """Positive-label margin of each row.

    Parameters
    ----------
    logits : Tensor
        ``(n, n_labels)`` label logits.
    positive : int
        Index of the positive label.

    Returns
    -------
    Tensor
        ``(n,)``: ``logits[:, positive] - logsumexp(other logits)``; for two labels
        ``logits[:, positive] - logits[:, 1 - positive]``.
    """
    others = torch.cat([logits[:, :positive], logits[:, positive + 1 :]], dim=1)
    return logits[:, positive] - torch.logsumexp(others, dim=1)


def clp_loss(
    original_logits: torch.Tensor, variant_logits: torch.Tensor, *, positive: int, weight: float
) -> torch.Tensor:
    """Counterfactual logit pairing: ``weight * mean |m(original) - m(variant)|``.

    Parameters
    ----------
    original_logits, variant_logits : Tensor
        ``(n_pairs, n_labels)``; row ``i`` of one is paired with row ``i`` of the other.
    positive : int
    weight : float

    Returns
    -------
    Tensor
        Scalar; zero (with a gradient path) when there is no pair.
    """
    if original_logits.shape[0] == 0:
        return original_logits.sum() * 0.0
    diff = logit_margin(original_logits, positive) - logit_margin(variant_logits, positive)
    return weight * diff.abs().mean()


def build_variants(
    texts: Sequence[str],
    *,
    suite: str | None = None,
    features: Sequence[str] | None = None,
    pair_ids: Sequence | None = None,
) -> dict[str, list[str]]:
    """Map each text to its identity-swapped variants.

    Parameters
    ----------
    texts : sequence of str
        ``(n,)``.
    suite : str, optional
        Term suite reference; used unless ``pair_ids`` is given.
    features : sequence of str, optional
        Features of the suite (default all).
    pair_ids : sequence, optional
        ``(n,)`` ids: rows sharing an id are variants of each other.

    Returns
    -------
    dict
        text -> list of distinct variant texts (texts without a variant are absent).
    """
    variants: dict[str, list[str]] = {}
    if pair_ids is not None:
        members: dict[str, list[str]] = {}
        for text, pair in zip(texts, pair_ids, strict=True):
            if pair is None or (isinstance(pair, float) and math.isnan(pair)):
                continue
            members.setdefault(str(pair), []).append(str(text))
        for group in members.values():
            for text in group:
                others = [t for t in dict.fromkeys(group) if t != text]
                if others:
                    variants.setdefault(text, [])
                    variants[text].extend(o for o in others if o not in variants[text])
        return variants
    from promptaudit.corpora import make_counterfactuals

    if suite is None:
        raise InputError("counterfactuals: give a term suite or a pair column")
    tuples = make_counterfactuals(list(texts), suite, features=features)
    for _, part in tuples.groupby("tuple_id", sort=True):
        original = str(part["text"].iloc[0])
        found = variants.setdefault(original, [])
        found.extend(t for t in part["text"].iloc[1:].astype(str) if t not in found)
    return variants


class PairingLoss:
    """The extra loss :func:`train_prompt` adds per batch (CLP plus optional group penalty).

    For every batch text that has variants, one variant is drawn (seeded) and
    paired with it, up to ``max_pairs`` pairs in all. With ``unlabelled`` texts
    (which have no label, so take no part in the task loss) a quarter of those
    pairs (at least one when ``max_pairs >= 2``; at most one per unlabelled text)
    is drawn from them in every batch, and batch pairs fill the rest. The
    originals' logits are those of the batch itself, so only variants (and
    unlabelled originals) cost another forward pass.

    Parameters
    ----------
    variants : mapping of str to list of str
        From :func:`build_variants`.
    positive : int
    weight : float
    max_pairs : int
    seed : int
    unlabelled : mapping of str to list of str, optional
        Extra pair sources without labels.
    groups : mapping of str to str, optional
        Text -> group, for the fairret group penalty.
    group_weight : float
    """

    def __init__(
        self,
        variants: Mapping[str, Sequence[str]],
        *,
        positive: int,
        weight: float,
        max_pairs: int,
        seed: int = 0,
        unlabelled: Mapping[str, Sequence[str]] | None = None,
        groups: Mapping[str, str] | None = None,
        group_weight: float = 0.0,
    ) -> None:
        self.variants = variants
        self.positive = positive
        self.weight = float(weight)
        self.max_pairs = max_pairs
        self.rng = np.random.default_rng(seed)
        self.unlabelled = sorted((unlabelled or {}).items())
        self.groups = groups or {}
        self.group_weight = float(group_weight)
        self.n_pairs = 0
        self.n_unlabelled_pairs = 0
        # A quarter of the pairs of each batch (at least one when the cap allows two) go to
        # unlabelled texts, so they are paired even when every batch text has a variant.
        self.unlabelled_per_batch = (
            min(len(self.unlabelled), max(1, max_pairs // 4)) if max_pairs >= 2 else 0
        )
        self._group_loss = None
        if self.group_weight > 0:
            from fairret.loss import NormLoss
            from fairret.statistic import PositiveRate

            self._group_loss = NormLoss(PositiveRate())
            self.group_names = sorted(set(self.groups.values()))

    def __call__(self, logits_of, batch_texts: list[str], batch_logits: torch.Tensor):
        loss = batch_logits.sum() * 0.0
        if self.weight > 0:
            rows, variant_texts = [], []
            for row, text in enumerate(batch_texts):
                options = self.variants.get(text)
                if options:
                    rows.append(row)
                    variant_texts.append(options[int(self.rng.integers(len(options)))])
            reserve = self.unlabelled_per_batch
            if len(rows) > self.max_pairs - reserve:
                keep = np.sort(
                    self.rng.choice(len(rows), self.max_pairs - reserve, replace=False)
                )
                rows = [rows[i] for i in keep]
                variant_texts = [variant_texts[i] for i in keep]
            extra_orig: list[str] = []
            if reserve:
                for i in self.rng.choice(len(self.unlabelled), reserve, replace=False):
                    text, options = self.unlabelled[int(i)]
                    extra_orig.append(text)
                    variant_texts.append(options[int(self.rng.integers(len(options)))])
            if variant_texts:
                more = logits_of(extra_orig + variant_texts)
                originals = torch.cat([batch_logits[rows], more[: len(extra_orig)]])
                paired = more[len(extra_orig) :]
                loss = loss + clp_loss(
                    originals, paired, positive=self.positive, weight=self.weight
                )
                self.n_pairs += len(variant_texts)
                self.n_unlabelled_pairs += len(extra_orig)
        if self._group_loss is not None:
            loss = loss + self._group_penalty(batch_texts, batch_logits)
        return loss

    def _group_penalty(self, batch_texts: list[str], batch_logits: torch.Tensor) -> torch.Tensor:
        rows = [i for i, t in enumerate(batch_texts) if t in self.groups]
        present = {self.groups[batch_texts[i]] for i in rows}
        if len(present) < 2:
            return batch_logits.sum() * 0.0
        sens = torch.zeros(len(rows), len(self.group_names), device=batch_logits.device)
        for j, i in enumerate(rows):
            sens[j, self.group_names.index(self.groups[batch_texts[i]])] = 1.0
        sens = sens[:, sens.sum(dim=0) > 0]
        margin = logit_margin(batch_logits[rows], self.positive).unsqueeze(1)
        return self.group_weight * self._group_loss(margin, sens)


# ------------------------------------------------------------------ evaluation
def evaluate_prompt(
    prompted,
    texts: Sequence[str],
    label_ids: np.ndarray,
    tuples: pd.DataFrame,
    *,
    positive: int,
) -> dict:
    """Accuracy, DP ratio on identity-swapped texts and flip rate of one prompt.

    Parameters
    ----------
    prompted : PromptedModel
    texts : sequence of str
        ``(n,)`` validation texts.
    label_ids : ndarray
        ``(n,)`` true label indices.
    tuples : DataFrame
        Counterfactual tuples of the validation texts (``text``, ``tuple_id``, ``group``).
    positive : int

    Returns
    -------
    dict
        ``accuracy`` (None without texts), ``dp_ratio`` (min/max positive rate over
        the groups of the swapped texts, fairlearn), ``flip_rate``, ``mean_abs_delta``,
        ``n_validation``, ``n_tuples``; fairness figures are None without tuples.
    """
    from fairlearn.metrics import demographic_parity_ratio

    from promptaudit.fairness import compute_counterfactual

    accuracy = None
    if len(texts):
        probs = prompted.predict_proba(list(texts))
        accuracy = float((probs.argmax(axis=1) == np.asarray(label_ids)).mean())
    out = {
        "accuracy": accuracy,
        "n_validation": len(texts),
        "n_tuples": int(tuples["tuple_id"].nunique()) if len(tuples) else 0,
        "dp_ratio": None,
        "flip_rate": None,
        "mean_abs_delta": None,
    }
    if len(tuples) == 0:
        return out
    cf_probs = prompted.predict_proba(tuples["text"].astype(str).tolist())
    pred = cf_probs.argmax(axis=1)
    positive_pred = (pred == positive).astype(int)
    groups = tuples["group"].astype(str).to_numpy()
    if len(set(groups)) > 1:
        ratio = float(
            demographic_parity_ratio(positive_pred, positive_pred, sensitive_features=groups)
        )
        out["dp_ratio"] = ratio if math.isfinite(ratio) else None  # 0/0: no positive at all
    counterfactual = compute_counterfactual(
        tuples["tuple_id"].to_numpy(), pred, cf_probs[:, positive]
    )
    out["flip_rate"] = counterfactual["flip_rate"]
    out["mean_abs_delta"] = counterfactual["mean_abs_delta"]
    return out


def select_weight(table: list[dict], *, before: dict, max_accuracy_drop: float) -> int | None:
    """Index of the strongest mitigation within the accuracy budget, or None.

    Marks ``within_budget``, ``accuracy_change`` and ``pareto`` (accuracy against
    DP ratio) on every row. The strongest is the smallest counterfactual gap
    (``mean_abs_delta``, the quantity pairing shrinks, less noisy than a rate on a
    small validation set), then the highest DP ratio, then the highest accuracy. A
    row whose counterfactual figures are undefined is never chosen.
    """
    base = before["accuracy"]
    for row in table:
        row["accuracy_change"] = row["accuracy"] - base
        row["within_budget"] = bool(row["accuracy"] >= base - max_accuracy_drop - 1e-12)
    points = [before, *table]
    for row in table:
        row["pareto"] = _non_dominated(row, points)
    eligible = [
        i
        for i, row in enumerate(table)
        if row["within_budget"] and row.get("mean_abs_delta") is not None
    ]
    if not eligible:
        return None
    return min(
        eligible,
        key=lambda i: (
            table[i]["mean_abs_delta"],
            -(table[i]["dp_ratio"] if table[i]["dp_ratio"] is not None else 0.0),
            -table[i]["accuracy"],
        ),
    )


def _non_dominated(row: dict, points: list[dict]) -> bool:
    if row["dp_ratio"] is None:
        return False
    for other in points:
        if other is row or other["dp_ratio"] is None:
            continue
        better_or_equal = (
            other["accuracy"] >= row["accuracy"] and other["dp_ratio"] >= row["dp_ratio"]
        )
        strictly = other["accuracy"] > row["accuracy"] or other["dp_ratio"] > row["dp_ratio"]
        if better_or_equal and strictly:
            return False
    return True


# ------------------------------------------------------------------ the sweep
def mitigate_prompt(
    model: str,
    prompt: str | Path,
    texts: Sequence[str],
    label_ids: Sequence[int],
    *,
    labels: Sequence[str],
    out_dir: str | Path,
    positive_label: str | None = None,
    settings: MitigationSettings | None = None,
    pair_ids: Sequence | None = None,
    group_values: Sequence | None = None,
    unlabelled_texts: Sequence[str] | None = None,
    data_source: str | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> MitigationResult:
    """Re-tune ``prompt`` with CLP over a weight sweep and keep the best within budget.

    Parameters
    ----------
    model : str
        Base model reference.
    prompt : str or Path
        The audited PEFT prompt-tuning adapter (warm start).
    texts, label_ids : sequences
        ``(n,)`` labelled data; a seeded ``settings.validation_fraction`` is held out.
    labels : sequence of str
    out_dir : str or Path
        Output folder: the chosen adapter, ``mitigation.json``, the trade-off table
        (csv, md) and figure; candidates live in ``out_dir/.sweep/``.
    positive_label : str, optional
        Default: the last of two labels, else the first.
    settings : MitigationSettings
    pair_ids : sequence, optional
        ``(n,)`` pair ids instead of a term suite.
    group_values : sequence, optional
        ``(n,)`` group of each text, for the optional group penalty.
    unlabelled_texts : sequence of str, optional
        Texts without labels added to the pairing loss only.
    data_source : str, optional
        Where the data came from (a file is hashed into the record).
    resume : bool
        Reuse finished candidates and continue unfinished ones from their checkpoints.

    Returns
    -------
    MitigationResult
    """
    from promptaudit.atomic import atomic_write_text
    from promptaudit.prompted import load_prompted_model
    from promptaudit.prompts import check_recorded_labels, load_prompt
    from promptaudit.training import CHECKPOINT_DIR, TrainingConfig, train_prompt

    settings = settings or MitigationSettings()
    settings.check()
    texts = [str(t) for t in texts]
    label_ids = np.asarray(label_ids, dtype=np.int64)
    if len(texts) != len(label_ids):
        raise InputError(f"data: {len(texts)} texts but {len(label_ids)} labels")
    if len(texts) < 10:
        raise InputError(f"data: {len(texts)} rows; mitigation needs at least 10")
    labels = list(labels)
    positive = _positive_index(labels, positive_label)
    soft = load_prompt(prompt)
    if soft.peft_type != "PROMPT_TUNING":
        raise InputError(
            f"{prompt}: mitigation re-tunes PEFT prompt-tuning adapters; got "
            f"{soft.peft_type or 'a bare tensor file'}"
        )
    task = soft.task
    if task is None:
        raise InputError(f"{prompt}: the adapter does not record its task_type")
    check_recorded_labels(labels, soft)
    out_dir = Path(out_dir)

    train_idx, val_idx = _split(len(texts), settings.validation_fraction, settings.seed, pair_ids)
    train_texts = [texts[i] for i in train_idx]
    val_texts = [texts[i] for i in val_idx]
    features = list(settings.features) if settings.features else None
    if pair_ids is not None:
        pairs = list(pair_ids)
        variants = build_variants(train_texts, pair_ids=[pairs[i] for i in train_idx])
        val_tuples = _tuples_from_pairs(val_texts, [pairs[i] for i in val_idx])
    else:
        from promptaudit.corpora import make_counterfactuals

        variants = build_variants(train_texts, suite=settings.suite, features=features)
        val_tuples = make_counterfactuals(val_texts, settings.suite, features=features)
    if not variants:
        raise InputError(
            "counterfactuals: no training text has an identity-swapped variant "
            f"({'pair column' if pair_ids is not None else settings.suite}); nothing to pair"
        )
    unlabelled = {}
    if unlabelled_texts:
        unlabelled = (
            build_variants(list(unlabelled_texts), suite=settings.suite, features=features)
            if pair_ids is None
            else {}
        )
    groups = None
    if settings.group_weight > 0:
        if group_values is None:
            raise InputError("group_weight: the group penalty needs a group column")
        values = list(group_values)
        groups = {texts[i]: str(values[i]) for i in train_idx}

    def build(adapter) -> dict:
        prompted, _, _ = load_prompted_model(
            model,
            str(adapter),
            task=task,
            labels=labels,
            device=device,
            max_length=settings.max_length,
            batch_size=max(settings.batch_size, 64),
        )
        return evaluate_prompt(
            prompted, val_texts, label_ids[val_idx], val_tuples, positive=positive
        )

    logger.info("evaluating the original prompt on %d validation texts", len(val_texts))
    before = {"weight": None, **build(prompt)}
    initial_state = {"prompt_embeddings": soft.embeddings}
    initial_state.update({f"base_model.{k}": v for k, v in soft.head_state.items()})
    init_method, init_text = original_init(soft)
    config = TrainingConfig(
        num_virtual_tokens=soft.num_virtual_tokens,
        init=init_method,
        init_text=init_text,
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        max_length=settings.max_length,
        seed=settings.seed,
        validation_fraction=0.0,
    )
    hashes = _data_hashes(texts, label_ids, data_source)
    max_pairs = settings.max_pairs_per_batch or settings.batch_size
    table: list[dict] = []
    from promptaudit.progress import stage

    n_weights = len(settings.weights)
    stage("mitigation sweep", f"{n_weights} pairing weight(s) x {settings.epochs} epoch(s) on "
          f"{len(train_texts)} texts and {len(variants)} variant texts")
    durations: list[float] = []
    for number, weight in enumerate(settings.weights, start=1):
        remaining = None
        if durations:  # measured on the candidates already trained
            remaining = sum(durations) / len(durations) * (n_weights - number + 1)
        stage(f"mitigation weight {weight:g} ({number} of {n_weights})",
              "re-tuning with counterfactual logit pairing"
              + (", time left for the sweep" if remaining is not None else ""),
              estimate_s=remaining)
        started = time.perf_counter()
        candidate = out_dir / SWEEP_DIR / f"clp-w{weight:g}"
        info = {
            "method": MitigationMethod.CLP.value,
            "weight": float(weight),
            "group_weight": settings.group_weight,
            "warm_start": str(prompt),
            "data_sha256": hashes["content_sha256"],
            "pairs_from": "pair_column" if pair_ids is not None else settings.suite,
            "features": features,
            "dropout": settings.keep_dropout,
        }
        done = _finished_candidate(candidate, info, config)
        if resume and done is not None:
            logger.info("weight %g: reusing the finished candidate in %s", weight, candidate)
            n_pairs = done
        else:
            loss = PairingLoss(
                variants,
                positive=positive,
                weight=weight,
                max_pairs=max_pairs,
                seed=settings.seed,
                unlabelled=unlabelled,
                groups=groups,
                group_weight=settings.group_weight,
            )
            has_checkpoint = (candidate / CHECKPOINT_DIR).is_dir() and any(
                (candidate / CHECKPOINT_DIR).glob("epoch-*/trainer_state.json")
            )
            logger.info("weight %g: training into %s", weight, candidate)
            train_prompt(
                model,
                train_texts,
                label_ids[train_idx],
                labels=labels,
                out_dir=candidate,
                task=task,
                config=config,
                validation_texts=val_texts,
                validation_label_ids=label_ids[val_idx],
                device=device,
                resume=resume and has_checkpoint,
                progress=progress,
                initial_state=initial_state,
                extra_loss=loss,
                extra_info={"mitigation": {**info, "n_pairs": loss.n_pairs}},
                loaded=None
                if settings.keep_dropout
                else _base_without_dropout(model, task, len(labels), device),
            )
            n_pairs = loss.n_pairs
            _record_pairs(candidate, n_pairs)
        table.append({"weight": float(weight), **build(candidate), "n_pairs": n_pairs})
        durations.append(time.perf_counter() - started)

    chosen = select_weight(table, before=before, max_accuracy_drop=settings.max_accuracy_drop)
    for i, row in enumerate(table):
        row["chosen"] = i == chosen
    before.update(
        {
            "accuracy_change": 0.0,
            "within_budget": True,
            "pareto": None,
            "chosen": False,
            "n_pairs": 0,
        }
    )
    rows = [before, *table]
    record = {
        "method": MitigationMethod.CLP.value,
        "reference": "Garg et al. (2019), counterfactual logit pairing",
        "base_model": model,
        "original_prompt": str(prompt),
        "labels": labels,
        "positive_label": labels[positive],
        "weights": [float(w) for w in settings.weights],
        "group_weight": settings.group_weight,
        "max_accuracy_drop": settings.max_accuracy_drop,
        "settings": _settings_dict(settings),
        "data": {
            **hashes,
            "n_train": len(train_idx),
            "n_validation": len(val_idx),
            "n_train_texts_with_variants": sum(t in variants for t in train_texts),
            "n_unlabelled_with_variants": len(unlabelled),
            "n_validation_tuples": before["n_tuples"],
        },
        "table": rows,
        "chosen_weight": None if chosen is None else table[chosen]["weight"],
        "mitigated": chosen is not None,
    }
    if chosen is None:
        record["n_pairs"] = 0
        message = (
            f"no weight kept validation accuracy within {settings.max_accuracy_drop:g} of the "
            f"original ({before['accuracy']:.4f}); nothing is claimed as mitigated and no "
            "adapter was written"
        )
    else:
        best = table[chosen]
        record["n_pairs"] = best["n_pairs"]
        improved = before["mean_abs_delta"] is None or (
            best["mean_abs_delta"] < before["mean_abs_delta"]
        )
        record["improved"] = bool(improved)
        message = (
            f"chose weight {best['weight']:g}: validation accuracy {before['accuracy']:.4f} -> "
            f"{best['accuracy']:.4f}, DP ratio on swapped texts {_fmt(before['dp_ratio'])} -> "
            f"{_fmt(best['dp_ratio'])}, flip rate {_fmt(before['flip_rate'])} -> "
            f"{_fmt(best['flip_rate'])}, mean |change| {_fmt(before['mean_abs_delta'])} -> "
            f"{_fmt(best['mean_abs_delta'])}"
        )
        if not improved:
            message += "; note: this is no improvement on the original prompt"
    record["message"] = message
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    if chosen is not None:
        source = out_dir / SWEEP_DIR / f"clp-w{table[chosen]['weight']:g}"
        for name in ADAPTER_FILES:
            data = (source / name).read_bytes()
            tmp = out_dir / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(out_dir / name)
        paths["adapter"] = str(out_dir)
    paths.update(_write_tables(rows, out_dir, settings.max_accuracy_drop))
    paths["record"] = str(
        atomic_write_text(
            out_dir / RECORD_FILE, json.dumps(_jsonable(record), indent=2, sort_keys=True)
        )
    )
    return MitigationResult(
        mitigated=chosen is not None,
        adapter_dir=out_dir if chosen is not None else None,
        chosen_weight=record["chosen_weight"],
        table=rows,
        record=record,
        paths=paths,
        message=message,
    )


# ------------------------------------------------------------------ helpers
def original_init(soft) -> tuple:
    """``(InitMethod, init_text)`` of the audited prompt, recorded again in the re-tuned one.

    The mitigated adapter starts from the audited prompt's embeddings either way; its
    saved config keeps the original's ``prompt_tuning_init`` (and init text), so an audit
    of it measures the same ``init_text`` baseline as the audit of the original and
    ``accuracy_over_baseline`` compares like for like.
    """
    from promptaudit.training import InitMethod

    method = str(getattr(soft, "init_method", None) or "").upper()
    text = getattr(soft, "init_text", None)
    if method == "TEXT" and text and str(text).strip():
        return InitMethod.TEXT, str(text)
    if method == "SAMPLE_VOCAB":
        return InitMethod.VOCAB, None
    return InitMethod.RANDOM, None


def _positive_index(labels: list[str], positive_label: str | None) -> int:
    if positive_label is None:
        return len(labels) - 1 if len(labels) == 2 else 0
    if positive_label not in labels:
        raise InputError(f"positive label {positive_label!r} is not one of the labels {labels}")
    return labels.index(positive_label)


def _base_without_dropout(model: str, task, n_labels: int, device: str):
    """A freshly loaded base model whose dropout layers are switched off (``p = 0``).

    The pairing term compares the margins of two forward passes; with dropout on,
    their difference includes dropout noise (on MiniLM as large as the identity
    effect itself), so the penalty is best met by shrinking all margins. With
    ``p = 0`` training-mode passes equal evaluation-mode ones.
    """
    from promptaudit.models import load_base_model

    loaded = load_base_model(model, task=task, num_labels=n_labels, device=device)
    switch_off_dropout(loaded.model)
    return loaded


_DROPOUT_MODULES = (
    torch.nn.Dropout,
    torch.nn.Dropout1d,
    torch.nn.Dropout2d,
    torch.nn.Dropout3d,
    torch.nn.AlphaDropout,
    torch.nn.FeatureAlphaDropout,
)
#: Float attributes through which attention modules read a dropout rate (LLaMA-style
#: ``attention_dropout``) instead of an ``nn.Dropout`` module.
_DROPOUT_RATE_ATTRIBUTES = ("attention_dropout", "dropout_rate", "dropout_prob", "dropout_p")


def switch_off_dropout(model: torch.nn.Module) -> int:
    """Set every dropout rate of ``model`` to 0, in place.

    Covers ``nn.Dropout``-family modules (BERT- and GPT-2-style attention read their
    rate from such a module's ``p``) and float rate attributes of attention modules
    (:data:`_DROPOUT_RATE_ATTRIBUTES`).

    Returns
    -------
    int
        How many rates were non-zero before.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, _DROPOUT_MODULES):
            changed += module.p > 0
            module.p = 0.0
        for name in _DROPOUT_RATE_ATTRIBUTES:
            value = getattr(module, name, None)
            if isinstance(value, float) and not isinstance(value, bool):
                changed += value > 0
                setattr(module, name, 0.0)
    return int(changed)


def _split(n: int, fraction: float, seed: int, pair_ids: Sequence | None):
    """Seeded train/validation row indices; rows of one pair id stay on one side."""
    rng = np.random.default_rng(seed)
    if pair_ids is None:
        order = rng.permutation(n)
        n_val = max(1, int(round(n * fraction)))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    keys = pd.Series([str(p) for p in pair_ids])
    unique = keys.unique()
    chosen = set(unique[rng.permutation(len(unique))[: max(1, int(round(len(unique) * fraction)))]])
    val = keys.isin(chosen).to_numpy()
    return np.flatnonzero(~val), np.flatnonzero(val)


def _tuples_from_pairs(texts: list[str], pairs: list) -> pd.DataFrame:
    frame = pd.DataFrame({"text": texts, "pair": [str(p) for p in pairs]})
    sizes = frame.groupby("pair")["text"].transform("size")
    frame = frame[sizes > 1].copy()
    frame["tuple_id"] = pd.factorize(frame["pair"])[0]
    frame["group"] = frame.groupby("pair").cumcount().astype(str)
    return frame.reset_index(drop=True)


def _data_hashes(texts: list[str], label_ids: np.ndarray, source: str | None) -> dict:
    content = json.dumps([texts, label_ids.tolist()], ensure_ascii=False).encode("utf-8")
    out = {"content_sha256": hashlib.sha256(content).hexdigest(), "source": source}
    if source and Path(source).is_file():
        from promptaudit.paths import sha256_file

        out["file_sha256"] = sha256_file(source)
    return out


def _finished_candidate(candidate: Path, info: dict, config) -> int | None:
    """Number of pairs of a finished candidate with the same settings, else None."""
    path = candidate / "training_info.json"
    if not (candidate / "adapter_model.safetensors").exists() or not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    record = dict(saved.get("mitigation") or {})
    n_pairs = record.pop("n_pairs", None)
    from promptaudit.training import _config_dict

    if record != info or saved.get("config") != _config_dict(config):
        return None
    return int(n_pairs or 0)


def _record_pairs(candidate: Path, n_pairs: int) -> None:
    """Write the number of pairs used into the candidate's ``training_info.json``."""
    from promptaudit.atomic import atomic_write_text

    path = candidate / "training_info.json"
    info = json.loads(path.read_text(encoding="utf-8"))
    info.setdefault("mitigation", {})["n_pairs"] = int(n_pairs)
    atomic_write_text(path, json.dumps(info, sort_keys=True, indent=2))


def _settings_dict(settings: MitigationSettings) -> dict:
    from dataclasses import asdict

    out = asdict(settings)
    out["weights"] = list(settings.weights)
    out["features"] = None if settings.features is None else list(settings.features)
    return out


def _jsonable(value):
    from promptaudit.results import to_jsonable

    return to_jsonable(value)


_COLUMNS = (
    "weight",
    "accuracy",
    "accuracy_change",
    "dp_ratio",
    "flip_rate",
    "mean_abs_delta",
    "within_budget",
    "pareto",
    "chosen",
    "n_pairs",
)


def _write_tables(rows: list[dict], out_dir: Path, max_accuracy_drop: float) -> dict:
    from promptaudit.atomic import atomic_write_bytes, atomic_write_text
    from promptaudit.report.comparison import tradeoff_markdown
    from promptaudit.report.figures import pareto_figure

    frame = pd.DataFrame([{k: row.get(k) for k in _COLUMNS} for row in rows])
    csv_path = atomic_write_text(out_dir / TABLE_FILES[0], frame.to_csv(index=False))
    md_path = atomic_write_text(
        out_dir / TABLE_FILES[1], tradeoff_markdown(rows, max_accuracy_drop)
    )
    png_path = atomic_write_bytes(out_dir / TABLE_FILES[2], pareto_figure(rows, max_accuracy_drop))
    return {"table_csv": str(csv_path), "table_md": str(md_path), "figure": str(png_path)}


def remove_sweep(out_dir: str | Path) -> None:
    """Delete the candidates folder of a finished sweep (keeps the chosen adapter)."""
    shutil.rmtree(Path(out_dir) / SWEEP_DIR, ignore_errors=True)
