"""``run_audit(spec) -> dict``: wire the stages of an audit and record provenance.

Order of work (each stage is one module; this one only wires them):

1. load the evaluation data and check it against the spec   (data, spec)
2. load or train the prompt, load the base model, predict   (prompts, training, prompted)
3. counterfactuals                                           (corpora, fairness)
4. projection: nearest words, typicality, fidelity           (projection, translation)
5. attribution on the first ``max_examples`` rows            (attribution)
6. baselines: projected prompt, init text / none             (prompted)
7. plain-language readings of the projection                 (position_importance, departures)
8. assembly: group fairness, bias audit, baseline figures, competence, gates and
   provenance, as one result                                 (fairness, bias_audit, evaluation,
                                                              gates)

Each stage reads one :class:`AuditContext` (the spec, the prompted model, the data,
the labels and the predictions, made once) and returns what it computed; nothing
is edited after it was made. Everything is seeded from ``spec.seed``; the same spec
and inputs give the same numbers (only ``provenance.created_at`` differs between runs).

Under a launcher every process runs this same function (SPMD,
:mod:`promptaudit.distributed`): the model is sharded, so every forward pass of
stages 2-7 is divided between the processes, and the assembly (statistics, gates,
the result) runs on the main process alone.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from promptaudit.data import encode_labels, load_table
from promptaudit.errors import InputError, SpecError
from promptaudit.models import LoadedModel
from promptaudit.paths import sha256_file
from promptaudit.progress import Timer, stage
from promptaudit.prompted_model import PromptedModel, float32_model, load_prompted_model
from promptaudit.result import AuditResult, to_jsonable
from promptaudit.result_sections import (
    AttributionResult,
    AuditSection,
    BaselineResult,
    BiasAuditResult,
    Competence,
    CounterfactualResult,
    DataProvenance,
    FairnessResult,
    ModelProvenance,
    ProjectionResult,
    PromptProvenance,
    Provenance,
    Section,
    TaskResult,
)
from promptaudit.seeding import seed_everything
from promptaudit.soft_prompts import SoftPrompt, text_init_token_ids
from promptaudit.spec import (
    AuditSpec,
    check_evaluation_rows,
    check_group_work,
    evaluation_columns,
    positive_index,
)

if TYPE_CHECKING:  # the pipeline never imports distributed; the runner passes its processes
    from promptaudit.distributed import AuditProcesses

__all__ = ["run_audit", "run_audit_with_mitigation", "AuditContext", "EvaluationData",
           "library_versions", "predict_variants", "private_output_dir"]

logger = logging.getLogger(__name__)

_VERSIONED = ("promptaudit", "torch", "transformers", "peft", "captum", "fairlearn", "numpy",
              "pandas", "datasets", "scikit-learn")


# ------------------------------------------------------------------- context
@dataclass(frozen=True)
class EvaluationData:
    """The evaluation rows, read and checked against the spec.

    Attributes
    ----------
    frame, texts : pandas.DataFrame, list of str
        ``(n_rows, n_columns)`` the rows audited (after ``data.limit``; missing values of
        the bias audit's categories are the group ``(missing)``) and their ``(n_rows,)`` texts.
    categories : pandas.DataFrame or None
        ``(n_rows, n_categories)`` the bias audit's columns as read (None without one).
    missing_groups : dict of str to int
        Sensitive feature -> rows whose missing value became ``(missing)``.
    """

    frame: pd.DataFrame
    texts: list[str]
    categories: pd.DataFrame | None
    missing_groups: dict[str, int]


@dataclass(frozen=True)
class AuditContext:
    """What every stage of one audit reads, made once after the predictions.

    Attributes
    ----------
    prompted : PromptedModel
        Sharded (:class:`~promptaudit.distributed.ShardedPromptedModel`) under a launcher.
    soft, loaded : SoftPrompt or None, LoadedModel
        The prompt (None for a bare base model) and the base model as loaded.
    prompt_source : str
        The prompt's path (the folder a prompt trained in the audit went to).
    y_true, probs : numpy.ndarray
        ``(n_rows,)`` label indices (None without labels) and ``(n_rows, n_labels)``
        float64 probabilities of the soft prompt.
    positive, n_truncated : int
        Index of the positive label; texts longer than ``max_length`` tokens.
    rate : Timer
        Seconds per predicted text, for the estimates of later stages.
    processes : AuditProcesses or None
        This process's handle on a launched audit.
    """

    spec: AuditSpec
    data: EvaluationData
    prompted: PromptedModel
    soft: SoftPrompt | None
    loaded: LoadedModel
    prompt_source: str
    y_true: np.ndarray | None
    probs: np.ndarray
    positive: int
    n_truncated: int
    rate: Timer
    progress: bool = False
    processes: AuditProcesses | None = None

    @property
    def texts(self) -> list[str]:
        return self.data.texts

    @property
    def labels(self) -> list[str]:
        return self.prompted.labels

    @cached_property
    def y_pred(self) -> np.ndarray:
        """``(n_rows,)`` predicted label indices."""
        return self.probs.argmax(axis=1)

    @cached_property
    def sensitive(self) -> pd.DataFrame | None:
        """``(n_rows, n_features)`` the sensitive feature columns (None when there are none)."""
        features = self.spec.data.sensitive_features
        return self.data.frame[features] if features else None

    @property
    def is_main(self) -> bool:
        return self.processes is None or self.processes.is_main


def run_audit(
    spec: AuditSpec,
    *,
    progress: bool = False,
    command: str | None = None,
    processes: AuditProcesses | None = None,
) -> dict | None:
    """Run every stage of an audit.

    Parameters
    ----------
    spec : AuditSpec
        A validated spec whose paths are resolved (:func:`promptaudit.spec.load_spec`).
    progress : bool
        Show progress bars for long stages.
    command : str, optional
        The command line, recorded in provenance.
    processes : AuditProcesses, optional
        This process's handle on a launched multi-process audit; every process
        calls ``run_audit`` with its own. Predictions and attribution are divided
        between the processes (:mod:`promptaudit.distributed`), a prompt trained
        in the audit is trained by the main process, fairness and gates are
        computed by the main process alone.

    Returns
    -------
    dict or None
        The result JSON object (schema_version "1"); None on the processes other
        than the main one.
    """
    seed_everything(spec.seed)
    context = _predict(spec, _evaluation_data(spec), processes=processes, progress=progress)
    counterfactual = _counterfactual(context)
    projection, projected_probs = _projection(context)
    attribution = _attribution(context)
    baseline_probs = _baseline_probs(context, projected_probs)
    baseline_predictions = {key: probs.argmax(axis=1) for key, (_, probs) in baseline_probs.items()}
    if projection is not None:
        projection = _section(ProjectionResult, {
            **projection, **_explain_projection(context, projection, baseline_predictions)
        })
    if not context.is_main:  # the others took their share of every forward pass above
        return None
    return _assemble(context, command=command, counterfactual=counterfactual,
                     projection=projection, attribution=attribution,
                     baseline_probs=baseline_probs, baseline_predictions=baseline_predictions)


def _assemble(context: AuditContext, *, command: str | None,
              counterfactual: CounterfactualResult | None,
              projection: ProjectionResult | None, attribution: AttributionResult | None,
              baseline_probs: dict[str, tuple[str, np.ndarray]],
              baseline_predictions: dict[str, np.ndarray]) -> dict:
    """The result, on the main process: statistics of the predictions, gates, provenance."""
    from promptaudit.gates import evaluate_gates

    spec = context.spec
    stage("fairness", f"group metrics with {spec.fairness.bootstrap} bootstrap resamples")
    groups = _group_fairness(context, context.y_pred, context.probs[:, context.positive])
    fairness = _fairness_section(context, groups, counterfactual)
    bias_audit = _bias_audit(context)
    baselines = _baselines_section(context, groups, baseline_probs)
    task = _task_section(context, baseline_predictions)
    stage("gates", f"{len(spec.gates)} gate(s)")
    gates = evaluate_gates(spec.gates, {
        "task": task.to_dict(), "fairness": fairness.to_dict(),
        "bias_audit": None if bias_audit is None else bias_audit.to_dict(),
    }, inconclusive=spec.gate_policy.inconclusive.value)
    audit = {"name": spec.name, "spec": spec.to_dict()}
    if spec.audit_info is not None:  # dates as ISO text
        audit["audit_info"] = spec.audit_info.model_dump(mode="json", exclude_none=True)
    return AuditResult(
        audit=_section(AuditSection, audit),
        provenance=_provenance(context, command), task=task, projection=projection,
        attribution=attribution, fairness=fairness, baselines=baselines, bias_audit=bias_audit,
        gates=gates, passed=all(g["passed"] for g in gates),
    ).to_dict()


def _section(section: type[Section], content: dict | None, where: str | None = None):
    """A stage module's dict as its typed section (None stays None); a mismatch is a bug."""
    if content is None:
        return None
    try:
        return section.from_dict(to_jsonable(content), where=where)
    except InputError as exc:
        raise RuntimeError(
            f"internal error: a stage wrote a malformed result section: {exc}"
        ) from exc


# ------------------------------------------------------------ data and model
def _evaluation_data(spec: AuditSpec) -> EvaluationData:
    """The evaluation rows, refused before any model work if the audit cannot use them."""
    frame = load_table(spec.data.path, required_columns=evaluation_columns(spec), seed=spec.seed)
    if spec.data.limit is not None:
        frame = frame.iloc[: spec.data.limit]
    frame = frame.reset_index(drop=True)
    check_evaluation_rows(spec, frame)
    texts = frame[spec.data.text_column].astype(str).tolist()
    stage("data", f"{len(texts)} rows from {spec.data.path}")
    categories, missing_groups = None, {}
    if spec.bias_audit is not None:
        # Only the bias audit's categories may hold missing values (it counts them as
        # unknown); group fairness metrics see them as the group ``(missing)``, which adds
        # a group to compare and so can only widen, never hide, a gap.
        from promptaudit.data import fill_missing_groups

        categories = frame[spec.bias_audit.categories].copy()
        frame, missing_groups = fill_missing_groups(frame, spec.bias_audit.categories)
    check_group_work(spec, frame)  # an identifier as a group, a runaway bootstrap
    return EvaluationData(frame, texts, categories, missing_groups)


def _predict(spec: AuditSpec, data: EvaluationData, *, processes: AuditProcesses | None,
             progress: bool) -> AuditContext:
    """Load (or train) the prompt and the model, and predict every text once."""
    if processes is None:
        prompt_source = _prompt_source(spec, progress=progress)
    else:  # one process trains; the others wait for the adapter it wrote
        prompt_source = processes.on_main(lambda: _prompt_source(spec, progress=progress))
    logger.info("loading model %s and prompt %s", spec.model.base, prompt_source)
    stage("model", f"loading {spec.model.base} and the prompt")
    model = spec.model
    prompted, soft, loaded = load_prompted_model(
        model.base, prompt_source, task=model.task, labels=model.labels,
        device=model.device if processes is None else processes.device_for(model.device),
        dtype=model.dtype.value, max_length=model.max_length, batch_size=model.batch_size,
        trust_remote_code=model.trust_remote_code,
        allow_untrained_head=model.allow_untrained_head,
    )
    if processes is not None:
        prompted = processes.shard(prompted)  # predict_proba divided between the processes
    positive = positive_index(prompted.labels, model.positive_label)
    y_true = None
    if spec.data.label_column is not None:
        y_true = encode_labels(data.frame[spec.data.label_column], prompted.labels,
                               source=spec.data.path, column=spec.data.label_column)
    texts = data.texts
    logger.info("predicting %d examples", len(texts))
    stage("predictions", f"predicting {len(texts)} examples")
    rate = Timer()
    with rate.measure(len(texts)):
        probs = prompted.predict_proba(texts, progress=progress)
    n_truncated = prompted.count_truncated(texts)
    if n_truncated:
        logger.warning("%d of %d texts were longer than %d tokens and were truncated",
                       n_truncated, len(texts), prompted.max_length)
    return AuditContext(
        spec=spec, data=data, prompted=prompted, soft=soft, loaded=loaded,
        prompt_source=prompt_source, y_true=y_true, probs=probs,
        positive=positive,
        n_truncated=n_truncated, rate=rate, progress=progress, processes=processes,
    )


# ---------------------------------------------------------- counterfactuals
def _counterfactual(context: AuditContext) -> CounterfactualResult | None:
    """``fairness.counterfactual``: rows that share a pair id, or identity-swapped variants."""
    spec, cf = context.spec, context.spec.counterfactuals
    if cf is None:
        return None
    from promptaudit.fairness import compute_counterfactual

    probs, positive = context.probs, context.positive
    if cf.pair_column is not None:  # pair ids and groups were checked with the data
        stage("counterfactuals", f"comparing the predictions of rows that share {cf.pair_column}")
        frame = context.data.frame
        groups = None
        if cf.group_column:
            groups = frame[cf.group_column].astype(str).str.strip().to_numpy()
        return _section(CounterfactualResult, {
            **compute_counterfactual(frame[cf.pair_column].astype(str).to_numpy(),
                                     probs.argmax(axis=1), probs[:, positive], groups=groups,
                                     **_interval_options(spec)),
            "source": f"pair_column:{cf.pair_column}",
        })
    from promptaudit.corpora import make_counterfactuals

    tuples = make_counterfactuals(context.texts, cf.suite, features=cf.features)
    n_variants = int((~tuples["is_original"].to_numpy(dtype=bool)).sum()) if len(tuples) else 0
    stage("counterfactuals", f"predicting {n_variants} identity-swapped variants",
          estimate_s=context.rate.estimate(n_variants))
    if len(tuples) == 0:
        return _section(CounterfactualResult, {
            "flip_rate": None, "flip_rate_interval": None, "mean_abs_delta": None,
            "n_tuples": 0, "by_group": {}, "source": cf.suite,
            "note": "no text mentions a term of the suite; no counterfactual tuple was made",
        })
    # Originals reuse the predictions already made; only the variants are new.
    cf_probs = np.empty((len(tuples), probs.shape[1]))
    originals = tuples["is_original"].to_numpy(dtype=bool)
    cf_probs[originals] = probs[tuples.loc[originals, "source_index"].to_numpy()]
    cf_probs[~originals] = predict_variants(
        context.prompted, tuples.loc[~originals, "text"].tolist(), context.texts, probs,
        progress=context.progress)
    overall = compute_counterfactual(
        tuples["tuple_id"].to_numpy(), cf_probs.argmax(axis=1), cf_probs[:, positive],
        groups=tuples["group"].astype(str).to_numpy(), **_interval_options(spec),
    )
    by_feature = {}
    for feature, part in tuples.groupby("feature", sort=True):
        index = part.index.to_numpy()
        sub = compute_counterfactual(
            part["tuple_id"].to_numpy(), cf_probs[index].argmax(axis=1), cf_probs[index, positive]
        )
        by_feature[str(feature)] = {k: sub[k] for k in ("flip_rate", "mean_abs_delta", "n_tuples")}
    return _section(CounterfactualResult,
                    {**overall, "source": cf.suite, "by_feature": by_feature})


def predict_variants(prompted, variants: list[str], texts: Sequence[str], probs: np.ndarray,
                     *, progress: bool = False) -> np.ndarray:
    """Probabilities of counterfactual variants, each distinct new text forwarded once.

    A variant equal to a text of the evaluation data takes that text's
    prediction (swapping "he" for "she" in generated data often gives another
    row); variants that repeat each other are predicted once.

    Parameters
    ----------
    prompted : PromptedModel
    variants : list of str
        ``(n_variants,)`` variant texts.
    texts : sequence of str
        ``(n_rows,)`` the evaluation texts, predicted as ``probs``.
    probs : numpy.ndarray
        ``(n_rows, n_labels)`` their probabilities.

    Returns
    -------
    numpy.ndarray
        ``(n_variants, n_labels)`` float64.
    """
    known = {str(text): row for row, text in enumerate(texts)}
    new = list(dict.fromkeys(v for v in variants if v not in known))
    logger.info("predicting %d counterfactual variants (%d distinct texts not in the data)",
                len(variants), len(new))
    fresh = prompted.predict_proba(new, progress=progress)
    fresh_row = {text: row for row, text in enumerate(new)}
    out = np.empty((len(variants), probs.shape[1]), dtype=np.float64)
    for row, text in enumerate(variants):
        out[row] = probs[known[text]] if text in known else fresh[fresh_row[text]]
    return out


def _interval_options(spec) -> dict:
    """Bootstrap options shared by every interval of an audit."""
    return {
        "bootstrap": spec.fairness.bootstrap,
        "confidence": spec.fairness.confidence,
        "seed": spec.seed,
    }


# --------------------------------------------------------------- projection
def _projection(context: AuditContext) -> tuple[dict | None, np.ndarray | None]:
    """The projection (nearest words, fidelity, translation) and the projected prompt's probs.

    Returns
    -------
    (dict or None, numpy.ndarray or None)
        The projection so far (:func:`_explain_projection` adds its readings) and
        ``(n_rows, n_labels)`` probabilities of the projected hard prompt (None when
        neither fidelity nor the projected baseline asks for them).
    """
    spec, prompted, texts = context.spec, context.prompted, context.texts
    settings = spec.projection
    if not settings.enabled or context.soft is None:
        return None, None
    from promptaudit.projection import project_prompt

    logger.info("projecting the prompt onto the vocabulary")
    stage("projection", "nearest vocabulary words and the projected prompt's fidelity",
          estimate_s=context.rate.estimate(len(texts)))
    projection = project_prompt(prompted, soft_prompt=context.soft, top_k=settings.top_k,
                                metric=settings.metric.value, seed=spec.seed)
    projected_ids = [pos["neighbors"][0]["token_id"] for pos in projection["positions"]]
    projected_probs = None
    if settings.fidelity or spec.baselines.projected:
        logger.info("predicting with the projected hard prompt")
        projected_prompt = prompted.word_embeddings[
            torch.tensor(projected_ids, device=prompted.device)
        ].detach()
        projected_probs = prompted.with_prompt(projected_prompt).predict_proba(
            texts, progress=context.progress)
    if settings.fidelity:
        projection = _with_fidelity(context, projection, projected_ids, projected_probs)
    if settings.translate is not None and settings.translate.enabled:
        from promptaudit.translation import translate_prompt

        logger.info("translating the prompt into readable words (long work)")
        projection = {**projection, "translation": translate_prompt(
            prompted, texts, label_ids=context.y_true, settings=settings.translate.settings())}
    return projection, projected_probs


def _with_fidelity(context: AuditContext, projection: dict, projected_ids: list[int],
                   projected_probs: np.ndarray) -> dict:
    """``projection`` with the projected prompt's ``fidelity``, the ``trust`` and ``summary``."""
    from promptaudit.projection import projection_fidelity, projection_summary, projection_trust

    fidelity = projection_fidelity(context.prompted, context.texts, label_ids=context.y_true,
                                   soft_probs=context.probs, projected_ids=projected_ids,
                                   projected_probs=projected_probs)
    projection = {**projection, "fidelity": fidelity}
    projection = {**projection, "trust": projection_trust(projection)}
    return {**projection, "summary": projection_summary(projection)}


def _explain_projection(context: AuditContext, projection: dict,
                        baseline_predictions: dict[str, np.ndarray]) -> dict:
    """``position_importance``, ``instructions`` and ``departures`` (those asked for)."""
    spec, prompted, texts = context.spec, context.prompted, context.texts
    settings = spec.projection
    out = {}
    if settings.position_importance:
        from promptaudit.position_importance import position_importance

        k = min(settings.position_importance_max_examples, len(texts))
        logger.info("position importance: neutralising each virtual token on %d rows", k)
        out["position_importance"] = position_importance(
            prompted, texts[:k], soft_probs=context.probs[:k], max_examples=k,
            confidence=spec.fairness.confidence)
    if not settings.departures:
        return out
    from promptaudit.departures import explain_departures, plain_language_candidates

    candidates = plain_language_candidates(prompted, context.soft, projection,
                                           settings.instructions)
    if not candidates:
        return out
    known = {}
    if candidates[0].source == "init_text" and "init_text" in baseline_predictions:
        known[0] = baseline_predictions["init_text"]  # the init-text baseline predicted it
    logger.info("comparing %d plain-language instruction(s) with the soft prompt",
                len(candidates))
    attribution = spec.attribution
    out["instructions"], out["departures"] = explain_departures(
        prompted, texts, soft_probs=context.probs, candidates=candidates,
        positive=context.positive, label_ids=context.y_true, sensitive=context.sensitive,
        confidence=spec.fairness.confidence, min_group_size=spec.fairness.min_group_size,
        max_attributed=settings.departures_max_attributed if attribution.enabled else 0,
        known_predictions=known, progress=context.progress,
        method=_attribution_method(spec, with_budget=False), seed=spec.seed,
    )
    return out


# -------------------------------------------------------------- attribution
#: Cost of one integrated-gradients evaluation (forward and backward of one example)
#: relative to predicting one text in batches, for the attribution time estimate
#: (MiniLM on the 2-core machine, 1,000-row demo audit: 0.073 s against 0.037 s).
GRADIENT_EVAL_COST = 2.0
#: Gradient evaluations an adaptive example typically takes (for the estimate only).
TYPICAL_EVALS_PER_EXAMPLE = 128


def _expected_gradient_evals(spec: AuditSpec, k: int) -> float:
    """Gradient evaluations the attribution stage will likely spend on ``k`` examples."""
    settings = spec.attribution
    per_example = (
        TYPICAL_EVALS_PER_EXAMPLE if settings.n_steps == "auto" else int(settings.n_steps)
    )
    if settings.method != "integrated_gradients":
        per_example = settings.n_samples * 2
    expected = float(k * per_example)
    if settings.max_gradient_evals_total is not None and settings.method == "integrated_gradients":
        expected = min(expected, float(settings.max_gradient_evals_total))
    return expected


def _attribution_method(spec: AuditSpec, *, with_budget: bool = True):
    """The spec's attribution method object (its own options, Captum-style).

    ``with_budget`` False (the departures' few rows): the per-example options only, with
    no total gradient budget and the sampling methods' own default sample count, as the
    departures have always been attributed.
    """
    from promptaudit.attribution import attribution_method

    settings = spec.attribution
    options = dict(n_steps=settings.n_steps, baseline=settings.baseline,
                   delta_tolerance=settings.delta_tolerance,
                   max_gradient_evals=settings.max_gradient_evals)
    if with_budget:
        options.update(n_samples=settings.n_samples,
                       max_gradient_evals_total=settings.max_gradient_evals_total)
    return attribution_method(settings.method, **options)


def _attribution(context: AuditContext) -> AttributionResult | None:
    """Attribution of the first ``max_examples`` rows, in float32, with its group comparison."""
    spec = context.spec
    settings = spec.attribution
    if not settings.enabled or context.soft is None:
        return None
    from promptaudit.attribution import PromptAttributor

    k = min(settings.max_examples, len(context.texts))
    logger.info("attributing %d examples with %s", k, settings.method)
    budget = settings.max_gradient_evals_total
    stage("attribution", f"{settings.method} on up to {k} examples"
          + (f", budget {budget} gradient evaluations" if budget is not None else ""),
          estimate_s=context.rate.estimate(_expected_gradient_evals(spec, k),
                                           factor=GRADIENT_EVAL_COST))
    method = _attribution_method(spec)
    processes = context.processes  # divided between the processes when launched
    with float32_model(context.prompted) as model:
        if processes is not None:
            attribution = processes.attribute(model, context.texts[:k], method, seed=spec.seed,
                                              batch_size=method.audit_batch_size,
                                              progress=context.progress)
        else:
            attribution = PromptAttributor(
                model, method, batch_size=method.audit_batch_size, seed=spec.seed,
                progress=context.progress).attribute(context.texts[:k])
    if context.sensitive is not None:
        attribution = {**attribution, "by_group": _group_attribution(context, attribution)}
    return _section(AttributionResult, attribution)


def _group_attribution(context: AuditContext, attribution: dict) -> dict:
    """Per-group attribution compared like for like, as the spec asks (label, bootstrap)."""
    from promptaudit.attribution import GROUP_BOOTSTRAP, summarise_groups

    spec = context.spec
    k = attribution["n_examples"]
    by_true_label = spec.attribution.group_condition == "true_label" and context.y_true is not None
    return summarise_groups(
        attribution, context.sensitive.iloc[:k],
        min_group_size=spec.fairness.min_group_size,
        true_labels=[context.labels[int(v)] for v in context.y_true[:k]] if by_true_label
        else None,
        n_bootstrap=spec.fairness.bootstrap or GROUP_BOOTSTRAP,
        confidence=spec.fairness.confidence, seed=spec.seed,
    )


# ---------------------------------------------------------------- baselines
def _baseline_probs(context: AuditContext,
                    projected_probs: np.ndarray | None) -> dict[str, tuple[str, np.ndarray]]:
    """Baseline key -> (label, ``(n_rows, n_labels)`` probabilities) of every baseline.

    The projected hard prompt (predicted by the projection stage), then the init
    text, or no prompt at all when the prompt was not initialised from a text.
    """
    spec, prompted, soft = context.spec, context.prompted, context.soft
    stage("baselines", "predictions of the baseline prompts",
          estimate_s=context.rate.estimate(len(context.texts) * 2))
    out = {}
    if spec.baselines.projected and projected_probs is not None:
        out["projected_prompt"] = ("the nearest-word (projected) hard prompt", projected_probs)
    if not spec.baselines.init_text or soft is None:
        return out
    if soft.init_text:
        ids = text_init_token_ids(prompted.tokenizer, soft.init_text, soft.num_virtual_tokens)
        init_prompt = prompted.word_embeddings[torch.tensor(ids, device=prompted.device)].detach()
        label = f"the initialisation text {soft.init_text!r} (before tuning)"
        key = "init_text"
    else:
        init_prompt, label, key = None, "no prompt (the base model alone)", "no_prompt"
    logger.info("baseline: %s", key)
    out[key] = (label, prompted.with_prompt(init_prompt).predict_proba(
        context.texts, progress=context.progress))
    return out


def _baselines_section(context: AuditContext, groups: dict,
                       baseline_probs: dict[str, tuple[str, np.ndarray]]
                       ) -> dict[str, BaselineResult]:
    """The same headline numbers for the soft prompt and each baseline."""
    from sklearn.metrics import balanced_accuracy_score

    y_true, positive, soft_pred = context.y_true, context.positive, context.y_pred

    def summary(label: str, probs: np.ndarray, disparities: dict | None) -> BaselineResult:
        y_pred = probs.argmax(axis=1)
        if disparities is None:
            disparities = _group_fairness(context, y_pred, probs[:, positive],
                                          bootstrap=0).get("disparities", {})
        return BaselineResult(
            label=label,
            accuracy=None if y_true is None else float(np.mean(y_pred == y_true)),
            balanced_accuracy=None if y_true is None else float(
                balanced_accuracy_score(y_true, y_pred)),
            positive_rate=float(np.mean(y_pred == positive)),
            disparities=to_jsonable(disparities),
            agreement_with_soft_prompt=float(np.mean(y_pred == soft_pred)),
        )

    return {
        "soft_prompt": summary("the tuned soft prompt", context.probs,
                               groups.get("disparities", {})),
        **{key: summary(label, probs, None) for key, (label, probs) in baseline_probs.items()},
    }


# ----------------------------------------------------------------- fairness
def _group_fairness(context: AuditContext, y_pred: np.ndarray, y_score: np.ndarray, *,
                    bootstrap: int | None = None) -> dict:
    """Group metrics and disparities of ``(n_rows,)`` predictions and positive-label scores."""
    spec, sensitive = context.spec, context.sensitive
    if sensitive is None:
        return {"sensitive_features": [], "by_feature": {}, "intersection": None,
                "disparities": {}, "disparity_intervals": {}, "warnings": [
                    "no sensitive features were given (data.sensitive_features); "
                    "group metrics were not computed"]}
    from promptaudit.fairness import compute_group_fairness

    settings = spec.fairness
    return compute_group_fairness(
        y_pred, sensitive_features=sensitive.reset_index(drop=True), y_true=context.y_true,
        y_score=y_score, positive_label_index=context.positive, metrics=settings.metrics,
        reference_group=settings.reference_group,
        bootstrap=settings.bootstrap if bootstrap is None else bootstrap,
        confidence=settings.confidence, min_group_size=settings.min_group_size,
        intersection=settings.intersection, seed=spec.seed,
    )


def _fairness_section(context: AuditContext, groups: dict,
                      counterfactual: CounterfactualResult | None) -> FairnessResult:
    """``fairness``: the group metrics, every warning about them, and the counterfactuals."""
    untrained = list(context.loaded.missing_head_keys or ())
    head_warning = [] if not untrained else [  # allowed by model.allow_untrained_head
        f"the {context.prompted.task.value} head is untrained ({', '.join(untrained)} "
        "initialised at random; allowed by model.allow_untrained_head): predictions and every "
        "figure below come from random head weights"
    ]
    missing_warnings = [
        f"{n} rows have no value for sensitive feature {column!r}: group fairness metrics "
        "treat them as the group '(missing)'; the bias audit counts them as unknown"
        for column, n in context.data.missing_groups.items()
    ]
    content = to_jsonable(groups)
    content["warnings"] = [*head_warning, *content.get("warnings", []), *missing_warnings]
    return FairnessResult(**content, counterfactual=counterfactual)


def _bias_audit(context: AuditContext) -> BiasAuditResult | None:
    """Impact-ratio tables of the bias audit's categories, with their intervals."""
    spec, categories = context.spec, context.data.categories
    if spec.bias_audit is None or categories is None:
        return None
    from promptaudit.bias_audit import compute_bias_audit, with_impact_ratio_intervals

    settings = spec.bias_audit
    categories = categories.reset_index(drop=True)
    selected = context.y_pred == context.positive
    scores = context.probs[:, context.positive]
    audit = compute_bias_audit(
        categories, selected=selected, scores=scores, mode=settings.mode,
        exclude_below=settings.exclude_below, unknown_values=settings.unknown_values,
        threshold=settings.threshold,
    )
    # The impact ratio states its uncertainty like every other gate metric (one figure,
    # one verdict): the same resamples and interval rule as the demographic parity ratio.
    return _section(BiasAuditResult, with_impact_ratio_intervals(
        audit, categories, selected=selected, scores=scores,
        bootstrap=spec.fairness.bootstrap, confidence=spec.fairness.confidence, seed=spec.seed,
    ))


# --------------------------------------------------------------------- task
def _task_section(context: AuditContext, baseline_predictions: dict[str, np.ndarray]
                  ) -> TaskResult:
    """``task``: predictions, accuracy, competence against the baselines, class reports."""
    from sklearn.metrics import balanced_accuracy_score

    from promptaudit.evaluation import (
        assess_competence,
        classification_reports,
        no_labels_competence,
    )

    prompted, y_true, y_pred = context.prompted, context.y_true, context.y_pred
    labels = prompted.labels
    counts = np.bincount(y_pred, minlength=len(labels))
    competence, overall, by_group = no_labels_competence(), None, None
    if y_true is not None:
        spec = context.spec
        competence = assess_competence(y_true, y_pred, baselines=baseline_predictions,
                                       **_interval_options(spec))
        if not competence["works"]:
            logger.warning("competence: %s", competence["reason"])
        sensitive = context.sensitive
        overall, by_group = classification_reports(
            y_true, y_pred, labels=labels,
            sensitive_features=None if sensitive is None else sensitive.reset_index(drop=True),
            intersection=spec.fairness.intersection,
        )
    untrained = list(context.loaded.missing_head_keys or ())
    competence = _section(Competence, competence, "task.competence")
    return TaskResult(
        type=prompted.task.value, labels=labels, positive_label=labels[context.positive],
        n_examples=len(context.texts), n_truncated=context.n_truncated,
        max_length=prompted.max_length,
        prediction_counts={label: int(counts[i]) for i, label in enumerate(labels)},
        accuracy=None if y_true is None else float(np.mean(y_pred == y_true)),
        balanced_accuracy=None if y_true is None else float(
            balanced_accuracy_score(y_true, y_pred)),
        positive_rate=float(np.mean(y_pred == context.positive)),
        untrained_head=untrained or None, competence=competence,
        accuracy_over_baseline=competence.accuracy_over_baseline,
        classification_report=to_jsonable(overall),
        classification_report_by_group=to_jsonable(by_group),
    )


# --------------------------------------------------------------- provenance
def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries whose numbers end up in a result."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _model_hashes(resolved: str) -> dict[str, str]:
    path = Path(resolved)
    suffixes = (".safetensors", ".bin", ".json", ".txt", ".model")
    names = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in suffixes) if (
        path.is_dir()) else []
    return {p.name: sha256_file(p) for p in names}


