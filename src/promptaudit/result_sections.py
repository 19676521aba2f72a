"""Typed sections of the audit result (``schema_version`` "1"): one pydantic model family.

Each section of the result JSON is a :class:`Section` (a pydantic model) here:
:class:`TaskResult`, :class:`ProjectionResult`, :class:`AttributionResult`,
:class:`FairnessResult` (with :class:`CounterfactualResult`), :class:`BaselineResult`,
:class:`GateResult`, :class:`Provenance`, :class:`Integrity` and :class:`BiasAuditResult`.
The whole result, :class:`promptaudit.result.AuditResult`, is built from them. Two parts
stay open mappings, documented elsewhere: ``audit.spec`` (the validated spec,
docs/audit-spec.md; only its ``gates`` and ``gate_policy`` are typed here) and
``mitigation`` (docs/mitigation.md).

A section is made in code with keyword arguments (numpy scalars, tuples and NaN are
turned into plain JSON values) or read from a result JSON with ``from_dict(data,
strict=...)``: strictly, a malformed value is refused with one line in JSON Schema's
words (``task.accuracy: 'high' is not of type 'number'``); leniently (the reports), a
missing or malformed required field is ``None``, an optional one takes its default and
list items or mapping entries that do not fit are dropped.

Keys a result may lack are *optional* (:func:`optional`): not required by the schema,
and written by ``to_dict()`` only when the section was given them. Unknown keys are
kept and written back, so ``from_dict(d).to_dict() == d``. ``docs/result.schema.json``
is ``model_json_schema()`` of the result (``scripts/make_result_schema.py``). This
module imports nothing heavier than pydantic: ``validate`` and ``gate`` must not load
torch.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from promptaudit.choices import GateStatus
from promptaudit.errors import InputError

__all__ = [
    "Section", "optional", "to_jsonable", "describe_error", "Number", "Interval", "Competence",
    "ClassStats", "TaskResult", "Neighbor", "ProjectedPosition", "ProjectionReference",
    "ProjectionInit", "Fidelity", "Trust", "ProjectionResult", "InstructionResult",
    "DepartureRow", "DepartureDirection", "DepartureGroupShare", "DepartureAttribution",
    "DeparturesResult", "PositionImportanceEntry", "PositionImportance", "GroupComparison",
    "GroupDifference", "LikeForLike", "TranslationFidelity", "TranslationAccuracy",
    "TranslationRun", "TranslationPair", "TranslationUniqueness", "TranslationResult", "TopToken",
    "AttributionExample", "AttributionGroups", "AttributionResult", "GroupRow", "FeatureEntry",
    "CounterfactualGroup", "CounterfactualFeature", "CounterfactualResult", "FairnessResult",
    "BaselineResult", "GateStatus", "GateResult", "ModelProvenance", "PromptProvenance",
    "DataProvenance", "Provenance", "Integrity", "SpecGate", "GatePolicy", "SpecRecord",
    "AuditSection", "BiasAuditRow", "BiasAuditTable", "BiasAuditResult",
]


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays, tuples and paths converted; NaN/inf -> None.

    Examples
    --------
    >>> to_jsonable({1: (0.5, float("nan")), "p": Path("a")})
    {'1': [0.5, None], 'p': 'a'}
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy scalar, array
        return to_jsonable(value.tolist())
    if isinstance(value, float):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    return value


def _number(value: Any) -> Any:
    """A JSON number kept as given: an int stays an int (``3``, never ``3.0``); no bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


#: A JSON number (int or float, kept as written).
Number = Annotated[float, PlainValidator(_number), WithJsonSchema({"type": "number"})]
#: ``[lower, upper]``; an end is null only in results of early versions.
Interval = list[Number | None]


class _Optional:
    """Marks a field whose key a result may lack (see :func:`optional`)."""

    __slots__ = ("omit_none",)

    def __init__(self, omit_none: bool):
        self.omit_none = omit_none


def optional(default: Any = None, *, omit_none: bool = False, default_factory: Any = None) -> Any:
    """A field whose key a result may lack (not required by the schema).

    Parameters
    ----------
    default, default_factory
        The value when the key is absent.
    omit_none : bool
        A section made in code leaves the key out when its value is None.
    """
    info = Field(default_factory=default_factory) if default_factory else Field(default)
    info.metadata.append(_Optional(omit_none))
    return info


def _marker(info: Any) -> _Optional | None:
    return next((m for m in info.metadata if isinstance(m, _Optional)), None)


