"""Typed sections of the audit result (``schema_version`` "1") and their JSON Schema.

Each section of the result JSON is a dataclass here: :class:`TaskResult`,
:class:`ProjectionResult`, :class:`AttributionResult`, :class:`FairnessResult`
(with :class:`CounterfactualResult`), :class:`BaselineResult`,
:class:`GateResult`, :class:`Provenance`, :class:`Integrity` and
:class:`BiasAuditResult`. The whole result, :class:`promptaudit.results.AuditResult`,
is built from them. Two parts stay open mappings, documented elsewhere:
``audit.spec`` (the validated spec, docs/audit-spec.md; only its ``gates`` and
``gate_policy`` are typed here) and ``mitigation`` (docs/mitigation.md).

Every section has

- ``to_dict()``: exactly the JSON object the audit writes (same keys, same values);
- ``from_dict(data)``: the section read from a result JSON. A malformed value is
  refused with a one-line :class:`~promptaudit.errors.InputError` naming the field
  (``task.accuracy: expected number or null, got 'high'``). ``strict=False`` reads
  what it can instead (a missing or malformed required field is ``None``, an
  optional one takes its default): the reports render partial results that way.

Keys a result may lack (written only in some audits, or added after the first
results of schema version "1") are *optional*: they are not required by the
schema, and a section read without them writes them back without them. Unknown
keys are kept (``extra``) and written back, so ``from_dict(d).to_dict() == d``.

:func:`json_schema` generates the JSON Schema (draft 2020-12) from these
dataclasses; ``docs/result.schema.json`` is that schema, published
(``scripts/make_result_schema.py`` writes it). This module imports nothing
heavier than the standard library (and :mod:`promptaudit.choices`): ``promptaudit
validate`` and ``gate`` must not load torch.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from promptaudit.choices import GateStatus
from promptaudit.errors import InputError

__all__ = [
    "Section",
    "Malformed",
    "optional",
    "json_schema",
    "Interval",
    "Competence",
    "ClassStats",
    "TaskResult",
    "Neighbor",
    "ProjectedPosition",
    "ProjectionReference",
    "ProjectionInit",
    "Fidelity",
    "Trust",
    "ProjectionResult",
    "InstructionResult",
    "DepartureRow",
    "DepartureDirection",
    "DepartureGroupShare",
    "DepartureAttribution",
    "DeparturesResult",
    "PositionImportanceEntry",
    "PositionImportance",
    "GroupComparison",
    "GroupDifference",
    "LikeForLike",
    "TranslationFidelity",
    "TranslationAccuracy",
    "TranslationRun",
    "TranslationPair",
    "TranslationUniqueness",
    "TranslationResult",
    "TopToken",
    "AttributionExample",
    "AttributionGroups",
    "AttributionResult",
    "GroupRow",
    "FeatureEntry",
    "CounterfactualGroup",
    "CounterfactualFeature",
    "CounterfactualResult",
    "FairnessResult",
    "BaselineResult",
    "GateStatus",
    "GateResult",
    "ModelProvenance",
    "PromptProvenance",
    "DataProvenance",
    "Provenance",
    "Integrity",
    "SpecGate",
    "GatePolicy",
    "SpecRecord",
    "AuditSection",
    "BiasAuditRow",
    "BiasAuditTable",
    "BiasAuditResult",
]

#: ``[lower, upper]``; an end is null only in results of early versions.
Interval = list[float | None]


class Malformed(ValueError):
    """A value that does not have its field's type: ``path`` names the field."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


def optional(default: Any = None, *, omit_none: bool = False, key: str | None = None,
             default_factory: Any = None) -> Any:
    """A field whose key a result may lack (not required by the schema).

    Parameters
    ----------
    default, default_factory
        The value when the key is absent.
    omit_none : bool
        The audit leaves the key out when the value is None (``to_dict`` of a
        section made in code leaves it out too).
    key : str, optional
        The JSON key when it is not a Python name (``"f1-score"``).
    """
    metadata = {"optional": True, "omit_none": omit_none}
    if key is not None:
        metadata["key"] = key
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _renamed(key: str) -> Any:
    return field(metadata={"key": key})


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_SIMPLE = {bool: "boolean", int: "integer", float: "number", str: "string",
           type(None): "null"}


