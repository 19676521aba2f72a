"""Mitigation: re-tune an audited soft prompt with counterfactual logit pairing.

Counterfactual logit pairing (CLP; Garg et al., 2019) adds
``weight * mean_i |m(x_i) - m(x'_i)|`` to the task loss, where ``x'_i`` is an
identity-swapped variant of ``x_i`` (a term suite or a pair column) and ``m`` the logit
margin of the positive label; an optional group penalty adds fairret's
``NormLoss(PositiveRate())``. :func:`mitigate_prompt` warm-starts from the audited prompt
through :func:`promptaudit.training.train_prompt`, sweeps the weights, evaluates each on a
held-out split and keeps the strongest within ``max_accuracy_drop``; when none meets the
budget nothing is claimed as mitigated. The method, outputs and measured figures:
``docs/mitigation.md``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from promptaudit.errors import InputError
from promptaudit.report.before_after import fmt_or_undefined as _fmt
from promptaudit.settings import MitigationSettings
from promptaudit.spec import positive_index

__all__ = [
    "MitigationMethod",
    "MitigationSettings",
    "MitigationResult",
    "PairingLoss",
    "build_variants",
    "clp_loss",
    "evaluate_prompt",
    "logit_margin",
    "mitigate_prompt",
    "mitigate_from_table",
    "select_weight",
]

logger = logging.getLogger(__name__)

#: Files of a PEFT adapter copied from the chosen candidate into the output folder.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "training_info.json")
RECORD_FILE = "mitigation.json"
TABLE_FILES = ("mitigation_tradeoff.csv", "mitigation_tradeoff.md", "mitigation_pareto.png")
SWEEP_DIR = ".sweep"


class MitigationMethod(enum.StrEnum):
    """Mitigation methods (closed choice)."""

    CLP = "clp"


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
    settings = settings or MitigationSettings()
    texts, label_ids = _checked_rows(texts, label_ids)
    labels = list(labels)
    positive = positive_index(labels, positive_label, field="positive label")
    soft = _warm_start(prompt, labels)
    pairs = _Pairs.build(texts, settings, pair_ids=pair_ids, group_values=group_values,
                         unlabelled_texts=unlabelled_texts)
    sweep = _Sweep(model=model, prompt=prompt, soft=soft, labels=labels, positive=positive,
                   settings=settings, pairs=pairs, label_ids=label_ids, device=device,
                   hashes=_data_hashes(texts, label_ids, data_source),
                   from_pair_column=pair_ids is not None)
    logger.info("evaluating the original prompt on %d validation texts", len(pairs.val_texts))
    before = {"weight": None, **sweep.evaluate(prompt)}
    table = sweep.run(Path(out_dir), resume=resume, progress=progress)
    chosen = select_weight(table, before=before, max_accuracy_drop=settings.max_accuracy_drop)
    for i, row in enumerate(table):
        row["chosen"] = i == chosen
    before.update({"accuracy_change": 0.0, "within_budget": True, "pareto": None,
                   "chosen": False, "n_pairs": 0})
    record = sweep.record(before, table, chosen)
    paths = _write_outputs(Path(out_dir), record, chosen=None if chosen is None else table[chosen])
    return MitigationResult(
        mitigated=chosen is not None, adapter_dir=Path(out_dir) if chosen is not None else None,
        chosen_weight=record["chosen_weight"], table=record["table"], record=record,
        paths=paths, message=record["message"],
    )


def _checked_rows(texts, label_ids) -> tuple[list[str], np.ndarray]:
    """The texts and ``(n,)`` int64 label ids: as many of each, at least 10."""
    texts = [str(t) for t in texts]
    label_ids = np.asarray(label_ids, dtype=np.int64)
    if len(texts) != len(label_ids):
        raise InputError(f"data: {len(texts)} texts but {len(label_ids)} labels")
    if len(texts) < 10:
        raise InputError(f"data: {len(texts)} rows; mitigation needs at least 10")
    return texts, label_ids


def _warm_start(prompt: str | Path, labels: list[str]):
    """The audited prompt (a PEFT prompt-tuning adapter that records its task and labels)."""
    from promptaudit.soft_prompts import check_recorded_labels, load_prompt

    soft = load_prompt(prompt)
    if soft.peft_type != "PROMPT_TUNING":
        raise InputError(
            f"{prompt}: mitigation re-tunes PEFT prompt-tuning adapters; got "
            f"{soft.peft_type or 'a bare tensor file'}"
        )
    if soft.task is None:
        raise InputError(f"{prompt}: the adapter does not record its task_type")
    check_recorded_labels(labels, soft)
    return soft


def mitigate_from_table(model: str, prompt: str | Path, data: str, *, text_column: str,
                        label_column: str, out_dir: str | Path, settings: MitigationSettings,
                        labels: Sequence[str] | None = None, pair_column: str | None = None,
                        group_column: str | None = None, limit: int | None = None,
                        unlabelled_data: str | None = None,
                        **mitigate_options) -> MitigationResult:
    """Mitigate a prompt on a data table: what ``promptaudit mitigate`` and a spec's
    ``mitigation:`` both run.

    Parameters
    ----------
    model : str
    prompt : str or Path
        The audited PEFT prompt-tuning adapter.
    data : str
        Labelled table, read with :func:`promptaudit.data.load_table` (seeded by
        ``settings.seed``).
    text_column, label_column : str
    out_dir : str or Path
    settings : MitigationSettings
        ``suite`` is ignored (None) with a ``pair_column``.
    labels : sequence of str, optional
        Label names in index order (default: inferred from the label column).
    pair_column, group_column : str, optional
        Rows sharing a pair id are variants of each other; groups of the group penalty.
    limit : int, optional
        Use the first ``limit`` rows only.
    unlabelled_data : str, optional
        A table of texts (same text column) added to the pairing loss only.
    **mitigate_options
        ``positive_label``, ``device``, ``resume``, ``progress`` of :func:`mitigate_prompt`.

    Returns
    -------
    MitigationResult
    """
    from promptaudit.data import load_table
    from promptaudit.training import labelled_table

    frame, texts, label_ids, labels = labelled_table(
        data, text_column=text_column, label_column=label_column, labels=labels,
        seed=settings.seed, limit=limit, columns=[c for c in (pair_column, group_column) if c])
    unlabelled = None
    if unlabelled_data is not None:
        unlabelled = load_table(unlabelled_data, required_columns=[text_column],
                                seed=settings.seed)[text_column].astype(str).tolist()
    return mitigate_prompt(
        model, prompt, texts, label_ids, labels=labels, out_dir=out_dir,
        settings=settings.model_copy(update={"suite": None}) if pair_column else settings,
        pair_ids=frame[pair_column].tolist() if pair_column else None,
        group_values=frame[group_column].astype(str).tolist() if group_column else None,
        unlabelled_texts=unlabelled, data_source=data, **mitigate_options,
    )


@dataclass
class _Pairs:
    """The seeded train/validation split and the pairs drawn from it."""

    train_idx: np.ndarray
    val_idx: np.ndarray
    train_texts: list[str]
    val_texts: list[str]
    variants: dict[str, list[str]]
    val_tuples: pd.DataFrame
    unlabelled: dict[str, list[str]]
    groups: dict[str, str] | None
    features: list[str] | None

    @classmethod
    def build(cls, texts: list[str], settings: MitigationSettings, *, pair_ids, group_values,
              unlabelled_texts) -> _Pairs:
        """Split ``texts``, find the training variants and the validation tuples."""
        train_idx, val_idx = _split(len(texts), settings.validation_fraction, settings.seed,
                                    pair_ids)
        train_texts = [texts[i] for i in train_idx]
        val_texts = [texts[i] for i in val_idx]
        features = list(settings.features) if settings.features else None
        if pair_ids is not None:
            ids = list(pair_ids)
            variants = build_variants(train_texts, pair_ids=[ids[i] for i in train_idx])
            val_tuples = _tuples_from_pairs(val_texts, [ids[i] for i in val_idx])
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
        if unlabelled_texts and pair_ids is None:
            unlabelled = build_variants(list(unlabelled_texts), suite=settings.suite,
                                        features=features)
        groups = None
        if settings.group_weight > 0:
            if group_values is None:
                raise InputError("group_weight: the group penalty needs a group column")
            values = list(group_values)
            groups = {texts[i]: str(values[i]) for i in train_idx}
        return cls(train_idx, val_idx, train_texts, val_texts, variants, val_tuples,
                   unlabelled, groups, features)


@dataclass
class _Sweep:
    """The candidates of one mitigation: one re-tuned prompt per pairing weight."""

    model: str
    prompt: str | Path
    soft: object
    labels: list[str]
    positive: int
    settings: MitigationSettings
    pairs: _Pairs
    label_ids: np.ndarray
    device: str
    hashes: dict
    from_pair_column: bool

    def evaluate(self, adapter) -> dict:
        """:func:`evaluate_prompt` of an adapter on the validation split."""
        from promptaudit.prompted_model import load_prompted_model

        prompted, _, _ = load_prompted_model(
            self.model, str(adapter), task=self.soft.task, labels=self.labels,
            device=self.device, max_length=self.settings.max_length,
            batch_size=max(self.settings.batch_size, 64),
        )
        return evaluate_prompt(prompted, self.pairs.val_texts,
                               self.label_ids[self.pairs.val_idx], self.pairs.val_tuples,
                               positive=self.positive)

    def config(self):
        """The :class:`TrainingConfig` of every candidate (the audited prompt's init)."""
        from promptaudit.training import TrainingConfig

        init_method, init_text = original_init(self.soft)
        shared = self.settings.model_dump(
            include={"epochs", "learning_rate", "batch_size", "max_length", "seed"})
        return TrainingConfig(num_virtual_tokens=self.soft.num_virtual_tokens, init=init_method,
                              init_text=init_text, validation_fraction=0.0, **shared)

    def info(self, weight: float) -> dict:
        """The mitigation record of one candidate (``training_info.json``, resume check)."""
        settings = self.settings
        return {
            "method": MitigationMethod.CLP.value,
            "weight": float(weight),
            "group_weight": settings.group_weight,
            "warm_start": str(self.prompt),
            "data_sha256": self.hashes["content_sha256"],
            "pairs_from": "pair_column" if self.from_pair_column else settings.suite,
            "features": self.pairs.features,
            "dropout": settings.keep_dropout,
        }

    def run(self, out_dir: Path, *, resume: bool, progress: bool) -> list[dict]:
        """Train (or reuse) each candidate and evaluate it: one table row per weight."""
        from promptaudit.progress import stage

        config, weights = self.config(), self.settings.weights
        stage("mitigation sweep", f"{len(weights)} pairing weight(s) x {self.settings.epochs} "
              f"epoch(s) on {len(self.pairs.train_texts)} texts and "
              f"{len(self.pairs.variants)} variant texts")
        table: list[dict] = []
        durations: list[float] = []
        for number, weight in enumerate(weights, start=1):
            remaining = None
            if durations:  # measured on the candidates already trained
                remaining = sum(durations) / len(durations) * (len(weights) - number + 1)
            stage(f"mitigation weight {weight:g} ({number} of {len(weights)})",
                  "re-tuning with counterfactual logit pairing"
                  + (", time left for the sweep" if remaining is not None else ""),
                  estimate_s=remaining)
            started = time.perf_counter()
            candidate = out_dir / SWEEP_DIR / f"clp-w{weight:g}"
            n_pairs = _finished_candidate(candidate, self.info(weight), config)
            if resume and n_pairs is not None:
                logger.info("weight %g: reusing the finished candidate in %s", weight, candidate)
            else:
                n_pairs = self.train(candidate, weight, config, resume=resume, progress=progress)
            table.append({"weight": float(weight), **self.evaluate(candidate),
                          "n_pairs": n_pairs})
            durations.append(time.perf_counter() - started)
        return table

    def train(self, candidate: Path, weight: float, config, *, resume: bool,
              progress: bool) -> int:
        """Re-tune one candidate from the audited prompt; the number of pairs it used."""
        from promptaudit.training import CHECKPOINT_DIR, train_prompt

        settings, pairs = self.settings, self.pairs
        loss = PairingLoss(
            pairs.variants, positive=self.positive, weight=weight,
            max_pairs=settings.max_pairs_per_batch or settings.batch_size, seed=settings.seed,
            unlabelled=pairs.unlabelled, groups=pairs.groups, group_weight=settings.group_weight,
        )
        has_checkpoint = (candidate / CHECKPOINT_DIR).is_dir() and any(
            (candidate / CHECKPOINT_DIR).glob("epoch-*/trainer_state.json")
        )
        logger.info("weight %g: training into %s", weight, candidate)
        initial_state = {"prompt_embeddings": self.soft.embeddings}
        initial_state.update({f"base_model.{k}": v for k, v in self.soft.head_state.items()})
        n_labels = len(self.labels)
        train_prompt(
            self.model, pairs.train_texts, self.label_ids[pairs.train_idx], labels=self.labels,
            out_dir=candidate, task=self.soft.task, config=config,
            validation_texts=pairs.val_texts,
            validation_label_ids=self.label_ids[pairs.val_idx], device=self.device,
            resume=resume and has_checkpoint, progress=progress, initial_state=initial_state,
            extra_loss=loss, extra_info={"mitigation": {**self.info(weight),
                                                         "n_pairs": loss.n_pairs}},
            loaded=None if settings.keep_dropout
            else _base_without_dropout(self.model, self.soft.task, n_labels, self.device),
        )
        _record_pairs(candidate, loss.n_pairs)
        return loss.n_pairs

    def record(self, before: dict, table: list[dict], chosen: int | None) -> dict:
        """The JSON of ``mitigation.json``: settings, data, the table, the choice, a message."""
        settings, pairs = self.settings, self.pairs
        record = {
            "method": MitigationMethod.CLP.value,
            "reference": "Garg et al. (2019), counterfactual logit pairing",
            "base_model": self.model,
            "original_prompt": str(self.prompt),
            "labels": self.labels,
            "positive_label": self.labels[self.positive],
            "weights": [float(w) for w in settings.weights],
            "group_weight": settings.group_weight,
            "max_accuracy_drop": settings.max_accuracy_drop,
            "settings": settings.model_dump(mode="json"),
            "data": {
                **self.hashes,
                "n_train": len(pairs.train_idx),
                "n_validation": len(pairs.val_idx),
                "n_train_texts_with_variants": sum(t in pairs.variants for t in pairs.train_texts),
                "n_unlabelled_with_variants": len(pairs.unlabelled),
                "n_validation_tuples": before["n_tuples"],
            },
            "table": [before, *table],
            "chosen_weight": None if chosen is None else table[chosen]["weight"],
            "mitigated": chosen is not None,
        }
        if chosen is None:
            record["n_pairs"] = 0
            record["message"] = (
                f"no weight kept validation accuracy within {settings.max_accuracy_drop:g} of "
                f"the original ({before['accuracy']:.4f}); nothing is claimed as mitigated and "
                "no adapter was written"
            )
            return record
        best = table[chosen]
        record["n_pairs"] = best["n_pairs"]
        improved = before["mean_abs_delta"] is None or (
            best["mean_abs_delta"] < before["mean_abs_delta"]
        )
        record["improved"] = bool(improved)
        record["message"] = (
            f"chose weight {best['weight']:g}: validation accuracy {before['accuracy']:.4f} -> "
            f"{best['accuracy']:.4f}, DP ratio on swapped texts {_fmt(before['dp_ratio'])} -> "
            f"{_fmt(best['dp_ratio'])}, flip rate {_fmt(before['flip_rate'])} -> "
            f"{_fmt(best['flip_rate'])}, mean |change| {_fmt(before['mean_abs_delta'])} -> "
            f"{_fmt(best['mean_abs_delta'])}"
        ) + ("" if improved else "; note: this is no improvement on the original prompt")
        return record


def _write_outputs(out_dir: Path, record: dict, *, chosen: dict | None) -> dict:
    """Copy the chosen candidate's adapter into ``out_dir``; write the tables and the record."""
    from promptaudit.atomic import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    if chosen is not None:
        source = out_dir / SWEEP_DIR / f"clp-w{chosen['weight']:g}"
        for name in ADAPTER_FILES:
            data = (source / name).read_bytes()
            tmp = out_dir / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(out_dir / name)
        paths["adapter"] = str(out_dir)
    paths.update(_write_tables(record["table"], out_dir, record["max_accuracy_drop"]))
    paths["record"] = str(
        atomic_write_text(
            out_dir / RECORD_FILE, json.dumps(_jsonable(record), indent=2, sort_keys=True)
        )
    )
    return paths


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




def _jsonable(value):
    from promptaudit.result import to_jsonable

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
    from promptaudit.report.before_after import tradeoff_markdown
    from promptaudit.report.figures import pareto_figure

    frame = pd.DataFrame([{k: row.get(k) for k in _COLUMNS} for row in rows])
    csv_path = atomic_write_text(out_dir / TABLE_FILES[0], frame.to_csv(index=False))
    md_path = atomic_write_text(
        out_dir / TABLE_FILES[1], tradeoff_markdown(rows, max_accuracy_drop)
    )
    png_path = atomic_write_bytes(out_dir / TABLE_FILES[2], pareto_figure(rows, max_accuracy_drop))
    return {"table_csv": str(csv_path), "table_md": str(md_path), "figure": str(png_path)}