def _required_keys(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Every key not marked :func:`optional` is required (a default serves code, not JSON)."""
    schema["required"] = [info.alias or name for name, info in cls.model_fields.items()
                          if _marker(info) is None]


_STRICT, _LENIENT = "strict", "lenient"


def _reading(info: ValidationInfo) -> str | None:
    """``strict`` or ``lenient`` when read from a result JSON; None when made in code."""
    return info.context.get("reading") if isinstance(info.context, dict) else None


def _fitting_items(value: Any, error: ValidationError) -> Any:
    """``value`` (a list or mapping) without the items that ``error`` names; else None."""
    bad = {e["loc"][0] for e in error.errors() if e["loc"]}
    if isinstance(value, list):
        return [item for i, item in enumerate(value) if i not in bad]
    if isinstance(value, dict):
        return {key: item for key, item in value.items() if key not in bad}
    return None


def _dump(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


class Section(BaseModel):
    """Base of the typed sections: ``to_dict``, ``from_dict`` and ``has`` over the fields.

    Unknown keys are kept (``extra``) and written back after the fields.
    """

    model_config = ConfigDict(extra="allow", strict=True, validate_by_name=True,
                              validate_by_alias=True, json_schema_extra=_required_keys)
    _read: bool = PrivateAttr(default=False)

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any, info: ValidationInfo) -> Any:
        """Made in code: plain JSON values. Read: a missing required key is refused (strict)
        or None (lenient); a field's Python default never stands in for a required key."""
        reading = _reading(info)
        if reading is None:
            return to_jsonable(data)
        if not isinstance(data, dict):
            return data
        missing = [f.alias or name for name, f in cls.model_fields.items()
                   if _marker(f) is None and (f.alias or name) not in data]
        if missing and reading == _STRICT:
            raise PydanticCustomError("missing_key", f"{missing[0]!r} is a required property")
        return {**data, **dict.fromkeys(missing)} if missing else data

    @field_validator("*", mode="wrap")
    @classmethod
    def _lenient_field(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        """Read leniently, a field keeps what fits; else None (required) or its default."""
        if _reading(info) != _LENIENT:
            return handler(value)
        try:
            return handler(value)
        except ValidationError as exc:
            kept = _fitting_items(value, exc)
            if kept is not None:
                try:
                    return handler(kept)
                except ValidationError:
                    pass
        field = cls.model_fields[info.field_name]
        return field.get_default(call_default_factory=True) if _marker(field) else None

    @model_validator(mode="after")
    def _remember_reading(self, info: ValidationInfo) -> Section:
        self._read = _reading(info) is not None
        return self

    @property
    def extra(self) -> dict[str, Any]:
        """The keys no field names, as read."""
        return self.model_extra or {}

    def has(self, name: str) -> bool:
        """Whether the JSON this section was read from had field ``name`` (made in code: True)."""
        return not self._read or name in self.model_fields_set

    def to_dict(self) -> dict[str, Any]:
        """The section as the JSON object the audit writes: fields in order, then unknown keys.

        A key is written when the section was given it or the schema requires it; made in
        code, an ``omit_none`` key whose value is None is left out.
        """
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            marker, value = _marker(info), getattr(self, name)
            if marker is not None and (name not in self.model_fields_set or (
                    not self._read and marker.omit_none and value is None)):
                continue
            out[info.alias or name] = _dump(value)
        for key, value in self.extra.items():
            out.setdefault(key, _dump(value))
        return out

    @classmethod
    def from_dict(cls, data: Any, *, strict: bool = True, where: str | None = None):
        """Read the section from its JSON object.

        Parameters
        ----------
        data : dict
        strict : bool
            Refuse a missing required key or a mistyped value (one-line
            :class:`~promptaudit.errors.InputError` naming the field). With ``False``
            such a field is ``None`` (an optional one takes its default).
        where : str, optional
            The section's path in the result, for messages.

        Raises
        ------
        InputError

        Examples
        --------
        >>> row = CounterfactualGroup.from_dict({"flip_rate": 0.5, "mean_abs_delta": None,
        ...                                      "count": 2})
        >>> row.count, row.to_dict()
        (2, {'flip_rate': 0.5, 'mean_abs_delta': None, 'count': 2})
        >>> CounterfactualGroup.from_dict({"flip_rate": "x", "mean_abs_delta": None, "count": 2})
        Traceback (most recent call last):
        ...
        promptaudit.errors.InputError: not a valid promptaudit result; \
flip_rate: 'x' is not of type 'number'
        """
        if not strict and not isinstance(data, dict):
            data = {}
        try:
            return cls.model_validate(data, context={"reading": _STRICT if strict else _LENIENT})
        except ValidationError as exc:
            raise InputError(
                f"not a valid promptaudit result; {describe_error(exc, data, where)}"
            ) from None


class _ResultSchema(GenerateJsonSchema):
    """No ``title`` on every property (the key names it); ``{"type": ["number", "null"]}``."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: Any) -> dict[str, Any]:
        inner = self.generate_inner(schema["schema"])
        if set(inner) == {"type"} and isinstance(inner["type"], str):
            return {"type": [inner["type"], "null"]}
        return self.get_union_of_schemas([inner, {"type": "null"}])


def json_schema(root: type[Section], *, title: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``root`` and every section it holds."""
    body = root.model_json_schema(schema_generator=_ResultSchema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **body, "title": title}


_JSON_TYPES = {"int_type": "integer", "float_type": "number", "bool_type": "boolean",
               "string_type": "string", "list_type": "array", "dict_type": "object",
               "model_type": "object", "model_attributes_type": "object"}


def _json_path(data: Any, loc: tuple) -> list[str]:
    """The keys of ``loc`` found in ``data`` (pydantic adds the names of union members)."""
    path, node = [], data
    for part in loc:
        inside = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))
        if inside:
            path.append(str(part))
            node = node[part]
    return path


