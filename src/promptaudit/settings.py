"""The settings of each stage that trains: one pydantic model each, every default, bound and
help text written once (as PEFT's ``PromptTuningConfig`` is one dataclass with its help).

:class:`TrainingConfig` is what :func:`promptaudit.training.train_prompt` takes; the
spec's ``prompt.train`` inherits its :class:`PromptTuning` fields and ``promptaudit
train``'s options are generated from them. :class:`MitigationSettings` and
:class:`MitigationSweep` are the same for mitigation. :data:`MaxLength` and :data:`Seed`
are ``model.max_length`` and ``seed`` wherever a stage takes them.

Like :mod:`promptaudit.choices`, this module imports neither torch nor transformers
(``promptaudit validate`` must not load them). A library settings model built with a bad
value raises a one-line :class:`InputError` (``epochs: 0; must be >= 1``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from promptaudit.choices import InitMethod
from promptaudit.errors import InputError

__all__ = [
    "MaxLength",
    "Seed",
    "TrainBatchSize",
    "DEFAULT_MAX_LENGTH",
    "PromptTuning",
    "TrainingConfig",
    "MitigationSweep",
    "MitigationSettings",
    "TranslationSearch",
    "TranslateSettings",
    "describe_error",
]

#: Most tokens of an input text the model sees (longer texts are truncated).
MaxLength = Annotated[int, Field(
    128, ge=4, le=8192, strict=True,
    description="Most tokens of an input text; longer texts are truncated.",
)]
#: The seed of numpy and torch (data splits, shuffles, initial weights).
Seed = Annotated[int, Field(
    0, ge=0, le=2**32 - 1, strict=True, description="Seed of every random choice."
)]
#: Batch size of a training loop (prompt tuning, each mitigation candidate).
TrainBatchSize = Annotated[int, Field(
    32, ge=1, strict=True, description="Training examples per optimisation step."
)]

_BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def describe_error(error: dict) -> str:
    """One line for a pydantic error dict: ``epochs: 0; must be >= 1``."""
    field = ".".join(str(part) for part in error.get("loc", ()))
    bounds = [key for key in _BOUND_WORDS if key in (error.get("ctx") or {})]
    if bounds:
        return (f"{field}: {error.get('input')!r}; must be {_BOUND_WORDS[bounds[0]]} "
                f"{error['ctx'][bounds[0]]}")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


class Settings(BaseModel):
    """Base of the settings models: unknown keys refused, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _OneLineErrors:
    """A settings model the library takes: built with a bad value it raises a one-line
    :class:`InputError`. (Not on the spec's sections: pydantic validates a nested model
    through its ``__init__``, and the spec reports its own errors.)"""

    #: Put before the field name in the message (``translate.`` gives ``translate.steps: 0``).
    error_prefix: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InputError(self.error_prefix + describe_error(exc.errors()[0])) from None


# ------------------------------------------------------------------ training
class PromptTuning(Settings):
    """The prompt-tuning settings an audit spec's ``prompt.train`` and the trainer share."""

    num_virtual_tokens: int = Field(
        20, ge=1, le=512, strict=True, description="Virtual tokens of the soft prompt."
    )
    init: InitMethod = Field(InitMethod.TEXT, description="text, random or vocab.")
    init_text: str | None = Field(
        None, description="Text whose token embeddings start the prompt (init text)."
    )
    epochs: int = Field(2, ge=1, le=1000, strict=True, description="Passes over the data.")
    learning_rate: float = Field(0.03, gt=0, strict=True, description="AdamW learning rate.")
    batch_size: TrainBatchSize
    max_length: MaxLength

    @model_validator(mode="after")
    def _text_to_start_from(self) -> PromptTuning:
        blank = self.init_text is not None and not self.init_text.strip()
        if self.init is InitMethod.TEXT and blank:
            raise ValueError("init_text: required when init is 'text'")
        return self


class TrainingConfig(_OneLineErrors, PromptTuning):
    """Hyper-parameters of prompt tuning (PEFT ``PromptTuningConfig`` plus the loop).

    ``init_text`` None with ``init`` ``text``: :func:`promptaudit.choices.default_init_text`
    of the labels.
    """

    seed: Seed
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="Seeded share of the data held out without validation data."
    )