def _provenance(context: AuditContext, command: str | None) -> Provenance:
    """``provenance``: hashes of the model, prompt and data, versions, seed, device, time."""
    spec, soft, loaded = context.spec, context.soft, context.loaded
    data_path = Path(spec.data.path)
    data_hash = sha256_file(data_path) if data_path.is_file() else None
    processes = context.processes
    return Provenance(
        model=ModelProvenance(reference=spec.model.base, resolved=loaded.resolved,
                              revision=loaded.revision, sha256=_model_hashes(loaded.resolved),
                              dtype=spec.model.dtype.value),
        prompt=PromptProvenance(
            source=context.prompt_source,
            peft_type=None if soft is None else soft.peft_type,
            base_model_in_adapter=None if soft is None else soft.base_model,
            sha256={} if soft is None else {Path(f).name: sha256_file(f) for f in soft.files},
            trained_in_audit=spec.prompt.train is not None,
        ),
        data=DataProvenance(
            source=spec.data.path, sha256=data_hash,
            generated=data_hash is None and spec.data.path.startswith("builtin:"),
            n_rows=len(context.data.frame),  # rows audited (after data.limit)
        ),
        seed=spec.seed,
        versions=library_versions(),
        device=str(loaded.device),
        command=command,
        created_at=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        hash_algorithm="sha256 of the file bytes; integrity.content_sha256 is the sha256 of the "
        "sorted-key compact JSON without integrity and provenance.created_at",
        num_processes=1 if processes is None else processes.num_processes,
    )