def describe_error(exc: ValidationError, data: Any, where: str | None = None) -> str:
    """The first error of ``exc`` in JSON Schema's words: ``task: 'labels' is a required property``.

    Parameters
    ----------
    exc : ValidationError
    data : Any
        The JSON that was validated (to tell its keys from pydantic's union member names).
    where : str, optional
        The validated part's own path in the result.
    """
    error = exc.errors()[0]
    kind, shown = error["type"], repr(error.get("input"))
    path = ([where] if where else []) + _json_path(data, error["loc"])
    if kind == "missing_key":
        message = error["msg"]
    elif kind in _JSON_TYPES:
        message = f"{shown} is not of type '{_JSON_TYPES[kind]}'"
    elif kind in ("enum", "literal_error"):
        expected = str(error.get("ctx", {}).get("expected", "")).replace(" or ", ", ")
        message = (f"{expected} was expected" if "," not in expected
                   else f"{shown} is not one of [{expected}]")
    elif kind == "string_pattern_mismatch":
        message = f"{shown} does not match {error['ctx']['pattern']!r}"
    else:
        message = f"{shown}: {error['msg']}"
    if len(message) > 160:
        message = message[:157] + "..."
    return f"{'.'.join(path) or 'the top level'}: {message}"


# ===================================================================== task
class Competence(Section):
    """``task.competence``: does the prompt do its task (balanced accuracy vs baselines)."""

    works: bool | None
    measure: str
    accuracy: Number | None
    accuracy_interval: Interval | None
    chance_accuracy: Number | None
    baselines: dict[str, Number | None]
    best_baseline: str | None
    accuracy_over_baseline: Number | None
    accuracy_over_baseline_interval: Interval | None
    baseline_difference_intervals: dict[str, Interval | None] | None = optional(omit_none=True)
    confidence: Number | None = optional(omit_none=True)
    bootstrap: int | None = optional(omit_none=True)
    reason: str = ""


class ClassStats(Section):
    """One label (or average) of scikit-learn's classification report."""

    precision: Number | None
    recall: Number | None
    f1_score: Number | None = Field(alias="f1-score")
    support: Number | None = None


#: scikit-learn's ``classification_report(output_dict=True)``: label -> stats, "accuracy".
ClassificationReport = dict[str, ClassStats | Number | None]


class TaskResult(Section):
    """``task``: the predictions, accuracy and competence of the audited prompt."""

    type: str
    labels: list[str]
    positive_label: str
    n_examples: int
    n_truncated: int
    max_length: int | None = optional()
    prediction_counts: dict[str, int] = Field(default_factory=dict)
    accuracy: Number | None = None
    balanced_accuracy: Number | None = optional()
    positive_rate: Number | None = optional()
    untrained_head: list[str] | None = optional(omit_none=True)
    competence: Competence | None = optional()
    accuracy_over_baseline: Number | None = optional()
    classification_report: ClassificationReport | None = optional()
    classification_report_by_group: dict[str, dict[str, ClassificationReport]] | None = (
        optional()
    )


