"""``run_audit(spec) -> dict``: wire the stages of an audit and record provenance.

Order of work (each stage is one module; this one only wires them):

1. load or train the prompt, load the base model  (prompts, training, prompted)
2. load the evaluation data, predict once          (data, prompted)
3. projection: nearest words, typicality, fidelity (projection)
4. attribution on the first ``max_examples`` rows  (attribution)
5. group fairness and counterfactuals              (fairness, corpora)
6. baselines: projected prompt, init text / none   (fairness)
7. gates and provenance                            (gates)

Everything is seeded from ``spec.seed``; the same spec and inputs give the same
numbers (only ``provenance.created_at`` differs between runs).

Under a launcher every process runs this same function (SPMD,
:mod:`promptaudit.distributed`): the forward passes are divided between the
processes, and only the main process computes fairness and gates and returns
the result.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from promptaudit.data import (
    check_group_column,
    check_sensitive_columns,
    encode_labels,
    load_table,
    row_location,
)
from promptaudit.errors import DataError, InputError, SpecError
from promptaudit.paths import sha256_file
from promptaudit.progress import Timer, stage
from promptaudit.prompted import PromptedModel, float32_model, load_prompted_model
from promptaudit.prompts import SoftPrompt, text_init_token_ids
from promptaudit.result_types import (
    AttributionResult,
    AuditSection,
    BaselineResult,
    BiasAuditResult,
    FairnessResult,
    GateResult,
    ProjectionResult,
    Provenance,
    Section,
    TaskResult,
)
from promptaudit.results import AuditResult, to_jsonable
from promptaudit.seeding import seed_everything
from promptaudit.spec import AuditSpec

if TYPE_CHECKING:  # the pipeline never imports distributed; the runner passes its processes
    from promptaudit.distributed import AuditProcesses

__all__ = ["run_audit", "seed_everything", "library_versions", "sha256_file"]

logger = logging.getLogger(__name__)

_VERSIONED = (
    "promptaudit",
    "torch",
    "transformers",
    "peft",
    "captum",
    "fairlearn",
    "numpy",
    "pandas",
    "datasets",
    "scikit-learn",
)


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
    main = processes is None or processes.is_main
    seed_everything(spec.seed)
    frame, texts = _load_evaluation_data(spec)
    stage("data", f"{len(texts)} rows from {spec.data.path}")
    frame, bias_categories, missing_groups = _split_missing_groups(spec, frame)
    _check_fairness_work(spec, frame)  # before any model work: an identifier, a runaway bootstrap
    if processes is None:
        prompt_source = _prompt_source(spec, progress=progress)
    else:  # one process trains; the others wait for the adapter it wrote
        prompt_source = processes.on_main(lambda: _prompt_source(spec, progress=progress))
    logger.info("loading model %s and prompt %s", spec.model.base, prompt_source)
    stage("model", f"loading {spec.model.base} and the prompt")
    prompted, soft, loaded = load_prompted_model(
        spec.model.base,
        prompt_source,
        task=spec.model.task,
        labels=spec.model.labels,
        device=spec.model.device if processes is None else processes.device_for(spec.model.device),
        dtype=spec.model.dtype.value,
        max_length=spec.model.max_length,
        batch_size=spec.model.batch_size,
        trust_remote_code=spec.model.trust_remote_code,
        allow_untrained_head=spec.model.allow_untrained_head,
    )
    if processes is not None:
        prompted = processes.shard(prompted)  # predict_proba divided between the processes
    labels = prompted.labels
    positive = _positive_index(spec, labels)
    y_true = None
    if spec.data.label_column is not None:
        y_true = encode_labels(
            frame[spec.data.label_column],
            labels,
            source=spec.data.path,
            column=spec.data.label_column,
        )

    logger.info("predicting %d examples", len(texts))
    stage("predictions", f"predicting {len(texts)} examples")
    rate = Timer()
    with rate.measure(len(texts)):
        probs = prompted.predict_proba(texts, progress=progress)
    y_pred = probs.argmax(axis=1)
    task = _task_section(spec, prompted, texts, probs, y_true, positive)

    sensitive = frame[spec.data.sensitive_features] if spec.data.sensitive_features else None
    fairness = {}  # computed by the main process alone
    bias_audit = None
    if main:
        stage("fairness", f"group metrics with {spec.fairness.bootstrap} bootstrap resamples")
        fairness = _fairness(spec, y_pred, y_true, probs[:, positive], sensitive, positive)
        fairness.setdefault("warnings", []).extend(_missing_group_warnings(missing_groups))
        bias_audit = _bias_audit(spec, bias_categories, y_pred == positive, probs[:, positive])
        untrained = list(getattr(loaded, "missing_head_keys", ()) or ())
        if untrained:  # allowed by model.allow_untrained_head: said in the result, not silent
            task["untrained_head"] = untrained
            fairness.setdefault("warnings", []).insert(0, (
                f"the {prompted.task.value} head is untrained ({', '.join(untrained)} initialised "
                "at random; allowed by model.allow_untrained_head): predictions and every figure "
                "below come from random head weights"
            ))
    fairness["counterfactual"] = _counterfactual(
        spec, prompted, frame, texts, probs, positive, progress=progress, rate=rate
    )

    projection = None
    projected_prompt = projected_probs = None
    if spec.projection.enabled and soft is not None:
        from promptaudit.projection import (
            project_prompt,
            projection_fidelity,
            projection_summary,
            projection_trust,
        )

        logger.info("projecting the prompt onto the vocabulary")
        stage("projection", "nearest vocabulary words and the projected prompt's fidelity",
              estimate_s=rate.estimate(len(texts)))
        projection = project_prompt(
            prompted,
            soft_prompt=soft,
            top_k=spec.projection.top_k,
            metric=spec.projection.metric.value,
            seed=spec.seed,
        )
        projected_ids = [pos["neighbors"][0]["token_id"] for pos in projection["positions"]]
        projected_prompt = prompted.word_embeddings[
            torch.tensor(projected_ids, device=prompted.device)
        ].detach()
        if spec.projection.fidelity or spec.baselines.projected:
            logger.info("predicting with the projected hard prompt")
            projected_probs = prompted.with_prompt(projected_prompt).predict_proba(
                texts, progress=progress
            )
        if spec.projection.fidelity:
            projection["fidelity"] = projection_fidelity(
                prompted,
                texts,
                label_ids=y_true,
                soft_probs=probs,
                projected_ids=projected_ids,
                projected_probs=projected_probs,
            )
            projection["trust"] = projection_trust(projection)
            projection["summary"] = projection_summary(projection)
        if spec.projection.translate is not None and spec.projection.translate.enabled:
            from promptaudit.translation import translate_prompt

            logger.info("translating the prompt into readable words (long work)")
            projection["translation"] = translate_prompt(
                prompted, texts, label_ids=y_true, settings=spec.projection.translate.settings()
            )

    attribution = None
    if spec.attribution.enabled and soft is not None:
        k = min(spec.attribution.max_examples, len(texts))
        logger.info("attributing %d examples with %s", k, spec.attribution.method)
        budget = spec.attribution.max_gradient_evals_total
        evals = _expected_gradient_evals(spec, k)
        stage(
            "attribution",
            f"{spec.attribution.method} on up to {k} examples"
            + (f", budget {budget} gradient evaluations" if budget is not None else ""),
            estimate_s=rate.estimate(evals, factor=GRADIENT_EVAL_COST),
        )
        attribution = _attribute(  # in float32; divided between the processes when launched so
            prompted,
            texts[:k],
            processes=processes,
            method=spec.attribution.method,
            n_steps=spec.attribution.n_steps,
            baseline=spec.attribution.baseline,
            max_examples=k,
            n_samples=spec.attribution.n_samples,
            delta_tolerance=spec.attribution.delta_tolerance,
            max_gradient_evals=spec.attribution.max_gradient_evals,
            max_gradient_evals_total=spec.attribution.max_gradient_evals_total,
            min_group_size=spec.fairness.min_group_size,
            sensitive_features=None
            if sensitive is None
            else sensitive.iloc[:k].reset_index(drop=True),
            seed=spec.seed,
            progress=progress,
        )

    if attribution is not None and attribution.get("by_group") is not None:
        attribution["by_group"] = _group_attribution(spec, attribution, sensitive, y_true, labels)

    baseline_predictions: dict[str, np.ndarray] = {}
    stage("baselines", "predictions of the baseline prompts",
          estimate_s=rate.estimate(len(texts) * 2))
    baselines = _baselines(
        spec,
        prompted,
        soft,
        frame,
        texts,
        y_true,
        probs,
        positive,
        projected_probs,
        fairness,
        progress=progress,
        with_fairness=main,
        predictions=baseline_predictions,
    )
    if projection is not None:  # every process: their predictions are divided between them
        _explain_projection(spec, prompted, soft, projection, texts, probs, y_true, positive,
                            sensitive, baseline_predictions, progress=progress)
    if not main:
        return None
    _add_competence(spec, task, y_true, y_pred, baseline_predictions, sensitive)

    from promptaudit.gates import evaluate_gates

    stage("gates", f"{len(spec.gates)} gate(s)")
    partial = {"task": task, "fairness": fairness, "bias_audit": bias_audit}
    gates = evaluate_gates(
        spec.gates, partial, inconclusive=spec.gate_policy.inconclusive.value
    )
    data_provenance = {"n_rows": len(frame)}  # rows audited (after data.limit)
    result = AuditResult(
        audit=_typed(
            AuditSection, {"name": spec.name, "spec": spec.to_dict(), **_audit_info(spec)}
        ),
        provenance=_typed(Provenance, {
            **_provenance(spec, soft, loaded, prompt_source, command, data_provenance),
            "num_processes": 1 if processes is None else processes.num_processes,
        }),
        task=_typed(TaskResult, task),
        projection=_typed(ProjectionResult, projection),
        attribution=_typed(AttributionResult, attribution),
        fairness=_typed(FairnessResult, fairness),
        baselines=None if baselines is None else {
            key: _typed(BaselineResult, entry, f"baselines.{key}")
            for key, entry in baselines.items()
        },
        bias_audit=_typed(BiasAuditResult, bias_audit),
        gates=[_typed(GateResult, gate, f"gates.{i}") for i, gate in enumerate(gates)],
        passed=all(g["passed"] for g in gates),
    )
    return result.to_dict()


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


def _typed(section: type[Section], value: dict | None, where: str | None = None):
    """A stage's dict as its typed section (None stays None); a mismatch is a bug, not input."""
    if value is None:
        return None
    try:
        return section.from_dict(to_jsonable(value), where=where)
    except InputError as exc:
        raise RuntimeError(
            f"internal error: a stage wrote a malformed result section: {exc}"
        ) from exc