# -------------------------------------------------------------- the prompt
def _prompt_source(spec: AuditSpec, *, progress: bool) -> str:
    """The prompt's path: the spec's, or the folder a prompt trained here was written to."""
    if spec.prompt.path is not None:
        return spec.prompt.path
    from promptaudit.settings import PromptTuning, TrainingConfig
    from promptaudit.training import train_from_table

    train = spec.prompt.train
    out = Path(train.out) if train.out else private_output_dir("trained", spec.name)
    config = TrainingConfig(**train.model_dump(include=set(PromptTuning.model_fields)),
                            seed=spec.seed)
    logger.info("training a prompt on %s into %s", train.data.path, out)
    stage("training", f"tuning a prompt on {train.data.path} ({train.epochs} epoch(s))")
    train_from_table(spec.model.base, train.data.path, text_column=train.data.text_column,
                     label_column=train.data.label_column, out_dir=out, config=config,
                     labels=spec.model.labels, task=spec.model.task, device=spec.model.device,
                     progress=progress)
    return str(out)


def private_output_dir(kind: str, name: str) -> Path:
    """A new folder, readable by this user only, for an output the spec did not place.

    ``tempfile.mkdtemp`` creates it with mode 0700 under a name nobody can guess in
    advance (a fixed path in the shared temp directory could be made in advance by another
    user, as a link or holding a planted adapter). ``kind`` (``"trained"`` or
    ``"mitigated"``) and the audit's ``name`` (its letters, digits, ``-``, ``_`` and ``.``,
    40 at most) start the folder name, so a user can tell the folders apart.
    """
    import re
    import tempfile

    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
    return Path(tempfile.mkdtemp(prefix=f"promptaudit-{kind}-{readable}-"))