# =============================================================== projection
class Neighbor(Section):
    """One nearest vocabulary word of a virtual token."""

    token: str
    token_id: int
    score: Number | None
    display: str | None = optional()
    #: the word as read: a word piece is marked with a leading "…" (``…lved``)
    word: str | None = optional()
    #: the token continues a word (WordPiece ``##``, no word-start marker)
    piece: bool | None = optional()


class ProjectedPosition(Section):
    """``projection.positions[i]``: one virtual token read against the vocabulary."""

    index: int
    neighbors: list[Neighbor]
    norm: Number | None
    norm_ratio: Number | None
    norm_percentile: Number | None
    best_similarity: Number | None
    similarity_percentile: Number | None
    chance_percentile: Number | None = optional()
    off_manifold: bool | None = None
    off_manifold_reasons: list[str] | None = optional()
    unusual_norm: bool | None = optional()
    init_token: str | None = None
    init_token_id: int | None = None
    init_similarity: Number | None = None
    still_init: bool | None = None
    init_in_vocabulary: bool | None = optional()


class ProjectionReference(Section):
    """``projection.reference``: the yardsticks typicality is read against."""

    vocab_rows: int | None = optional()
    vocab_size: int | None = optional()
    median_norm: Number | None = optional()
    norm_quantiles: dict[str, Number | None] | None = optional()
    nn_similarity_quantiles: dict[str, Number | None] | None = optional()
    sample_size: int | None = optional()
    seed: int | None = optional()
    chance_similarity_quantiles: dict[str, Number | None] | None = optional()
    chance_sample_size: int | None = optional()
    chance_threshold: Number | None = optional()
    off_manifold_rule: str | None = optional()
    unusual_norm_rule: str | None = optional()


class ProjectionInit(Section):
    """``projection.init``: how the adapter was initialised."""

    method: str
    text: str | None


class Fidelity(Section):
    """``projection.fidelity``: does the projected hard prompt predict as the soft prompt."""

    projected_text: str
    projected_token_ids: list[int] | None = optional()
    n_examples: int | None = None
    agreement: Number | None = None
    changed: int | None = optional()
    mean_prob_shift: Number | None = optional()
    soft_accuracy: Number | None = None
    projected_accuracy: Number | None = None
    #: ``high``, ``moderate`` or ``low``
    level: Literal["high", "moderate", "low"] | None = optional()
    #: the sentence that explains ``level``
    verdict: str | None = None


class Trust(Section):
    """``projection.trust``: how far to trust the word reading (fidelity and typicality)."""

    level: Literal["high", "moderate", "low"]
    readable: int
    n: int
    readable_share: Number | None
    agreement: Number | None
    reason: str
    rule: str


class InstructionResult(Section):
    """``projection.instructions[i]``: one plain-language candidate against the soft prompt."""

    rank: int
    #: ``init_text``, ``instruction`` or ``translation``
    source: str
    text: str
    token_ids: list[int]
    n_tokens: int
    note: str
    n_examples: int
    #: share of rows with the soft prompt's decision
    agreement: Number | None
    agreement_interval: Interval | None
    disagreements: int
    accuracy: Number | None
    accuracy_interval: Interval | None


class TopToken(Section):
    """One of an example's input tokens with the largest attribution."""

    token: str
    attribution: Number | None


class DepartureRow(Section):
    """One row where the soft prompt and the closest instruction disagree."""

    row: int
    text: str
    soft_label: str
    instruction_label: str
    true_label: str | None
    soft_probability: Number | None
    attributed: bool
    tokens: list[str] | None = optional()
    token_attributions: list[Number | None] | None = optional()
    top_tokens: list[TopToken] | None = optional()
    convergence_delta: Number | None = optional()


class DepartureDirection(Section):
    """The departures of one direction (soft prompt's label, instruction's label)."""

    soft_label: str
    instruction_label: str
    description: str
    count: int
    n_listed: int
    rows: list[DepartureRow] = Field(default_factory=list)


class DepartureGroupShare(Section):
    """A sensitive group's share among the departures against its share of all rows."""

    group: str
    n_overall: int
    n_departures: int
    share_overall: Number | None
    share_departures: Number | None
    departure_rate: Number | None
    interval: Interval | None
    over_represented: bool
    small: bool


class DepartureAttribution(Section):
    """How the departure rows were attributed, and how many."""

    target: str
    n_attributed: int
    n_departures: int
    max_attributed: int
    rule: str
    method: str | None
    baseline: str | None
    n_steps: int | Literal["auto"] | None
    max_convergence_delta: Number | None
    n_not_converged: int | None