def _hint_words(hint: Any) -> str:
    """``number or null``: a hint in the words of the JSON it accepts."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_words(arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin is list:
        return "a list"
    if origin is dict or hint is dict:
        return "an object"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "an object"
    return _SIMPLE.get(hint, "a value")


def _parse(value: Any, hint: Any, path: str, strict: bool = True) -> Any:
    """``value`` checked against ``hint`` (typed sections built); :class:`Malformed` if not.

    ``strict=False`` reads nested sections leniently and drops list items and
    mapping entries that do not fit; a scalar that does not fit still raises.
    """
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        deepest: Malformed | None = None
        for lenient in (False, True) if not strict else (False,):
            for option in options:
                if option is type(None):
                    continue
                try:
                    return _parse(value, option, path, not lenient)
                except Malformed as exc:  # a nested error names the deeper field
                    if exc.path != path and (deepest is None or len(exc.path) > len(deepest.path)):
                        deepest = exc
        if deepest is not None:
            raise deepest
        raise Malformed(path, f"expected {_hint_words(hint)}, got {_describe(value)}")
    if origin is Literal:
        if value in typing.get_args(hint) and not isinstance(value, bool):
            return value
        raise Malformed(path, f"expected {_hint_words(hint)}, got {_describe(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise Malformed(path, f"expected a list, got {_describe(value)}")
        (item,) = typing.get_args(hint)
        if strict:
            return [_parse(v, item, f"{path}.{i}") for i, v in enumerate(value)]
        return _kept(((i, v) for i, v in enumerate(value)), item, path, list)
    if origin is dict:
        if not isinstance(value, dict):
            raise Malformed(path, f"expected an object, got {_describe(value)}")
        _, item = typing.get_args(hint)
        if strict:
            return {k: _parse(v, item, f"{path}.{k}") for k, v in value.items()}
        return _kept(value.items(), item, path, dict)
    if isinstance(hint, type) and issubclass(hint, Section):
        if not isinstance(value, dict):
            raise Malformed(path, f"expected an object, got {_describe(value)}")
        return hint._parse_dict(value, path, strict=strict)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise Malformed(
                path, f"expected {_hint_words(hint)}, got {_describe(value)}"
            ) from None
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a hint this module does not use
        raise TypeError(f"unsupported type hint {hint!r} at {path}")
    if not ok:
        raise Malformed(path, f"expected {_hint_words(hint)}, got {_describe(value)}")
    return value


def _kept(items, hint: Any, path: str, kind: type) -> Any:
    """The items that fit ``hint``, read leniently (``kind``: list or dict)."""
    out = []
    for key, value in items:
        try:
            out.append((key, _parse(value, hint, f"{path}.{key}", False)))
        except Malformed:
            continue
    return [v for _, v in out] if kind is list else dict(out)


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


class Section:
    """Base of the typed sections: ``to_dict``, ``from_dict`` and schema over the fields.

    A subclass is a dataclass; ``REST`` names its field (a dict) that holds the
    keys no field names: ``extra`` (unknown keys, kept as read) by default.
    """

    REST: ClassVar[str] = "extra"
    TITLE: ClassVar[str] = ""

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        cached = cls.__dict__.get("_HINTS")
        if cached is None:
            cached = typing.get_type_hints(cls)
            cls._HINTS = cached
        return cached

    @classmethod
    def _json_fields(cls) -> list[dataclasses.Field]:
        return [f for f in fields(cls) if not f.name.startswith("_") and f.name != cls.REST]

    def has(self, name: str) -> bool:
        """Whether the JSON this section was read from had field ``name`` (made in code: True)."""
        absent = self._absent
        return absent is None or name not in absent

    def to_dict(self) -> dict[str, Any]:
        """The section as the JSON object the audit writes."""
        out: dict[str, Any] = {}
        absent = self._absent
        for f in self._json_fields():
            value = getattr(self, f.name)
            if absent is not None:  # read from JSON: leave out what was absent (and unset)
                if f.name in absent and value == _fallback(f):
                    continue
            elif value is None and f.metadata.get("omit_none"):
                continue
            out[f.metadata.get("key", f.name)] = _dump(value)
        for key, value in (getattr(self, self.REST) or {}).items():
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
            :class:`~promptaudit.errors.InputError` naming the field). With
            ``False`` such a field is ``None`` (an optional one takes its default).
        where : str, optional
            The section's path in the result, for messages (default: its name).

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
CounterfactualGroup.flip_rate: expected number or null, got 'x'
        """
        path = where or cls.TITLE or cls.__name__
        if not isinstance(data, dict):
            if strict:
                raise InputError(f"not a valid promptaudit result; {path}: expected an object, "
                                 f"got {_describe(data)}")
            data = {}
        try:
            return cls._parse_dict(data, path, strict=strict)
        except Malformed as exc:
            raise InputError(f"not a valid promptaudit result; {exc}") from None

    @classmethod
    def _parse_dict(cls, data: dict, path: str, *, strict: bool):
        hints = cls._hints()
        values: dict[str, Any] = {}
        absent: set[str] = set()
        named: set[str] = set()
        for f in cls._json_fields():
            key = f.metadata.get("key", f.name)
            named.add(key)
            where = f"{path}.{key}"
            # read leniently, a required field that is missing or malformed is None, never
            # a default that could read as a finding (``passed`` must not become True)
            fallback = _fallback(f)
            if key not in data:
                if strict and not f.metadata.get("optional"):
                    raise Malformed(where, "missing (a required key)")
                absent.add(f.name)
                values[f.name] = fallback
                continue
            try:
                values[f.name] = _parse(data[key], hints[f.name], where, strict)
            except Malformed:
                if strict:
                    raise
                values[f.name] = fallback
        rest_hint = typing.get_args(hints[cls.REST])[1]
        rest: dict[str, Any] = {}
        for key, value in data.items():
            if key in named:
                continue
            try:
                rest[key] = _parse(value, rest_hint, f"{path}.{key}", strict)
            except Malformed:
                if strict:
                    raise
        values[cls.REST] = rest
        section = cls(**values)
        section._absent = frozenset(absent)
        return section


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _fallback(f: dataclasses.Field) -> Any:
    """A field's value when its key is absent: the default if optional, else None."""
    return _default(f) if f.metadata.get("optional") else None