# ---------------------------------------------------------------- mitigation
class MitigationSweep(Settings):
    """The mitigation settings an audit spec's ``mitigation:`` and the sweep share."""

    #: On the biased demo prompt every default weight met the demo's gates after two
    #: epochs at learning rate 0.003 (README, "Mitigation"); 1, 3 and 10 after one epoch
    #: did not (flip rate 0.058 > 0.05).
    weights: list[float] = Field(
        default_factory=lambda: [10.0, 30.0, 100.0],
        description="Comma-separated pairing weights to sweep.",
    )
    max_accuracy_drop: float = Field(
        0.02, ge=0, le=1, description="Largest accepted validation accuracy drop."
    )
    epochs: int = Field(2, ge=1, le=1000, strict=True, description="Epochs of each candidate.")
    #: 0.01 and above lost 2-5 accuracy points on the demo's evaluation set.
    learning_rate: float = Field(0.003, gt=0, description="Learning rate of each candidate.")
    batch_size: TrainBatchSize
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="Seeded share of the data held out to choose the weight."
    )
    suite: str | None = Field(
        "builtin:identity", description="Term suite for swaps: builtin:identity or a file."
    )
    features: list[str] | None = Field(
        None, description="Comma-separated suite features (default: all)."
    )
    group_weight: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="Weight of the group penalty (fairret)."
    )

    @field_validator("weights")
    @classmethod
    def _distinct_non_negative(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("give at least one pairing weight")
        for weight in value:
            if not weight >= 0 or weight == float("inf"):
                raise ValueError(f"weight {weight} is not allowed; each weight must be >= 0")
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a weight twice")
        return value


class MitigationSettings(_OneLineErrors, MitigationSweep):
    """How to mitigate: the sweep plus the settings an audit takes from elsewhere.

    ``keep_dropout`` False (the default) switches the base model's dropout off while
    re-tuning: the pairing term compares two forward passes, and with dropout their
    difference holds dropout noise as large as the identity effect on MiniLM, which the
    penalty can only "reduce" by shrinking every margin.
    """

    max_length: MaxLength
    seed: Seed
    max_pairs_per_batch: int | None = Field(
        None, ge=1, description="Most pairs per batch (default: the batch size)."
    )
    keep_dropout: bool = Field(False, description="Keep dropout active while re-tuning.")


# --------------------------------------------------------------- translation
class TranslationSearch(Settings):
    """The settings ``projection.translate`` and :func:`promptaudit.translate_prompt` share
    (defaults measured in ``benchmarks/bench_translation.py``)."""

    steps: int = Field(20, ge=1, le=100_000, strict=True, description="Most PEZ steps per seed.")
    restarts: int = Field(2, ge=2, le=100, strict=True, description=(
        "Runs, each from its own seed (seed, seed + 1, ...); at least 2: the uniqueness check "
        "compares runs from different seeds."))
    seed: Seed
    vocabulary: str = Field("words", min_length=1, description=(
        "words (whole words) or the path of a word-list file (one word per line)."))
    learning_rate: float = Field(0.05, gt=0, le=10,
                                 description="Adam learning rate of the continuous copy.")
    batch_size: int = Field(16, ge=1, le=4096, strict=True,
                            description="Optimisation rows per PEZ step.")
    eval_every: int = Field(20, ge=1, strict=True,
                            description="PEZ steps between validation checks.")
    patience: int = Field(3, ge=1, strict=True, description=(
        "Validation checks without improvement before the PEZ phase stops."))
    top_k: int = Field(3, ge=1, le=1000, strict=True,
                       description="Candidate words per position in the coordinate search.")
    sweeps: int = Field(1, ge=0, le=100, strict=True,
                        description="Most coordinate-search sweeps over all positions.")
    search_rows: int = Field(32, ge=1, strict=True, description=(
        "Optimisation rows that score coordinate-search candidates."))
    validation_fraction: float = Field(0.2, gt=0, lt=1,
                                       description="Share of the texts kept for validation.")
    heldout_fraction: float = Field(0.3, gt=0, lt=1, description=(
        "Share of the texts kept for the held-out fidelity."))

    @model_validator(mode="after")
    def _rows_left(self) -> TranslationSearch:
        if self.validation_fraction + self.heldout_fraction >= 0.9:
            raise ValueError("validation_fraction + heldout_fraction must be below 0.9 (rows "
                             "are needed for the optimisation)")
        return self


class TranslateSettings(_OneLineErrors, TranslationSearch):
    """Knobs of :func:`promptaudit.translate_prompt`; a bad value raises a one-line
    :class:`InputError` (``translate.restarts: 1; must be >= 2``)."""

    error_prefix: ClassVar[str] = "translate."


#: ``model.max_length`` when none is given (every stage that tokenizes uses it).
DEFAULT_MAX_LENGTH: int = TrainingConfig.model_fields["max_length"].default