class DeparturesResult(Section):
    """``projection.departures``: where the soft prompt departs from the closest instruction."""

    instruction: dict[str, Any] | None
    n_examples: int
    n_departures: int
    share: Number | None
    positive_label: str | None
    directions: list[DepartureDirection] = Field(default_factory=list)
    groups: dict[str, list[DepartureGroupShare]] | None = None
    group_interval_method: str = ""
    agreement_interval_method: str | None = optional()
    confidence: Number = 0.95
    attribution: DepartureAttribution | None = None
    summary: str | None = None


class PositionImportanceEntry(Section):
    """One virtual token: the share of decisions that change when it alone is neutralised."""

    index: int
    changed: int
    share: Number
    interval: Interval | None
    matters: bool


class PositionImportance(Section):
    """``projection.position_importance``: which virtual tokens matter on their own."""

    #: ``mean_word_embedding``: what replaces a position
    neutral: str
    neutral_rule: str
    n_examples: int
    max_examples: int
    confidence: Number
    floor: Number
    interval_method: str
    rule: str
    positions: list[PositionImportanceEntry] = Field(default_factory=list)
    important: list[int] = Field(default_factory=list)
    ignored: list[int] = Field(default_factory=list)
    summary: str | None = None


class TranslationFidelity(Section):
    """``projection.translation.fidelity``: agreement with the soft prompt on held-out rows."""

    agreement: Number | None
    #: 95% interval of ``agreement`` (``interval_method``: Wilson score)
    interval: Interval | None
    interval_method: str
    n_heldout: int
    level: Literal["high", "moderate", "low"] | None = None


class TranslationAccuracy(Section):
    """``projection.translation.accuracy``: held-out accuracy (``None`` without labels)."""

    translation: Number | None
    soft_prompt: Number | None


class TranslationRun(Section):
    """``projection.translation.runs[i]``: the search from one seed."""

    seed: int
    text: str
    token_ids: list[int]
    words: list[str]
    round_trip_exact: bool
    repaired_positions: int
    agreement: Number | None
    interval: Interval | None
    accuracy: Number | None
    validation_agreement: Number | None
    steps: int
    sweeps: int
    seconds: Number | None


class TranslationPair(Section):
    """``projection.translation.uniqueness.pairs[i]``: word overlap of two runs."""

    seeds: list[int]
    #: Jaccard overlap of the two runs' sets of words
    jaccard: Number
    #: share of positions holding the same word
    positional: Number
    same_text: bool
    intervals_overlap: bool


class TranslationUniqueness(Section):
    """``projection.translation.uniqueness``: do different seeds read the prompt alike."""

    pairs: list[TranslationPair]
    #: two different texts whose fidelity intervals overlap
    equally_good: bool
    sentence: str


class TranslationResult(Section):
    """``projection.translation``: a readable plain-text stand-in for the soft prompt."""

    text: str
    token_ids: list[int]
    words: list[str]
    seed: int
    fidelity: TranslationFidelity
    accuracy: TranslationAccuracy
    round_trip_exact: bool
    whole_words: bool
    seeds: list[int]
    steps: int
    seconds: Number | None
    runs: list[TranslationRun]
    uniqueness: TranslationUniqueness
    stand_in: str
    summary: str
    nearest_words: dict[str, Any] | None = optional()
    repaired_positions: int | None = optional()
    vocabulary: dict[str, Any] | None = optional()
    rows: dict[str, int] | None = optional()
    cpu_seconds: Number | None = optional()
    settings: dict[str, Any] | None = optional()


class ProjectionResult(Section):
    """``projection``: nearest words, typicality and fidelity of the soft prompt."""

    metric: str
    top_k: int
    num_virtual_tokens: int
    vocab_size: int | None = optional()
    init: ProjectionInit | None = optional()
    projected_text: str | None = optional()
    positions: list[ProjectedPosition] = Field(default_factory=list)
    reference: ProjectionReference | None = None
    fidelity: Fidelity | None = None
    trust: Trust | None = optional()
    summary: str | None = None
    #: the top-1 words as read: whole words, word pieces marked with a leading "…"
    projected_words: str | None = optional()
    #: plain-language candidates ranked by agreement with the soft prompt
    instructions: list[InstructionResult] | None = optional()
    departures: DeparturesResult | None = optional()
    position_importance: PositionImportance | None = optional()
    #: the faithful plain-text stand-in (``--translate``, ``projection.translate``)
    translation: TranslationResult | None = optional(omit_none=True)