# -------------------------------------------------------------------- stages
def _group_attribution(spec, attribution: dict, sensitive, y_true, labels) -> dict:
    """Per-group attribution compared like for like, as the spec asks (label, bootstrap)."""
    from promptaudit.attribution import GROUP_BOOTSTRAP, group_attribution

    examples = attribution["examples"]
    k = len(examples)
    if spec.attribution.group_condition == "true_label" and y_true is not None:
        strata, condition = [labels[int(v)] for v in y_true[:k]], "true_label"
    elif attribution.get("target_policy") == "predicted":
        strata, condition = [e["target_label"] for e in examples], "predicted_label"
    else:
        strata, condition = None, None
    return group_attribution(
        np.array([e["prompt_attributions"] for e in examples], dtype=np.float64),
        sensitive.iloc[:k].reset_index(drop=True),
        min_group_size=spec.fairness.min_group_size,
        error_scale=attribution.get("max_convergence_delta"),
        strata=strata, condition=condition,
        n_bootstrap=spec.fairness.bootstrap or GROUP_BOOTSTRAP,
        confidence=spec.fairness.confidence, seed=spec.seed,
    )


def _explain_projection(spec, prompted, soft, projection, texts, probs, y_true, positive,
                        sensitive, baseline_predictions, *, progress) -> None:
    """Add ``instructions``, ``departures`` and ``position_importance`` to ``projection``."""
    settings = spec.projection
    if settings.position_importance:
        from promptaudit.position_importance import position_importance

        k = min(settings.position_importance_max_examples, len(texts))
        logger.info("position importance: neutralising each virtual token on %d rows", k)
        projection["position_importance"] = position_importance(
            prompted, texts[:k], soft_probs=probs[:k], max_examples=k,
            confidence=spec.fairness.confidence)
    if not settings.departures:
        return
    from promptaudit.departures import explain_departures, plain_language_candidates

    candidates = plain_language_candidates(prompted, soft, projection, settings.instructions)
    known = {}
    if candidates and candidates[0].source == "init_text" and "init_text" in baseline_predictions:
        known[0] = baseline_predictions["init_text"]  # the init-text baseline predicted it
    if not candidates:
        return
    logger.info("comparing %d plain-language instruction(s) with the soft prompt",
                len(candidates))
    attribution = spec.attribution
    instructions, departures = explain_departures(
        prompted, texts, soft_probs=probs, candidates=candidates, positive=positive,
        label_ids=y_true, sensitive=sensitive, confidence=spec.fairness.confidence,
        min_group_size=spec.fairness.min_group_size,
        max_attributed=settings.departures_max_attributed if attribution.enabled else 0,
        known_predictions=known, progress=progress,
        attribution_options={
            "method": attribution.method, "n_steps": attribution.n_steps,
            "baseline": attribution.baseline, "delta_tolerance": attribution.delta_tolerance,
            "max_gradient_evals": attribution.max_gradient_evals, "seed": spec.seed,
        },
    )
    projection["instructions"] = instructions
    projection["departures"] = departures