def _absent_field() -> Any:
    """Keys absent from the JSON a section was read from (None: made in code)."""
    return field(default=None, init=False, repr=False, compare=False)


def _extra() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


# ===================================================================== task
@dataclass
class Competence(Section):
    """``task.competence``: does the prompt do its task (balanced accuracy vs baselines)."""

    TITLE: ClassVar[str] = "task.competence"
    works: bool | None
    measure: str
    accuracy: float | None
    accuracy_interval: Interval | None
    chance_accuracy: float | None
    baselines: dict[str, float | None]
    best_baseline: str | None
    accuracy_over_baseline: float | None
    accuracy_over_baseline_interval: Interval | None
    baseline_difference_intervals: dict[str, Interval | None] | None = optional(omit_none=True)
    confidence: float | None = optional(omit_none=True)
    bootstrap: int | None = optional(omit_none=True)
    reason: str = ""
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class ClassStats(Section):
    """One label (or average) of scikit-learn's classification report."""

    precision: float | None
    recall: float | None
    f1_score: float | None = _renamed("f1-score")
    support: float | None = None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


#: scikit-learn's ``classification_report(output_dict=True)``: label -> stats, "accuracy".
ClassificationReport = dict[str, ClassStats | float | None]


@dataclass
class TaskResult(Section):
    """``task``: the predictions, accuracy and competence of the audited prompt."""

    TITLE: ClassVar[str] = "task"
    type: str
    labels: list[str]
    positive_label: str
    n_examples: int
    n_truncated: int
    max_length: int | None = optional()
    prediction_counts: dict[str, int] = field(default_factory=dict)
    accuracy: float | None = None
    balanced_accuracy: float | None = optional()
    positive_rate: float | None = optional()
    untrained_head: list[str] | None = optional(omit_none=True)
    competence: Competence | None = optional()
    accuracy_over_baseline: float | None = optional()
    classification_report: ClassificationReport | None = optional()
    classification_report_by_group: dict[str, dict[str, ClassificationReport]] | None = (
        optional()
    )
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