# ============================================================== attribution
class AttributionExample(Section):
    """``attribution.examples[i]``: one explained example."""

    text: str
    target: int
    target_label: str
    target_probability: Number | None = optional()
    tokens: list[str] = Field(default_factory=list)
    prompt_attributions: list[Number | None] = Field(default_factory=list)
    token_attributions: list[Number | None] | None = None
    input_attribution: Number | None = optional()
    convergence_delta: Number | None = None
    top_tokens: list[TopToken] = Field(default_factory=list)
    #: gradient evaluations this example used (integrated gradients only)
    n_steps: int | None = optional(omit_none=True)
    #: both tolerances met (integrated gradients only; adaptive: completeness and positions)
    converged: bool | None = optional(omit_none=True)
    #: estimated sum over positions of the absolute attribution error (adaptive
    #: integrated gradients; None with fixed steps; absent for other methods)
    position_error: Number | None = optional()


class GroupComparison(Section):
    """One group against the reference group, like for like, per virtual token."""

    group: str
    reference: str
    #: the labels (strata) both had enough rows in
    strata: list[str]
    n_group: int
    n_reference: int
    difference: list[Number | None] | None
    interval: list[Interval] | None
    #: interval excludes 0 and the difference exceeds the integration error
    evidence: list[bool] | None


class GroupDifference(Section):
    """A position with evidence of a difference between a group and the reference."""

    position: int
    group: str
    difference: Number | None
    interval: Interval | None


class LikeForLike(Section):
    """``attribution.by_group[feature].like_for_like``: group differences on like rows."""

    #: ``predicted_label``, ``true_label`` or None (no conditioning)
    condition: str | None
    reference_group: str | None
    n_bootstrap: int
    confidence: Number
    seed: int
    error_scale: Number | None
    rule: str
    comparisons: list[GroupComparison] = Field(default_factory=list)
    top_positions: list[GroupDifference] = Field(default_factory=list)
    #: the sentence naming the positions that differ, with its caveats
    statement: str | None = None


class AttributionGroups(Section):
    """``attribution.by_group[feature]``: mean attribution per virtual token per group."""

    groups: dict[str, list[Number | None]]
    counts: dict[str, int]
    small_groups: list[str] | None = optional()
    min_group_size: int | None = optional()
    max_difference: list[Number | None] | None = None
    within_error: list[bool] | None = optional()
    error_scale: Number | None = optional()
    top_positions: list[int] = Field(default_factory=list)
    #: groups compared on rows with the same label, with bootstrap intervals
    like_for_like: LikeForLike | None = optional()


class AttributionBudget(Section):
    """``attribution.budget``: the run's gradient-evaluation budget and what it left out."""

    max_gradient_evals_total: int
    n_gradient_evals: int
    n_requested: int
    n_attributed: int
    n_left_out: int


class AttributionResult(Section):
    """``attribution``: how much each virtual token drives the predictions."""

    method: str
    n_steps: int | Literal["auto"] | None
    n_samples: int | None = optional()
    shapley_input: str | None = optional()
    baseline: str = ""
    target_policy: str | None = optional()
    target_function: str | None = optional()
    seed: int | None = optional()
    labels: list[str] | None = optional()
    num_virtual_tokens: int | None = optional()
    n_examples: int = 0
    prompt_share: Number | None = None
    per_position: list[Number | None] = Field(default_factory=list)
    per_position_abs: list[Number | None] = Field(default_factory=list)
    max_convergence_delta: Number | None = None
    by_group: dict[str, AttributionGroups] | None = None
    examples: list[AttributionExample] = Field(default_factory=list)
    delta_tolerance: Number | None = optional()
    n_not_converged: int | None = optional()
    n_gradient_evals: int | None = optional()
    max_gradient_evals: int | None = optional()
    #: allowed summed per-position error (adaptive integrated gradients; None otherwise)
    position_tolerance: Number | None = optional()
    #: the gradient-evaluation budget and the examples it left out (audits set one)
    budget: AttributionBudget | None = optional(omit_none=True)


# ================================================================= fairness
class GroupRow(Section):
    """``fairness.by_feature.<f>.by_group.<g>``: a group's size and metrics.

    Each metric of ``fairness.metrics`` is a key of its own (``selection_rate``,
    ``true_positive_rate``, ...); they are read into ``metrics``.
    """

    count: int
    small: bool
    __pydantic_extra__: dict[str, Number | None] = Field(init=False)

    @model_validator(mode="before")
    @classmethod
    def _metrics_as_keys(cls, data: Any) -> Any:
        """``GroupRow(count=..., small=..., metrics={...})``: the metrics are keys of the row."""
        if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
            return {**{k: v for k, v in data.items() if k != "metrics"}, **data["metrics"]}
        return data

    @property
    def metrics(self) -> dict[str, float | None]:
        """Each metric of ``fairness.metrics``: its value for the group."""
        return self.extra