def _attribute(prompted, texts, *, processes: AuditProcesses | None, **options) -> dict:
    """Attribution in float32 (:func:`~promptaudit.prompted.float32_model`), sharded if launched."""
    from promptaudit.attribution import attribute_prompt, audit_batch_size

    attribute = attribute_prompt if processes is None else processes.attribute_prompt
    batch_size = audit_batch_size(options["method"], options["n_steps"])
    with float32_model(prompted) as model:
        return attribute(model, texts, batch_size=batch_size, **options)


def _load_evaluation_data(spec: AuditSpec) -> tuple[pd.DataFrame, list[str]]:
    required = [spec.data.text_column, *spec.data.sensitive_features]
    if spec.data.label_column:
        required.append(spec.data.label_column)
    cf = spec.counterfactuals
    if cf is not None and cf.pair_column:
        required.append(cf.pair_column)
        if cf.group_column:
            required.append(cf.group_column)
    frame = load_table(spec.data.path, required_columns=required, seed=spec.seed)
    if spec.data.limit is not None:
        frame = frame.iloc[: spec.data.limit]
    frame = frame.reset_index(drop=True)
    text = frame[spec.data.text_column]
    missing = text.isna().to_numpy() | (text.astype(str).str.strip() == "").to_numpy()
    if missing.any():  # an empty CSV cell reads as "" (keep_default_na=False), not NaN
        row = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{spec.data.path}: column {spec.data.text_column!r} has a missing text at "
            f"{row_location(text, row)}"
        )
    # Refuse bad groups, pair ids and term suites now, before any model work.
    check_sensitive_columns(
        frame,
        spec.data.sensitive_features,
        source=spec.data.path,
        reference_group=spec.fairness.reference_group,
        allow_missing=spec.bias_audit.categories if spec.bias_audit is not None else (),
    )
    if cf is not None and cf.pair_column and frame[cf.pair_column].isna().any():
        row = int(np.flatnonzero(frame[cf.pair_column].isna().to_numpy())[0])
        raise DataError(
            f"{spec.data.path}: column {cf.pair_column!r} has a missing value at "
            f"{row_location(frame, row)}"
        )
    if cf is not None and cf.pair_column and cf.group_column:
        check_group_column(frame, cf.group_column, source=spec.data.path)
    if cf is not None and cf.suite is not None:
        from promptaudit.corpora import make_counterfactuals

        make_counterfactuals([], cf.suite, features=cf.features)  # loads and checks the suite
    return frame, text.astype(str).tolist()