# =============================================================== projection
@dataclass
class Neighbor(Section):
    """One nearest vocabulary word of a virtual token."""

    token: str
    token_id: int
    score: float | None
    display: str | None = optional()
    #: the word as read: a word piece is marked with a leading "…" (``…lved``)
    word: str | None = optional()
    #: the token continues a word (WordPiece ``##``, no word-start marker)
    piece: bool | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class ProjectedPosition(Section):
    """``projection.positions[i]``: one virtual token read against the vocabulary."""

    index: int
    neighbors: list[Neighbor]
    norm: float | None
    norm_ratio: float | None
    norm_percentile: float | None
    best_similarity: float | None
    similarity_percentile: float | None
    chance_percentile: float | None = optional()
    off_manifold: bool | None = None
    off_manifold_reasons: list[str] | None = optional()
    unusual_norm: bool | None = optional()
    init_token: str | None = None
    init_token_id: int | None = None
    init_similarity: float | None = None
    still_init: bool | None = None
    init_in_vocabulary: bool | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class ProjectionReference(Section):
    """``projection.reference``: the yardsticks typicality is read against."""

    vocab_rows: int | None = optional()
    vocab_size: int | None = optional()
    median_norm: float | None = optional()
    norm_quantiles: dict[str, float | None] | None = optional()
    nn_similarity_quantiles: dict[str, float | None] | None = optional()
    sample_size: int | None = optional()
    seed: int | None = optional()
    chance_similarity_quantiles: dict[str, float | None] | None = optional()
    chance_sample_size: int | None = optional()
    chance_threshold: float | None = optional()
    off_manifold_rule: str | None = optional()
    unusual_norm_rule: str | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class ProjectionInit(Section):
    """``projection.init``: how the adapter was initialised."""

    method: str
    text: str | None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class Fidelity(Section):
    """``projection.fidelity``: does the projected hard prompt predict as the soft prompt."""

    TITLE: ClassVar[str] = "projection.fidelity"
    projected_text: str
    projected_token_ids: list[int] | None = optional()
    n_examples: int | None = None
    agreement: float | None = None
    changed: int | None = optional()
    mean_prob_shift: float | None = optional()
    soft_accuracy: float | None = None
    projected_accuracy: float | None = None
    #: ``high``, ``moderate`` or ``low``
    level: Literal["high", "moderate", "low"] | None = optional()
    #: the sentence that explains ``level``
    verdict: str | None = None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class Trust(Section):
    """``projection.trust``: how far to trust the word reading (fidelity and typicality)."""

    TITLE: ClassVar[str] = "projection.trust"
    level: Literal["high", "moderate", "low"]
    readable: int
    n: int
    readable_share: float | None
    agreement: float | None
    reason: str
    rule: str
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
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
    agreement: float | None
    agreement_interval: Interval | None
    disagreements: int
    accuracy: float | None
    accuracy_interval: Interval | None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class DepartureRow(Section):
    """One row where the soft prompt and the closest instruction disagree."""

    row: int
    text: str
    soft_label: str
    instruction_label: str
    true_label: str | None
    soft_probability: float | None
    attributed: bool
    tokens: list[str] | None = optional()
    token_attributions: list[float | None] | None = optional()
    top_tokens: list[TopToken] | None = optional()
    convergence_delta: float | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class DepartureDirection(Section):
    """The departures of one direction (soft prompt's label, instruction's label)."""

    soft_label: str
    instruction_label: str
    description: str
    count: int
    n_listed: int
    rows: list[DepartureRow] = field(default_factory=list)
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class DepartureGroupShare(Section):
    """A sensitive group's share among the departures against its share of all rows."""

    group: str
    n_overall: int
    n_departures: int
    share_overall: float | None
    share_departures: float | None
    departure_rate: float | None
    interval: Interval | None
    over_represented: bool
    small: bool
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
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
    max_convergence_delta: float | None
    n_not_converged: int | None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class DeparturesResult(Section):
    """``projection.departures``: where the soft prompt departs from the closest instruction."""

    TITLE: ClassVar[str] = "projection.departures"
    instruction: dict[str, Any] | None
    n_examples: int
    n_departures: int
    share: float | None
    positive_label: str | None
    directions: list[DepartureDirection] = field(default_factory=list)
    groups: dict[str, list[DepartureGroupShare]] | None = None
    group_interval_method: str = ""
    agreement_interval_method: str | None = optional()
    confidence: float = 0.95
    attribution: DepartureAttribution | None = None
    summary: str | None = None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class PositionImportanceEntry(Section):
    """One virtual token: the share of decisions that change when it alone is neutralised."""

    index: int
    changed: int
    share: float
    interval: Interval | None
    matters: bool
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class PositionImportance(Section):
    """``projection.position_importance``: which virtual tokens matter on their own."""

    TITLE: ClassVar[str] = "projection.position_importance"
    #: ``mean_word_embedding``: what replaces a position
    neutral: str
    neutral_rule: str
    n_examples: int
    max_examples: int
    confidence: float
    floor: float
    interval_method: str
    rule: str
    positions: list[PositionImportanceEntry] = field(default_factory=list)
    important: list[int] = field(default_factory=list)
    ignored: list[int] = field(default_factory=list)
    summary: str | None = None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class TranslationFidelity(Section):
    """``projection.translation.fidelity``: agreement with the soft prompt on held-out rows."""

    agreement: float | None
    #: 95% interval of ``agreement`` (``interval_method``: Wilson score)
    interval: Interval | None
    interval_method: str
    n_heldout: int
    level: Literal["high", "moderate", "low"] | None = None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class TranslationAccuracy(Section):
    """``projection.translation.accuracy``: held-out accuracy (``None`` without labels)."""

    translation: float | None
    soft_prompt: float | None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class TranslationRun(Section):
    """``projection.translation.runs[i]``: the search from one seed."""

    seed: int
    text: str
    token_ids: list[int]
    words: list[str]
    round_trip_exact: bool
    repaired_positions: int
    agreement: float | None
    interval: Interval | None
    accuracy: float | None
    validation_agreement: float | None
    steps: int
    sweeps: int
    seconds: float | None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class TranslationPair(Section):
    """``projection.translation.uniqueness.pairs[i]``: word overlap of two runs."""

    seeds: list[int]
    #: Jaccard overlap of the two runs' sets of words
    jaccard: float
    #: share of positions holding the same word
    positional: float
    same_text: bool
    intervals_overlap: bool
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class TranslationUniqueness(Section):
    """``projection.translation.uniqueness``: do different seeds read the prompt alike."""

    pairs: list[TranslationPair]
    #: two different texts whose fidelity intervals overlap
    equally_good: bool
    sentence: str
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class TranslationResult(Section):
    """``projection.translation``: a readable plain-text stand-in for the soft prompt."""

    TITLE: ClassVar[str] = "projection.translation"
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
    seconds: float | None
    runs: list[TranslationRun]
    uniqueness: TranslationUniqueness
    stand_in: str
    summary: str
    nearest_words: dict[str, Any] | None = optional()
    repaired_positions: int | None = optional()
    vocabulary: dict[str, Any] | None = optional()
    rows: dict[str, int] | None = optional()
    cpu_seconds: float | None = optional()
    settings: dict[str, Any] | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class ProjectionResult(Section):
    """``projection``: nearest words, typicality and fidelity of the soft prompt."""

    TITLE: ClassVar[str] = "projection"
    metric: str
    top_k: int
    num_virtual_tokens: int
    vocab_size: int | None = optional()
    init: ProjectionInit | None = optional()
    projected_text: str | None = optional()
    positions: list[ProjectedPosition] = field(default_factory=list)
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
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