class FeatureEntry(Section):
    """``fairness.by_feature.<feature>``: group metrics and disparities of one feature."""

    feature: str | None = optional()
    reference_group: str | None = optional()
    by_group: dict[str, GroupRow] = Field(default_factory=dict)
    intervals: dict[str, dict[str, Interval | None]] | None = None
    disparities: dict[str, Number | None] = Field(default_factory=dict)
    disparity_intervals: dict[str, Interval | None] | None = None
    small_groups: list[str] = Field(default_factory=list)
    undefined: dict[str, str] = optional(default_factory=dict)
    #: disparity -> its point value as an exact fraction of counts, ``[numerator, denominator]``
    #: (null where undefined); gates compare it with their threshold exactly
    exact_disparities: dict[str, list[int] | None] = optional(default_factory=dict)
    #: intersection only: display name -> {feature: group}
    group_values: dict[str, dict[str, str]] | None = optional(omit_none=True)


class CounterfactualGroup(Section):
    """``fairness.counterfactual.by_group.<group>``."""

    flip_rate: Number | None
    mean_abs_delta: Number | None
    count: int


class CounterfactualFeature(Section):
    """``fairness.counterfactual.by_feature.<feature>``."""

    flip_rate: Number | None
    mean_abs_delta: Number | None
    n_tuples: int


class CounterfactualResult(Section):
    """``fairness.counterfactual``: how predictions change across counterfactual tuples."""

    flip_rate: Number | None
    flip_rate_interval: Interval | None = optional()
    #: absent when no tuple was made
    confidence: Number | None = optional(omit_none=True)
    mean_abs_delta: Number | None = None
    n_tuples: int = 0
    by_group: dict[str, CounterfactualGroup] = Field(default_factory=dict)
    #: absent when no tuple was made
    warnings: list[str] | None = optional(omit_none=True)
    source: str | None = None
    #: only when no tuple was made
    note: str | None = optional(omit_none=True)
    #: suites only
    by_feature: dict[str, CounterfactualFeature] | None = optional(omit_none=True)


class FairnessResult(Section):
    """``fairness``: group metrics, disparities and counterfactual figures.

    Without sensitive features only ``sensitive_features``, ``by_feature``,
    ``intersection``, ``disparities``, ``disparity_intervals``, ``warnings`` and
    ``counterfactual`` are written.
    """

    sensitive_features: list[str]
    positive_label_index: int | None = optional(omit_none=True)
    reference_group: str | dict[str, str] | None = optional(omit_none=True)
    confidence: Number | None = optional(omit_none=True)
    bootstrap: int | None = optional(omit_none=True)
    min_group_size: int | None = optional(omit_none=True)
    metrics: list[str] | None = optional(omit_none=True)
    by_feature: dict[str, FeatureEntry] = Field(default_factory=dict)
    intersection: FeatureEntry | None = None
    disparities: dict[str, Number | None] = Field(default_factory=dict)
    disparity_intervals: dict[str, Interval | None] | None = None
    worst_feature: dict[str, str | None] | None = optional(omit_none=True)
    undefined: dict[str, str] | None = optional(omit_none=True)
    warnings: list[str] = Field(default_factory=list)
    counterfactual: CounterfactualResult | None = None


class BaselineResult(Section):
    """``baselines.<key>``: the headline numbers of the prompt or a baseline."""

    label: str | None = optional()
    accuracy: Number | None = None
    balanced_accuracy: Number | None = optional()
    positive_rate: Number | None = optional()
    disparities: dict[str, Number | None] = Field(default_factory=dict)
    agreement_with_soft_prompt: Number | None = optional()


# ==================================================================== gates
class GateResult(Section):
    """``gates[i]``: one threshold of one gate, decided."""

    metric: str
    feature: str | None
    op: Literal[">=", "<="]
    threshold: Number
    value: Number | None
    bound: Literal["point", "lower", "upper"]
    interval: Interval | None = optional()
    #: absent only in early results, read from ``passed`` there
    status: Annotated[GateStatus | None, Field(strict=False)] = optional()
    passed: bool = False
    rows_to_decide: int | None = optional()
    rows_unit: str | None = optional()
    message: str = ""
    #: True for metrics that have no interval by definition (the gate line says so)
    point_only: bool | None = optional(omit_none=True)

    @property
    def decided(self) -> GateStatus:
        """``status``, or in an early result without one, pass/fail from ``passed``."""
        if self.status is not None:
            return GateStatus(self.status)
        return GateStatus.PASS if self.passed is True else GateStatus.FAIL