def _split_missing_groups(
    spec: AuditSpec, frame: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, int]]:
    """The bias audit's category columns as read, and the frame with missing groups filled.

    Only the bias audit's categories may hold missing values (it counts them as
    unknown); group fairness metrics see them as the group ``(missing)``, which adds
    a group to compare and so can only widen, never hide, a gap.
    """
    if spec.bias_audit is None:
        return frame, None, {}
    from promptaudit.data import fill_missing_groups

    categories = frame[spec.bias_audit.categories].copy()
    filled, counts = fill_missing_groups(frame, spec.bias_audit.categories)
    return filled, categories, counts


def _missing_group_warnings(counts: dict[str, int]) -> list[str]:
    return [
        f"{n} rows have no value for sensitive feature {column!r}: group fairness metrics "
        "treat them as the group '(missing)'; the bias audit counts them as unknown"
        for column, n in counts.items()
    ]


def _bias_audit(
    spec: AuditSpec, categories: pd.DataFrame | None, selected: np.ndarray, scores: np.ndarray
) -> dict | None:
    if spec.bias_audit is None or categories is None:
        return None
    from promptaudit.bias_audit import compute_bias_audit

    settings = spec.bias_audit
    audit = compute_bias_audit(
        categories.reset_index(drop=True),
        selected=selected,
        scores=scores,
        mode=settings.mode,
        exclude_below=settings.exclude_below,
        unknown_values=settings.unknown_values,
        threshold=settings.threshold,
    )
    # The impact ratio states its uncertainty like every other gate metric (one figure,
    # one verdict): the same resamples and interval rule as the demographic parity ratio.
    from promptaudit.bias_audit import with_impact_ratio_intervals

    return with_impact_ratio_intervals(
        audit,
        categories.reset_index(drop=True),
        selected=selected,
        scores=scores,
        bootstrap=spec.fairness.bootstrap,
        confidence=spec.fairness.confidence,
        seed=spec.seed,
    )