# ============================================================== attribution
@dataclass
class TopToken(Section):
    """One of an example's input tokens with the largest attribution."""

    token: str
    attribution: float | None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class AttributionExample(Section):
    """``attribution.examples[i]``: one explained example."""

    text: str
    target: int
    target_label: str
    target_probability: float | None = optional()
    tokens: list[str] = field(default_factory=list)
    prompt_attributions: list[float | None] = field(default_factory=list)
    token_attributions: list[float | None] | None = None
    input_attribution: float | None = optional()
    convergence_delta: float | None = None
    top_tokens: list[TopToken] = field(default_factory=list)
    #: gradient evaluations this example used (integrated gradients only)
    n_steps: int | None = optional(omit_none=True)
    #: both tolerances met (integrated gradients only; adaptive: completeness and positions)
    converged: bool | None = optional(omit_none=True)
    #: estimated sum over positions of the absolute attribution error (adaptive
    #: integrated gradients; None with fixed steps; absent for other methods)
    position_error: float | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class GroupComparison(Section):
    """One group against the reference group, like for like, per virtual token."""

    group: str
    reference: str
    #: the labels (strata) both had enough rows in
    strata: list[str]
    n_group: int
    n_reference: int
    difference: list[float | None] | None
    interval: list[Interval] | None
    #: interval excludes 0 and the difference exceeds the integration error
    evidence: list[bool] | None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class GroupDifference(Section):
    """A position with evidence of a difference between a group and the reference."""

    position: int
    group: str
    difference: float | None
    interval: Interval | None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class LikeForLike(Section):
    """``attribution.by_group[feature].like_for_like``: group differences on like rows."""

    #: ``predicted_label``, ``true_label`` or None (no conditioning)
    condition: str | None
    reference_group: str | None
    n_bootstrap: int
    confidence: float
    seed: int
    error_scale: float | None
    rule: str
    comparisons: list[GroupComparison] = field(default_factory=list)
    top_positions: list[GroupDifference] = field(default_factory=list)
    #: the sentence naming the positions that differ, with its caveats
    statement: str | None = None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class AttributionGroups(Section):
    """``attribution.by_group[feature]``: mean attribution per virtual token per group."""

    groups: dict[str, list[float | None]]
    counts: dict[str, int]
    small_groups: list[str] | None = optional()
    min_group_size: int | None = optional()
    max_difference: list[float | None] | None = None
    within_error: list[bool] | None = optional()
    error_scale: float | None = optional()
    top_positions: list[int] = field(default_factory=list)
    #: groups compared on rows with the same label, with bootstrap intervals
    like_for_like: LikeForLike | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class AttributionBudget(Section):
    """``attribution.budget``: the run's gradient-evaluation budget and what it left out."""

    max_gradient_evals_total: int
    n_gradient_evals: int
    n_requested: int
    n_attributed: int
    n_left_out: int
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class AttributionResult(Section):
    """``attribution``: how much each virtual token drives the predictions."""

    TITLE: ClassVar[str] = "attribution"
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
    prompt_share: float | None = None
    per_position: list[float | None] = field(default_factory=list)
    per_position_abs: list[float | None] = field(default_factory=list)
    max_convergence_delta: float | None = None
    by_group: dict[str, AttributionGroups] | None = None
    examples: list[AttributionExample] = field(default_factory=list)
    delta_tolerance: float | None = optional()
    n_not_converged: int | None = optional()
    n_gradient_evals: int | None = optional()
    max_gradient_evals: int | None = optional()
    #: allowed summed per-position error (adaptive integrated gradients; None otherwise)
    position_tolerance: float | None = optional()
    #: the gradient-evaluation budget and the examples it left out (audits set one)
    budget: AttributionBudget | None = optional(omit_none=True)
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