# =============================================================== provenance
class ModelProvenance(Section):
    """``provenance.model``."""

    reference: str
    resolved: str | None
    revision: str | None
    sha256: dict[str, str]
    dtype: str | None = optional()


class PromptProvenance(Section):
    """``provenance.prompt``."""

    source: str | None
    peft_type: str | None = optional()
    base_model_in_adapter: str | None = optional()
    sha256: dict[str, str] = Field(default_factory=dict)
    trained_in_audit: bool | None = optional()


class DataProvenance(Section):
    """``provenance.data``."""

    source: str
    sha256: str | None
    generated: bool | None = optional()
    n_rows: int | None = optional()


class Provenance(Section):
    """``provenance``: where the result came from."""

    model: ModelProvenance
    prompt: PromptProvenance
    data: DataProvenance
    seed: int
    versions: dict[str, str]
    device: str | None
    command: str | None
    created_at: str
    hash_algorithm: str | None = optional()
    num_processes: int | None = optional()


class Integrity(Section):
    """``integrity``: the checksum (and, with a key, the signature) of the rest."""

    algorithm: Literal["sha256"]
    content_sha256: str = Field(default="", pattern="^[0-9a-f]{64}$")
    hmac_sha256: str | None = optional(omit_none=True)


class SpecGate(Section):
    """``audit.spec.gates[i]``: a gate as the spec gave it (``gate`` decides it again)."""

    metric: str
    feature: str | None = optional()
    min: Number | None = optional()
    max: Number | None = optional()
    use_bound: bool | None = optional()


class GatePolicy(Section):
    """``audit.spec.gate_policy``."""

    inconclusive: Literal["fail", "pass"] | None = optional()


class SpecRecord(Section):
    """``audit.spec``: the validated spec as run (``AuditSpec.to_dict()``, docs/audit-spec.md).

    Only its gates and gate policy are typed here; every other key is the spec's own.
    A spec always records ``gates`` (its list, empty or not): a result file whose
    ``gates`` key was deleted or renamed is refused by
    :func:`promptaudit.result.read_result_json` rather than passing with 0 gates.
    """

    gates: list[SpecGate] | None = optional()
    gate_policy: GatePolicy | None = optional()


class AuditSection(Section):
    """``audit``: the audit's name and its spec as run (described in docs/audit-spec.md)."""

    name: str
    spec: SpecRecord  # required: `gate` reads the gates from it
    audit_info: dict[str, Any] | None = optional(omit_none=True)


# =============================================================== bias audit
class BiasAuditRow(Section):
    """One category of a bias-audit table (see docs/bias-audit.md)."""

    group: str
    n: int
    n_selected: int
    rate: Number | None
    share: Number | None
    excluded: bool
    impact_ratio: Number | None
    flagged: bool
    p_value: Number | None
    note: str | None
    # standard-deviation analysis and shortfall (added after the first results)
    z_score: Number | None = optional()
    z_p_value: Number | None = optional()
    significant_2sd: bool | None = optional()
    small_sample: bool | None = optional()
    selections_to_four_fifths: int | None = optional()
    z_note: str | None = optional()


class BiasAuditTable(Section):
    """``bias_audit.tables.<category>``."""

    feature: str
    unknown_count: int
    unknown_selected: int
    reference_group: str | None
    reference_rate: Number | None
    min_impact_ratio: Number | None
    rows: list[BiasAuditRow]
    unknown_rate: Number | None = optional()
    #: bootstrap interval of ``min_impact_ratio`` (the rule of the DP ratio's interval)
    impact_ratio_interval: Interval | None = optional()


class BiasAuditResult(Section):
    """``bias_audit``: impact-ratio tables (see docs/bias-audit.md)."""

    mode: str
    categories: list[str]
    threshold: Number
    exclude_below: Number
    unknown_values: list[str]
    n_rows: int
    n_selected: int
    median_score: Number | None
    tables: dict[str, BiasAuditTable]
    min_impact_ratio: Number | None
    warnings: list[str]
    #: ``[lowest lower bound over tables, upper bound of the worst table]``
    min_impact_ratio_interval: Interval | None = optional()
    interval_confidence: Number | None = optional(omit_none=True)
    interval_bootstrap: int | None = optional(omit_none=True)