# --------------------------------------------------------------- mitigation
def run_audit_with_mitigation(
    spec: AuditSpec, *, progress: bool = False, command: str | None = None
) -> dict:
    """Audit the prompt, mitigate it (``spec.mitigation``) and audit the result beside it.

    Both audits use the same evaluation data, counterfactuals and gates. The
    returned result is the audit of the mitigated prompt with a ``mitigation``
    block: the mitigation record (method, weights, trade-off table, data hashes,
    pairs), the original audit's ``task``, ``fairness``, ``gates``, ``passed`` and
    integrity hash under ``before``, and :func:`promptaudit.compare.compare_results`
    under ``comparison``. When no weight met the accuracy budget the result is the
    original audit, its ``mitigation.mitigated`` is false and nothing is claimed.

    Returns
    -------
    dict
        A result JSON object (schema_version "1") with the extra ``mitigation`` key.
    """
    from promptaudit.compare import compare_results

    if spec.mitigation is None:
        raise SpecError("mitigation: the spec has no 'mitigation' section")
    before = run_audit(spec, progress=progress, command=command)
    prompt = spec.prompt.path or before["provenance"]["prompt"]["source"]  # trained: where to
    out = Path(spec.mitigation.out) if spec.mitigation.out else private_output_dir(
        "mitigated", spec.name)
    outcome = _mitigate(spec, prompt, before["task"].get("labels") or spec.model.labels, out,
                        progress=progress)
    block = {"mitigated": outcome.mitigated, "adapter": None, "record": outcome.record}
    after = before
    if outcome.mitigated:
        after_spec = spec.model_copy(
            update={"prompt": spec.prompt.model_copy(update={"path": str(out), "train": None})}
        )
        after = run_audit(after_spec, progress=progress, command=command)
        block = {**block, "adapter": str(out), "before": {
            "prompt": prompt,
            "task": before["task"],
            "fairness": before["fairness"],
            "gates": before["gates"],
            "passed": before["passed"],
            "content_sha256": before["integrity"]["content_sha256"],
        }, "comparison": compare_results(before, after)}
    result = {k: v for k, v in after.items() if k != "integrity"}
    # checked against the result types; integrity afresh (and signed, with a key, like `run`)
    return AuditResult.from_dict({**result, "mitigation": to_jsonable(block)}).to_dict()


def _mitigate(spec: AuditSpec, prompt: str, labels: list[str], out: Path, *, progress: bool):
    """Re-tune ``prompt`` on ``spec.mitigation.data`` into ``out`` (a ``MitigationResult``)."""
    from promptaudit.mitigation import mitigate_from_table
    from promptaudit.settings import MitigationSettings, MitigationSweep

    mitigation, cf = spec.mitigation, spec.counterfactuals
    values = mitigation.model_dump(include=set(MitigationSweep.model_fields))
    values["suite"] = mitigation.suite or (cf.suite if cf is not None else None)
    values["features"] = mitigation.features or (cf.features if cf is not None else None)
    settings = MitigationSettings(**{k: v for k, v in values.items() if v is not None},
                                  max_length=spec.model.max_length, seed=spec.seed)
    table = mitigation.data
    return mitigate_from_table(
        spec.model.base, prompt, table.path, text_column=table.text_column,
        label_column=table.label_column, pair_column=table.pair_column,
        group_column=table.group_column, limit=table.limit, labels=labels, out_dir=out,
        settings=settings, positive_label=spec.model.positive_label, device=spec.model.device,
        resume=True,  # a re-run reuses finished candidates whose settings match
        progress=progress,
    )