# ================================================================= fairness
@dataclass
class GroupRow(Section):
    """``fairness.by_feature.<f>.by_group.<g>``: a group's size and metrics.

    Each metric of ``fairness.metrics`` is a key of its own (``selection_rate``,
    ``true_positive_rate``, ...); they are read into ``metrics``.
    """

    REST: ClassVar[str] = "metrics"
    count: int
    small: bool
    metrics: dict[str, float | None] = field(default_factory=dict)
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class FeatureEntry(Section):
    """``fairness.by_feature.<feature>``: group metrics and disparities of one feature."""

    feature: str | None = optional()
    reference_group: str | None = optional()
    by_group: dict[str, GroupRow] = field(default_factory=dict)
    intervals: dict[str, dict[str, Interval | None]] | None = None
    disparities: dict[str, float | None] = field(default_factory=dict)
    disparity_intervals: dict[str, Interval | None] | None = None
    small_groups: list[str] = field(default_factory=list)
    undefined: dict[str, str] = optional(default_factory=dict)
    #: disparity -> its point value as an exact fraction of counts, ``[numerator, denominator]``
    #: (null where undefined); gates compare it with their threshold exactly
    exact_disparities: dict[str, list[int] | None] = optional(default_factory=dict)
    #: intersection only: display name -> {feature: group}
    group_values: dict[str, dict[str, str]] | None = optional(omit_none=True)
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class CounterfactualGroup(Section):
    """``fairness.counterfactual.by_group.<group>``."""

    flip_rate: float | None
    mean_abs_delta: float | None
    count: int
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class CounterfactualFeature(Section):
    """``fairness.counterfactual.by_feature.<feature>``."""

    flip_rate: float | None
    mean_abs_delta: float | None
    n_tuples: int
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class CounterfactualResult(Section):
    """``fairness.counterfactual``: how predictions change across counterfactual tuples."""

    TITLE: ClassVar[str] = "fairness.counterfactual"
    flip_rate: float | None
    flip_rate_interval: Interval | None = optional()
    #: absent when no tuple was made
    confidence: float | None = optional(omit_none=True)
    mean_abs_delta: float | None = None
    n_tuples: int = 0
    by_group: dict[str, CounterfactualGroup] = field(default_factory=dict)
    #: absent when no tuple was made
    warnings: list[str] | None = optional(omit_none=True)
    source: str | None = None
    #: only when no tuple was made
    note: str | None = optional(omit_none=True)
    #: suites only
    by_feature: dict[str, CounterfactualFeature] | None = optional(omit_none=True)
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class FairnessResult(Section):
    """``fairness``: group metrics, disparities and counterfactual figures.

    Without sensitive features only ``sensitive_features``, ``by_feature``,
    ``intersection``, ``disparities``, ``disparity_intervals``, ``warnings`` and
    ``counterfactual`` are written.
    """

    TITLE: ClassVar[str] = "fairness"
    sensitive_features: list[str]
    positive_label_index: int | None = optional(omit_none=True)
    reference_group: str | dict[str, str] | None = optional(omit_none=True)
    confidence: float | None = optional(omit_none=True)
    bootstrap: int | None = optional(omit_none=True)
    min_group_size: int | None = optional(omit_none=True)
    metrics: list[str] | None = optional(omit_none=True)
    by_feature: dict[str, FeatureEntry] = field(default_factory=dict)
    intersection: FeatureEntry | None = None
    disparities: dict[str, float | None] = field(default_factory=dict)
    disparity_intervals: dict[str, Interval | None] | None = None
    worst_feature: dict[str, str | None] | None = optional(omit_none=True)
    undefined: dict[str, str] | None = optional(omit_none=True)
    warnings: list[str] = field(default_factory=list)
    counterfactual: CounterfactualResult | None = None
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class BaselineResult(Section):
    """``baselines.<key>``: the headline numbers of the prompt or a baseline."""

    label: str | None = optional()
    accuracy: float | None = None
    balanced_accuracy: float | None = optional()
    positive_rate: float | None = optional()
    disparities: dict[str, float | None] = field(default_factory=dict)
    agreement_with_soft_prompt: float | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


