"""The closed choices of the audit stages, defined once, in one light module.

Defaults and bounds of the stages' settings live in their settings models
(:mod:`promptaudit.settings`).

Each choice below belongs to one stage and is re-exported by that stage's module
(``promptaudit.models.Task`` *is* :class:`Task`); the audit spec
(:mod:`promptaudit.spec`) derives its allowed values from here. Why a module of
its own: the stages import torch, transformers or fairlearn when they are
imported, and checking a spec (``promptaudit validate``) must not load them.
So this module imports nothing but the standard library and
:mod:`promptaudit.errors`; anything that needs torch imports it inside the
function that needs it (:attr:`DType.torch_dtype`).

=============  ==================================================
stage          choices
=============  ==================================================
models         :class:`Task`, :class:`DType`
training       :class:`InitMethod`, :func:`default_init_text`
projection     :class:`ProjectionMetric` (``projection.Metric``)
attribution    :class:`AttributionMethod`, :class:`Baseline`
fairness       :data:`GROUP_METRICS` (``fairness.GROUP_METRICS``),
               :data:`LABEL_METRICS`
gates          :class:`GateStatus` (``gates.GateStatus``,
               ``result_sections.GateStatus``)
=============  ==================================================
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING

from promptaudit.errors import InputError, ModelError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Task",
    "DType",
    "InitMethod",
    "default_init_text",
    "ProjectionMetric",
    "UNKNOWN_PROJECTION_METRIC_MESSAGE",
    "UNKNOWN_ATTRIBUTION_CHOICE",
    "AttributionMethod",
    "Baseline",
    "GROUP_METRICS",
    "LABEL_METRICS",
    "GateStatus",
]


# -------------------------------------------------------------------- models
class Task(enum.StrEnum):
    """What the prompted model predicts and how label probabilities are read."""

    SEQUENCE_CLASSIFICATION = "sequence-classification"
    CAUSAL_LM = "causal-lm"
    MASKED_LM = "masked-lm"

    @classmethod
    def parse(cls, value: str | Task, *, field: str = "task") -> Task:
        """Parse a task name, raising a one-line :class:`ModelError` on an unknown one."""
        if isinstance(value, Task):
            return value
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(t.value for t in cls)
            raise ModelError(f"{field}: unknown task {value!r}; allowed: {allowed}") from None


class DType(enum.StrEnum):
    """Floating-point precision of the loaded model."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            self.value
        ]


# ------------------------------------------------------------------ training
class InitMethod(enum.StrEnum):
    """How the virtual tokens start: a text's token embeddings, random or sampled vocabulary."""

    TEXT = "text"
    RANDOM = "random"
    VOCAB = "vocab"

    @property
    def peft_name(self) -> str:
        return {"text": "TEXT", "random": "RANDOM", "vocab": "SAMPLE_VOCAB"}[self.value]


def default_init_text(labels: Sequence[str]) -> str:
    """The init text used when none is given: ``"Classify this text as a or b"``."""
    return "Classify this text as " + " or ".join(str(label) for label in labels)


# ---------------------------------------------------------------- projection
UNKNOWN_PROJECTION_METRIC_MESSAGE = "metric: unknown metric {metric!r}; allowed: {allowed}"


class ProjectionMetric(enum.StrEnum):
    """How closeness between a virtual token and a word is scored (higher is closer)."""

    COSINE = "cosine"
    DOT = "dot"
    L2 = "l2"

    @classmethod
    def parse(cls, value: str | ProjectionMetric) -> ProjectionMetric:
        """Parse a metric name, raising :class:`InputError` naming the allowed ones."""
        if isinstance(value, ProjectionMetric):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise InputError(
                UNKNOWN_PROJECTION_METRIC_MESSAGE.format(metric=value, allowed=allowed)
            ) from None


# --------------------------------------------------------------- attribution
class _AttributionChoice(enum.StrEnum):
    @classmethod
    def parse(cls, value):
        """Parse a name, raising a one-line :class:`InputError` on an unknown one."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise InputError(UNKNOWN_ATTRIBUTION_CHOICE[cls].format(value=value)) from None


class AttributionMethod(_AttributionChoice):
    """Attribution method (one Captum method each)."""

    INTEGRATED_GRADIENTS = "integrated_gradients"
    FEATURE_ABLATION = "feature_ablation"
    SHAPLEY_SAMPLING = "shapley_sampling"


class Baseline(_AttributionChoice):
    """Reference embedding put at every prompt and input position."""

    ZERO = "zero"
    PAD = "pad"
    MEAN = "mean"


class ShapleyInput(_AttributionChoice):
    """How Shapley sampling groups the input: one player, or one player per token."""

    WHOLE = "whole"
    TOKENS = "tokens"


UNKNOWN_ATTRIBUTION_CHOICE = {
    AttributionMethod: "method: unknown attribution method {value!r}; allowed: "
    + ", ".join(AttributionMethod),
    Baseline: "baseline: unknown baseline {value!r}; allowed: " + ", ".join(Baseline),
    ShapleyInput: "shapley_input: unknown grouping {value!r}; allowed: " + ", ".join(ShapleyInput),
}


# ------------------------------------------------------------------ fairness
#: Group metrics that can be selected (``fairness.metrics``); ``count`` is always reported.
GROUP_METRICS = (
    "selection_rate",
    "accuracy",
    "true_positive_rate",
    "false_positive_rate",
    "true_negative_rate",
    "false_negative_rate",
    "mean_score",
)
#: Group metrics that need true labels.
LABEL_METRICS = frozenset(
    {
        "accuracy",
        "true_positive_rate",
        "false_positive_rate",
        "true_negative_rate",
        "false_negative_rate",
    }
)


class GateStatus(enum.StrEnum):
    """The three verdicts a gate can reach (``gates[i].status`` of a result)."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