def _audit_info(spec: AuditSpec) -> dict:
    """``{"audit_info": {...}}`` when the spec has one (dates as ISO text), else ``{}``."""
    if spec.audit_info is None:
        return {}
    info = spec.audit_info.model_dump(mode="json", exclude_none=True)
    return {"audit_info": info}


def _prompt_source(spec: AuditSpec, *, progress: bool) -> str:
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

    ``tempfile.mkdtemp`` creates it with mode 0700 under a name nobody can
    guess in advance. A fixed path in the shared temp directory (what this
    replaced) could be made in advance by another user, as a link or holding a
    planted adapter that a later run would write through or reuse.

    Parameters
    ----------
    kind : str
        ``"trained"`` or ``"mitigated"``: the start of the folder name.
    name : str
        The audit's name; its letters, digits, ``-``, ``_`` and ``.`` (40 at most)
        go into the folder name so a user can tell the folders apart.

    Returns
    -------
    pathlib.Path
    """
    import re
    import tempfile

    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
    return Path(tempfile.mkdtemp(prefix=f"promptaudit-{kind}-{readable}-"))


def _positive_index(spec: AuditSpec, labels: list[str]) -> int:
    if spec.model.positive_label is None:
        return len(labels) - 1 if len(labels) == 2 else 0
    if spec.model.positive_label not in labels:
        raise SpecError(
            f"model.positive_label: {spec.model.positive_label!r} is not one of the labels {labels}"
        )
    return labels.index(spec.model.positive_label)


def _task_section(spec, prompted: PromptedModel, texts, probs, y_true, positive) -> dict:
    y_pred = probs.argmax(axis=1)
    counts = np.bincount(y_pred, minlength=len(prompted.labels))
    section = {
        "type": prompted.task.value,
        "labels": prompted.labels,
        "positive_label": prompted.labels[positive],
        "n_examples": len(texts),
        "n_truncated": prompted.count_truncated(texts),
        "max_length": prompted.max_length,
        "prediction_counts": {label: int(counts[i]) for i, label in enumerate(prompted.labels)},
        "accuracy": None,
        "balanced_accuracy": None,
        "positive_rate": float(np.mean(y_pred == positive)),
    }
    if section["n_truncated"]:
        logger.warning(
            "%d of %d texts were longer than %d tokens and were truncated",
            section["n_truncated"],
            len(texts),
            prompted.max_length,
        )
    if y_true is not None:
        from sklearn.metrics import balanced_accuracy_score

        section["accuracy"] = float(np.mean(y_pred == y_true))
        section["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred))
    return section


def _add_competence(spec, task, y_true, y_pred, baseline_predictions, sensitive) -> None:
    """``task.competence``, ``task.accuracy_over_baseline`` and the classification reports."""
    from promptaudit.evaluation import (
        assess_competence,
        classification_reports,
        no_labels_competence,
    )

    if y_true is None:
        task["competence"] = no_labels_competence()
        task["accuracy_over_baseline"] = None
        task["classification_report"] = None
        task["classification_report_by_group"] = None
        return
    competence = assess_competence(
        y_true, y_pred, baselines=baseline_predictions, **_interval_options(spec)
    )
    task["competence"] = competence
    task["accuracy_over_baseline"] = competence["accuracy_over_baseline"]
    if not competence["works"]:
        logger.warning("competence: %s", competence["reason"])
    overall, by_group = classification_reports(
        y_true,
        y_pred,
        labels=task["labels"],
        sensitive_features=None if sensitive is None else sensitive.reset_index(drop=True),
        intersection=spec.fairness.intersection,
    )
    task["classification_report"] = overall
    task["classification_report_by_group"] = by_group


def _check_fairness_work(spec, frame) -> None:
    if not spec.data.sensitive_features:
        return
    from promptaudit.fairness import check_fairness_work

    check_fairness_work(
        frame[spec.data.sensitive_features],
        bootstrap=spec.fairness.bootstrap,
        confidence=spec.fairness.confidence,
        has_labels=spec.data.label_column is not None,
        reference_group=spec.fairness.reference_group,
        intersection=spec.fairness.intersection,
    )


def _fairness(spec, y_pred, y_true, y_score, sensitive, positive, *, bootstrap=None) -> dict:
    if sensitive is None:
        return {
            "sensitive_features": [],
            "by_feature": {},
            "intersection": None,
            "disparities": {},
            "disparity_intervals": {},
            "warnings": [
                "no sensitive features were given (data.sensitive_features); "
                "group metrics were not computed"
            ],
        }
    from promptaudit.fairness import compute_group_fairness

    return compute_group_fairness(
        y_pred,
        sensitive_features=sensitive.reset_index(drop=True),
        y_true=y_true,
        y_score=y_score,
        positive_label_index=positive,
        metrics=spec.fairness.metrics,
        reference_group=spec.fairness.reference_group,
        bootstrap=spec.fairness.bootstrap if bootstrap is None else bootstrap,
        confidence=spec.fairness.confidence,
        min_group_size=spec.fairness.min_group_size,
        intersection=spec.fairness.intersection,
        seed=spec.seed,
    )


def _counterfactual(spec, prompted, frame, texts, probs, positive, *, progress,
                    rate: Timer | None = None) -> dict | None:
    cf = spec.counterfactuals
    if cf is None:
        return None
    from promptaudit.fairness import compute_counterfactual

    if cf.pair_column is not None:
        stage("counterfactuals", f"comparing the predictions of rows that share {cf.pair_column}")
        pairs = frame[cf.pair_column]
        if pairs.isna().any():
            row = int(np.flatnonzero(pairs.isna().to_numpy())[0])
            raise DataError(
                f"{spec.data.path}: column {cf.pair_column!r} has a missing value at "
                f"{row_location(pairs, row)}"
            )
        groups = None
        if cf.group_column:
            check_group_column(frame, cf.group_column, source=spec.data.path)
            groups = frame[cf.group_column].astype(str).str.strip().to_numpy()
        result = compute_counterfactual(
            pairs.astype(str).to_numpy(),
            probs.argmax(axis=1),
            probs[:, positive],
            groups=groups,
            **_interval_options(spec),
        )
        result["source"] = f"pair_column:{cf.pair_column}"
        return result
    from promptaudit.corpora import make_counterfactuals

    tuples = make_counterfactuals(texts, cf.suite, features=cf.features)
    n_variants = int((~tuples["is_original"].to_numpy(dtype=bool)).sum()) if len(tuples) else 0
    stage("counterfactuals", f"predicting {n_variants} identity-swapped variants",
          estimate_s=None if rate is None else rate.estimate(n_variants))
    if len(tuples) == 0:
        return {
            "flip_rate": None,
            "flip_rate_interval": None,
            "mean_abs_delta": None,
            "n_tuples": 0,
            "by_group": {},
            "source": cf.suite,
            "note": "no text mentions a term of the suite; no counterfactual tuple was made",
        }
    # Originals reuse the predictions already made; only the variants are new.
    cf_probs = np.empty((len(tuples), probs.shape[1]))
    originals = tuples["is_original"].to_numpy(dtype=bool)
    cf_probs[originals] = probs[tuples.loc[originals, "source_index"].to_numpy()]
    cf_probs[~originals] = predict_variants(
        prompted, tuples.loc[~originals, "text"].tolist(), texts, probs, progress=progress
    )
    result = compute_counterfactual(
        tuples["tuple_id"].to_numpy(),
        cf_probs.argmax(axis=1),
        cf_probs[:, positive],
        groups=tuples["group"].astype(str).to_numpy(),
        **_interval_options(spec),
    )
    result["source"] = cf.suite
    by_feature = {}
    for feature, part in tuples.groupby("feature", sort=True):
        index = part.index.to_numpy()
        sub = compute_counterfactual(
            part["tuple_id"].to_numpy(), cf_probs[index].argmax(axis=1), cf_probs[index, positive]
        )
        by_feature[str(feature)] = {k: sub[k] for k in ("flip_rate", "mean_abs_delta", "n_tuples")}
    result["by_feature"] = by_feature
    return result


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


def _baselines(
    spec,
    prompted,
    soft: SoftPrompt | None,
    frame,
    texts,
    y_true,
    probs,
    positive,
    projected_probs,
    fairness,
    *,
    progress,
    with_fairness: bool = True,
    predictions: dict | None = None,
) -> dict | None:
    """The same headline numbers for the projected hard prompt and the init text (or no prompt).

    ``with_fairness=False`` (the other processes of a multi-process audit) makes
    only the predictions and leaves the group disparities empty. ``predictions``,
    when given, receives baseline key -> ``(n,)`` predicted label indices of every
    baseline other than the soft prompt itself.
    """
    from sklearn.metrics import balanced_accuracy_score

    sensitive = frame[spec.data.sensitive_features] if spec.data.sensitive_features else None

    def summary(label: str, p: np.ndarray, fair: dict | None = None, key: str = "") -> dict:
        y_pred = p.argmax(axis=1)
        if not with_fairness:
            fair = {}
        if predictions is not None and key:
            predictions[key] = y_pred
        fair = (
            fair
            if fair is not None
            else _fairness(spec, y_pred, y_true, p[:, positive], sensitive, positive, bootstrap=0)
        )
        return {
            "label": label,
            "accuracy": None if y_true is None else float(np.mean(y_pred == y_true)),
            "balanced_accuracy": None
            if y_true is None
            else float(balanced_accuracy_score(y_true, y_pred)),
            "positive_rate": float(np.mean(y_pred == positive)),
            "disparities": fair.get("disparities", {}),
            "agreement_with_soft_prompt": float(np.mean(y_pred == probs.argmax(axis=1))),
        }

    out = {"soft_prompt": summary("the tuned soft prompt", probs, fairness)}
    if spec.baselines.projected and projected_probs is not None:
        out["projected_prompt"] = summary(
            "the nearest-word (projected) hard prompt", projected_probs, key="projected_prompt"
        )
    if spec.baselines.init_text and soft is not None:
        if soft.init_text:
            ids = text_init_token_ids(prompted.tokenizer, soft.init_text, soft.num_virtual_tokens)
            init_prompt = prompted.word_embeddings[
                torch.tensor(ids, device=prompted.device)
            ].detach()
            label = f"the initialisation text {soft.init_text!r} (before tuning)"
            key = "init_text"
        else:
            init_prompt, label, key = None, "no prompt (the base model alone)", "no_prompt"
        logger.info("baseline: %s", key)
        out[key] = summary(
            label,
            prompted.with_prompt(init_prompt).predict_proba(texts, progress=progress),
            key=key,
        )
    return out


# ---------------------------------------------------------------- provenance
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
    if not path.is_dir():
        return {}
    names = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and (p.suffix in (".safetensors", ".bin", ".json", ".txt", ".model"))
    )
    return {p.name: sha256_file(p) for p in names}


def _provenance(
    spec: AuditSpec, soft, loaded, prompt_source: str, command: str | None, data_extra=None
) -> dict:
    data_path = Path(spec.data.path)
    data_hash = sha256_file(data_path) if data_path.is_file() else None
    return {
        "model": {
            "reference": spec.model.base,
            "resolved": loaded.resolved,
            "revision": loaded.revision,
            "sha256": _model_hashes(loaded.resolved),
            "dtype": spec.model.dtype.value,
        },
        "prompt": {
            "source": prompt_source,
            "peft_type": None if soft is None else soft.peft_type,
            "base_model_in_adapter": None if soft is None else soft.base_model,
            "sha256": {} if soft is None else {Path(f).name: sha256_file(f) for f in soft.files},
            "trained_in_audit": spec.prompt.train is not None,
        },
        "data": {
            "source": spec.data.path,
            "sha256": data_hash,
            "generated": data_hash is None and spec.data.path.startswith("builtin:"),
            **(data_extra or {}),
        },
        "seed": spec.seed,
        "versions": library_versions(),
        "device": str(loaded.device),
        "command": command,
        "created_at": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "hash_algorithm": "sha256 of the file bytes; integrity.content_sha256 is the sha256 of the "
        "sorted-key compact JSON without integrity and provenance.created_at",
    }


# ---------------------------------------------------------------- mitigation
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
    from promptaudit.mitigation import mitigate_from_table
    from promptaudit.settings import MitigationSettings, MitigationSweep
    mitigation = spec.mitigation
    if mitigation is None:
        raise SpecError("mitigation: the spec has no 'mitigation' section")
    before = run_audit(spec, progress=progress, command=command)
    prompt = spec.prompt.path
    if prompt is None:  # trained by the audit: where it was written
        prompt = before["provenance"]["prompt"]["source"]
    cf = spec.counterfactuals
    values = mitigation.model_dump(include=set(MitigationSweep.model_fields))
    values["suite"] = mitigation.suite or (cf.suite if cf is not None else None)
    values["features"] = mitigation.features or (cf.features if cf is not None else None)
    settings = MitigationSettings(**{k: v for k, v in values.items() if v is not None},
                                  max_length=spec.model.max_length, seed=spec.seed)
    out = Path(mitigation.out) if mitigation.out else private_output_dir("mitigated", spec.name)
    table = mitigation.data
    outcome = mitigate_from_table(
        spec.model.base, prompt, table.path, text_column=table.text_column,
        label_column=table.label_column, pair_column=table.pair_column,
        group_column=table.group_column, limit=table.limit,
        labels=before["task"].get("labels") or spec.model.labels, out_dir=out,
        settings=settings, positive_label=spec.model.positive_label, device=spec.model.device,
        resume=True,  # a re-run reuses finished candidates whose settings match
        progress=progress,
    )
    block = {"mitigated": outcome.mitigated, "adapter": None, "record": outcome.record}
    if not outcome.mitigated:
        result = {k: v for k, v in before.items() if k != "integrity"}
    else:
        after_spec = spec.model_copy(
            update={"prompt": spec.prompt.model_copy(update={"path": str(out), "train": None})}
        )
        after = run_audit(after_spec, progress=progress, command=command)
        result = {k: v for k, v in after.items() if k != "integrity"}
        block["adapter"] = str(out)
        block["before"] = {
            "prompt": prompt,
            "task": before["task"],
            "fairness": before["fairness"],
            "gates": before["gates"],
            "passed": before["passed"],
            "content_sha256": before["integrity"]["content_sha256"],
        }
        block["comparison"] = compare_results(before, after)
    result["mitigation"] = to_jsonable(block)
    # checked against the result types; integrity afresh (and signed, with a key, like `run`)
    return AuditResult.from_dict(result).to_dict()