# ==================================================================== gates
@dataclass
class GateResult(Section):
    """``gates[i]``: one threshold of one gate, decided."""

    metric: str
    feature: str | None
    op: Literal[">=", "<="]
    threshold: float
    value: float | None
    bound: Literal["point", "lower", "upper"]
    interval: Interval | None = optional()
    #: absent only in early results, read from ``passed`` there
    status: GateStatus | None = optional()
    passed: bool = False
    rows_to_decide: int | None = optional()
    rows_unit: str | None = optional()
    message: str = ""
    #: True for metrics that have no interval by definition (the gate line says so)
    point_only: bool | None = optional(omit_none=True)
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()

    @property
    def decided(self) -> GateStatus:
        """``status``, or in an early result without one, pass/fail from ``passed``."""
        if self.status is not None:
            return GateStatus(self.status)
        return GateStatus.PASS if self.passed is True else GateStatus.FAIL


# =============================================================== provenance
@dataclass
class ModelProvenance(Section):
    """``provenance.model``."""

    reference: str
    resolved: str | None
    revision: str | None
    sha256: dict[str, str]
    dtype: str | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class PromptProvenance(Section):
    """``provenance.prompt``."""

    source: str | None
    peft_type: str | None = optional()
    base_model_in_adapter: str | None = optional()
    sha256: dict[str, str] = field(default_factory=dict)
    trained_in_audit: bool | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class DataProvenance(Section):
    """``provenance.data``."""

    source: str
    sha256: str | None
    generated: bool | None = optional()
    n_rows: int | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class Provenance(Section):
    """``provenance``: where the result came from."""

    TITLE: ClassVar[str] = "provenance"
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
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class Integrity(Section):
    """``integrity``: the checksum (and, with a key, the signature) of the rest."""

    TITLE: ClassVar[str] = "integrity"
    algorithm: Literal["sha256"]
    content_sha256: str = field(default="", metadata={"pattern": "^[0-9a-f]{64}$"})
    hmac_sha256: str | None = optional(omit_none=True)
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class SpecGate(Section):
    """``audit.spec.gates[i]``: a gate as the spec gave it (``gate`` decides it again)."""

    metric: str
    feature: str | None = optional()
    min: float | None = optional()
    max: float | None = optional()
    use_bound: bool | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class GatePolicy(Section):
    """``audit.spec.gate_policy``."""

    inconclusive: Literal["fail", "pass"] | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class SpecRecord(Section):
    """``audit.spec``: the validated spec as run (``AuditSpec.to_dict()``, docs/audit-spec.md).

    Only its gates and gate policy are typed here; every other key is the spec's own.
    A spec always records ``gates`` (its list, empty or not): a result file whose
    ``gates`` key was deleted or renamed is refused by
    :func:`promptaudit.results.read_result_json` rather than passing with 0 gates.
    """

    gates: list[SpecGate] | None = optional()
    gate_policy: GatePolicy | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class AuditSection(Section):
    """``audit``: the audit's name and its spec as run (described in docs/audit-spec.md)."""

    TITLE: ClassVar[str] = "audit"
    name: str
    spec: SpecRecord  # required: `gate` reads the gates from it
    audit_info: dict[str, Any] | None = optional(omit_none=True)
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


# =============================================================== bias audit
@dataclass
class BiasAuditRow(Section):
    """One category of a bias-audit table (see docs/bias-audit.md)."""

    group: str
    n: int
    n_selected: int
    rate: float | None
    share: float | None
    excluded: bool
    impact_ratio: float | None
    flagged: bool
    p_value: float | None
    note: str | None
    # standard-deviation analysis and shortfall (added after the first results)
    z_score: float | None = optional()
    z_p_value: float | None = optional()
    significant_2sd: bool | None = optional()
    small_sample: bool | None = optional()
    selections_to_four_fifths: int | None = optional()
    z_note: str | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class BiasAuditTable(Section):
    """``bias_audit.tables.<category>``."""

    feature: str
    unknown_count: int
    unknown_selected: int
    reference_group: str | None
    reference_rate: float | None
    min_impact_ratio: float | None
    rows: list[BiasAuditRow]
    unknown_rate: float | None = optional()
    #: bootstrap interval of ``min_impact_ratio`` (the rule of the DP ratio's interval)
    impact_ratio_interval: Interval | None = optional()
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


@dataclass
class BiasAuditResult(Section):
    """``bias_audit``: impact-ratio tables (see docs/bias-audit.md)."""

    TITLE: ClassVar[str] = "bias_audit"
    mode: str
    categories: list[str]
    threshold: float
    exclude_below: float
    unknown_values: list[str]
    n_rows: int
    n_selected: int
    median_score: float | None
    tables: dict[str, BiasAuditTable]
    min_impact_ratio: float | None
    warnings: list[str]
    #: ``[lowest lower bound over tables, upper bound of the worst table]``
    min_impact_ratio_interval: Interval | None = optional()
    interval_confidence: float | None = optional(omit_none=True)
    interval_bootstrap: int | None = optional(omit_none=True)
    extra: dict[str, Any] = _extra()
    _absent: frozenset[str] | None = _absent_field()


# =================================================================== schema
def _schema_of(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if hint is Any:
        return {}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_schema_of(arg, defs) for arg in typing.get_args(hint)]
        simple = [o for o in options if set(o) == {"type"} and isinstance(o["type"], str)]
        if len(simple) == len(options):
            return {"type": [o["type"] for o in simple]}
        return {"anyOf": options}
    if origin is Literal:
        values = list(typing.get_args(hint))
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin is list:
        return {"type": "array", "items": _schema_of(typing.get_args(hint)[0], defs)}
    if origin is dict:
        return {"type": "object",
                "additionalProperties": _schema_of(typing.get_args(hint)[1], defs)}
    if isinstance(hint, type) and issubclass(hint, Section):
        name = hint.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            defs[name] = _object_schema(hint, defs)
        return {"$ref": f"#/$defs/{name}"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [m.value for m in hint]}
    return {"type": _SIMPLE[hint]}


def _object_schema(cls: type[Section], defs: dict[str, Any]) -> dict[str, Any]:
    hints = cls._hints()
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in cls._json_fields():
        key = f.metadata.get("key", f.name)
        schema = _schema_of(hints[f.name], defs)
        if "pattern" in f.metadata:
            schema = {**schema, "pattern": f.metadata["pattern"]}
        properties[key] = schema
        if not f.metadata.get("optional"):
            required.append(key)
    out: dict[str, Any] = {"type": "object"}
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc:
        out["description"] = doc[0]
    out["properties"] = properties
    out["required"] = required
    rest = _schema_of(typing.get_args(hints[cls.REST])[1], defs)
    out["additionalProperties"] = rest if rest else True
    return out


def json_schema(root: type[Section], *, title: str, schema_id: str | None = None) -> dict:
    """JSON Schema (draft 2020-12) of ``root`` and every section it holds.

    Required keys are the fields not marked :func:`optional`; every object
    allows keys it does not name (results of later versions add keys).
    """
    defs: dict[str, Any] = {}
    body = _object_schema(root, defs)
    schema: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if schema_id:
        schema["$id"] = schema_id
    schema["title"] = title
    schema.update(body)
    schema["$defs"] = dict(sorted(defs.items()))
    return schema
