"""Identity term suites and counterfactual text generation.

A *term suite* maps each sensitive feature (``gender``, ``race``, ...) to groups
(``male``, ``female``, ...) whose term lists are **aligned**: term ``i`` of one
group replaces term ``i`` of any other group. Counterfactual generation finds the
terms of one group in a text and writes one variant per other group by swapping
aligned terms, whole-word and case-preserving (``"He said his"`` ->
``"She said her"``).

The built-in suite ``builtin:identity`` (``identity.json`` here) holds ``gender``
(pronouns, nouns, titles, first names; ``nonbinary`` is *target-only*: written into,
never detected, as "they" or "people" rarely mark gender), ``race`` (associated first
names, eight female then eight male per group; White and Black names after Bertrand &
Mullainathan, 2004), ``age``, ``religion``, ``nationality`` and ``disability``.

Grammar rules applied while swapping:

- A term at several indices (``her``: object *him* or determiner *his*) is resolved by
  the suite's *roles*: the determiner before a content word, the object / independent
  form before punctuation or a function word, the first listed reading at the end
  (``"He said his"`` -> ``"She said her"``, ``"I saw her"`` -> ``"I saw him"``).
- ``a`` / ``an`` right before a swapped term is re-chosen for the new term.
- A subject pronoun rewritten to ``they`` takes plural agreement for the verb right
  after it (``is`` -> ``are``, ``has`` -> ``have``, ``works`` -> ``work`` for a list
  of common verbs). A verb separated by an adverb is not adjusted.

A user suite is a JSON or YAML file (``yaml.safe_load`` only)::

    features:
      gender:
        groups: {male: [he, him, his], female: [she, her, her]}
        roles: [subject, object, determiner]     # optional, aligned with the terms
        target_only: []                          # optional group names
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from promptaudit.errors import DataError, InputError

__all__ = [
    "BUILTIN_IDENTITY",
    "COUNTERFACTUAL_COLUMNS",
    "TermFeature",
    "TermSuite",
    "load_term_suite",
    "make_counterfactuals",
    "swap_terms",
]

logger = logging.getLogger(__name__)

#: The reference of the built-in suite.
BUILTIN_IDENTITY = "builtin:identity"

#: Columns of the frame :func:`make_counterfactuals` returns, in order.
COUNTERFACTUAL_COLUMNS = ("text", "tuple_id", "source_index", "group", "feature", "is_original")

ERR_UNKNOWN_BUILTIN_SUITE = "{reference}: unknown built-in term suite; available: builtin:identity"
ERR_SUITE_NOT_FOUND = (
    "{path}: term suite file not found; pass builtin:identity or a .json/.yaml file of term groups"
)
ERR_SUITE_SUFFIX = (
    "{path}: unsupported term suite file type {suffix!r}; allowed: .json, .yaml, .yml"
)
ERR_SUITE_PARSE = "{path}: could not be parsed as {kind}: {reason}"
ERR_SUITE_TYPE = "{path}: key {key!r} must be {expected}; got {got}"
ERR_SUITE_UNKNOWN_KEY = "{path}: unknown key {key!r}; allowed keys: {allowed}"
ERR_SUITE_MISSING_KEY = "{path}: key {key!r} is required"
ERR_SUITE_DUPLICATE = (
    "{path}: key {key!r} names {name!r} twice (as text, e.g. 1 and \"1\"); "
    "each name may appear once"
)
ERR_SUITE_FEW_GROUPS = "{path}: key {key!r} needs at least two groups; got {count}"
ERR_SUITE_ALIGN = (
    "{path}: key {key!r} has {got} terms but {first!r} has {expected}; "
    "the groups of a feature must be aligned (same length)"
)
ERR_SUITE_TARGET_ONLY = "{path}: key {key!r} names unknown group {group!r}; groups: {groups}"
ERR_SUITE_ALL_TARGET_ONLY = (
    "{path}: key {key!r} marks every group target-only; at least one group must be detectable"
)
ERR_UNKNOWN_FEATURE = (
    "unknown counterfactual feature {feature!r}; features of this suite: {allowed}"
)
ERR_TEXT_TYPE = "texts row {row} is {value!r}, not a string; every text must be a string"

_TOP_KEYS = ("name", "version", "description", "features")
_FEATURE_KEYS = ("groups", "roles", "target_only")

#: Words after which ``her`` is an object (``him``), not a determiner (``his``).
_FUNCTION_WORDS = frozenset(
    """a an the to and or but nor so yet that this these those with for from in on at by of
    as about into onto over under after before since until up down out off again back away
    if when while because though although is was are were be been being am not now then
    there here today tonight yesterday tomorrow all both some any more most what how why who
    whom whose which will would can could should may might must shall do does did has have
    had too also just only even still than""".split()
)

#: Third-person singular verb -> plural, applied after a rewritten ``they``.
_PLURAL_AGREEMENT = {
    "is": "are", "was": "were", "has": "have", "does": "do", "goes": "go",
    "isn't": "aren't", "wasn't": "weren't", "hasn't": "haven't", "doesn't": "don't",
    "tries": "try", "studies": "study", "applies": "apply", "teaches": "teach",
    "watches": "watch",
    **{verb + "s": verb for verb in (
        "say work want need like live know think make take get hold lead manage plan speak "
        "write read run seem feel look bring come give keep love hate win believe prefer "
        "enjoy help play use own earn drive"
    ).split()},
}
_PLURAL_SUBJECTS = frozenset({"they"})
_THEYRE_AS_HAVE = frozenset({"been", "got", "gotten", "had"})

_WORD_CHARS = r"\w'’-"
_NEXT_WORD = re.compile(r"\s+([^\W\d_][\w'’-]*)")
_ARTICLE_BEFORE = re.compile(r"(?<![\w'’-])(a|an)(\s+)$", re.IGNORECASE)
_AGREEMENT = re.compile(
    r"(?<![\w'’-])(they|they're)(\s+)([^\W\d_][\w'’]*)(?![\w'’-])", re.IGNORECASE
)


@dataclass(frozen=True)
class TermFeature:
    """The aligned term groups of one sensitive feature.

    Attributes
    ----------
    name : str
        Feature name, e.g. ``"gender"``.
    groups : Mapping[str, tuple[str, ...]]
        Group name -> its terms, every tuple of the same length ``n_terms``;
        index ``i`` of one group is the swap of index ``i`` of another.
    roles : tuple[str, ...] or None
        ``(n_terms,)`` grammatical role per index (``"object"``, ``"determiner"``,
        ``"independent"``, ...) used to resolve a term that sits at several indices.
    target_only : tuple[str, ...]
        Groups texts are rewritten into but never detected as.
    """

    name: str
    groups: Mapping[str, tuple[str, ...]]
    roles: tuple[str, ...] | None = None
    target_only: tuple[str, ...] = ()

    @property
    def detectable_groups(self) -> tuple[str, ...]:
        """Groups a text can be read as expressing (all but the target-only ones)."""
        return tuple(g for g in self.groups if g not in self.target_only)


@dataclass(frozen=True)
class TermSuite:
    """Feature -> groups -> aligned term lists, plus where the suite came from.

    Attributes
    ----------
    name : str
        ``"builtin:identity"`` or the file path the suite was read from.
    features : Mapping[str, TermFeature]
        One entry per sensitive feature, in file order.
    """

    name: str
    features: Mapping[str, TermFeature]
    _patterns: dict[str, tuple[re.Pattern[str], dict[str, list[tuple[str, int]]]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def groups(self, feature: str) -> Mapping[str, tuple[str, ...]]:
        """Group -> aligned terms of one feature."""
        return self.features[feature].groups

    def matcher(self, feature: str) -> tuple[re.Pattern[str], dict[str, list[tuple[str, int]]]]:
        """``(pattern, lookup)``: a whole-word, case-insensitive regex of a feature's
        detectable terms (a possessive ``'s`` allowed) and normalised term ->
        ``[(group, index), ...]``."""
        if feature not in self._patterns:
            self._patterns[feature] = _compile_feature(self.features[feature])
        return self._patterns[feature]


def load_term_suite(reference: str | Path) -> TermSuite:
    """Load ``builtin:identity`` or a user JSON/YAML file of term groups.

    Parameters
    ----------
    reference : str or Path
        ``"builtin:identity"`` or a path to a ``.json``, ``.yaml`` or ``.yml`` file.

    Returns
    -------
    TermSuite

    Raises
    ------
    DataError
        The file is missing, unparsable, or not shaped like a term suite (the
        message names the file and the key at fault).

    Examples
    --------
    >>> suite = load_term_suite("builtin:identity")
    >>> suite.groups("gender")["female"][:3]
    ('she', 'her', 'her')
    """
    text = str(reference)
    if text.startswith("builtin:"):
        if text != BUILTIN_IDENTITY:
            raise DataError(ERR_UNKNOWN_BUILTIN_SUITE.format(reference=text))
        return _builtin_identity()
    return _load_suite_file(Path(text))


def make_counterfactuals(
    texts: Iterable[str],
    suite: TermSuite | str,
    *,
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rewrite texts into every other identity group of each feature they mention.

    For each text and each feature, if the text contains detectable terms of
    exactly one group, it yields one *tuple*: the original row followed by one
    variant per other group of the feature (aligned terms swapped). Texts with no
    term of a feature, or with terms of two or more of its groups (ambiguous), yield
    no tuple for it; a variant identical to the original is dropped.

    Parameters
    ----------
    texts : iterable of str
        ``(n_texts,)`` input texts.
    suite : TermSuite or str
        A loaded suite or a reference for :func:`load_term_suite`.
    features : sequence of str, optional
        Features to use, in this order; default all features of the suite.

    Returns
    -------
    pandas.DataFrame
        ``(n_rows, 6)`` with columns ``text``, ``tuple_id`` (int, 0.. in order),
        ``source_index`` (row of the input text), ``group`` (the group the row
        expresses), ``feature`` and ``is_original`` (True for the first row of each
        tuple). The original always comes first within its tuple.

    Raises
    ------
    InputError
        A feature that the suite lacks, or a text that is not a string.

    Examples
    --------
    >>> frame = make_counterfactuals(["He said his plan works."], "builtin:identity",
    ...                              features=["gender"])
    >>> frame["text"].tolist()
    ['He said his plan works.', 'She said her plan works.', 'They said their plan works.']
    """
    if not isinstance(suite, TermSuite):
        suite = load_term_suite(suite)
    chosen = list(suite.features) if features is None else list(features)
    for feature in chosen:
        if feature not in suite.features:
            allowed = ", ".join(suite.features)
            raise InputError(ERR_UNKNOWN_FEATURE.format(feature=feature, allowed=allowed))
    rows: list[tuple[str, int, int, str, str, bool]] = []
    tuple_id = 0
    for source_index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(ERR_TEXT_TYPE.format(row=source_index, value=text))
        for feature in chosen:
            source_group = detect_group(text, suite, feature)
            if source_group is None:
                continue
            variants = []
            for target in suite.features[feature].groups:
                if target == source_group:
                    continue
                variant = swap_terms(text, suite, feature, source_group, target)
                if variant != text:
                    variants.append((variant, target))
            if not variants:
                continue
            rows.append((text, tuple_id, source_index, source_group, feature, True))
            rows.extend((v, tuple_id, source_index, g, feature, False) for v, g in variants)
            tuple_id += 1
    frame = pd.DataFrame(rows, columns=list(COUNTERFACTUAL_COLUMNS))
    return frame.astype({"tuple_id": "int64", "source_index": "int64", "is_original": bool})


def detect_group(text: str, suite: TermSuite, feature: str) -> str | None:
    """The single detectable group of ``feature`` whose terms occur in ``text``, else None."""
    pattern, lookup = suite.matcher(feature)
    found: set[str] = set()
    for match in pattern.finditer(text):
        found.update(group for group, _ in lookup[_normalise(match.group(0))])
        if len(found) > 1:
            return None
    return next(iter(found)) if found else None


def swap_terms(text: str, suite: TermSuite, feature: str, source: str, target: str) -> str:
    """Replace every term of group ``source`` in ``text`` by its aligned term in ``target``.

    Matching is whole-word and case-insensitive; the replacement copies the case
    pattern of the matched word (``He`` -> ``She``, ``HE`` -> ``SHE``). See the
    module docstring for the grammar rules.

    Examples
    --------
    >>> swap_terms("He said his", load_term_suite("builtin:identity"), "gender",
    ...            "male", "female")
    'She said her'
    """
    spec = suite.features[feature]
    pattern, lookup = suite.matcher(feature)
    target_terms = spec.groups[target]
    pieces: list[str] = []
    position = 0
    for match in pattern.finditer(text):
        indices = [index for group, index in lookup[_normalise(match.group(0))] if group == source]
        if not indices:
            continue
        if not text[match.end() :].strip():
            index = indices[0]  # nothing follows: the suite's first reading
        else:
            next_word = _NEXT_WORD.match(text, match.end())
            index = _choose_index(indices, spec.roles, next_word.group(1) if next_word else None)
        before = text[position : match.start()]
        sentence_start = _starts_sentence(text, match.start())
        listed = None if sentence_start else spec.groups[source][index]
        replacement = _match_case(target_terms[index], match.group(0), listed)
        pieces.append(before)
        _fix_article(pieces, replacement)
        pieces.append(replacement)
        position = match.end()
    pieces.append(text[position:])
    result = "".join(pieces)
    if any(_normalise(term) in _PLURAL_SUBJECTS | {"they're"} for term in target_terms):
        result = _AGREEMENT.sub(_agree, result)
    return result


def _choose_index(indices: list[int], roles: tuple[str, ...] | None, next_word: str | None) -> int:
    """Pick among the indices a source term sits at, using roles and the next word."""
    if len(indices) == 1 or roles is None:
        return indices[0]
    by_role: dict[str, int] = {}
    for index in indices:
        by_role.setdefault(roles[index], index)
    if "determiner" in by_role:
        content_word = next_word is not None and _normalise(next_word) not in _FUNCTION_WORDS
        if content_word:
            return by_role["determiner"]
        for role in ("object", "independent"):
            if role in by_role:
                return by_role[role]
    return indices[0]


def _match_case(term: str, source: str, listed: str | None = None) -> str:
    """Copy the case pattern of ``source`` onto ``term`` (and its apostrophe style).

    ``listed`` is the suite's spelling of the matched term (``None`` at the start
    of a sentence): a source written exactly as listed (``Syria``, ``Muslim``)
    keeps the target as listed (``the United States``, ``atheist``); otherwise an
    all-caps source gives an all-caps target and a capitalised source a
    capitalised target.
    """
    if "’" in source:
        term = term.replace("'", "’")
    if listed is not None and source.replace("’", "'") == listed:
        return term
    letters = [c for c in source if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return term.upper()
    if source[:1].isupper():
        return term[:1].upper() + term[1:]
    return term


def _starts_sentence(text: str, start: int) -> bool:
    """Whether position ``start`` begins the text, a line, or follows ``.``/``!``/``?`` + space."""
    prefix = text[:start]
    stripped = prefix.rstrip()
    if not stripped or "\n" in prefix[len(stripped) :]:
        return True
    return stripped[-1] in ".!?" and len(stripped) < len(prefix)


def _fix_article(pieces: list[str], replacement: str) -> None:
    """Re-choose ``a``/``an`` at the end of the text built so far for ``replacement``."""
    if not pieces:
        return
    match = _ARTICLE_BEFORE.search(pieces[-1])
    if match is None:
        return
    article = "an" if _starts_with_vowel_sound(replacement) else "a"
    old = match.group(1)
    if old.isupper() and len(old) > 1:
        article = article.upper()
    elif old[:1].isupper():
        article = article.capitalize()
    pieces[-1] = pieces[-1][: match.start(1)] + article + match.group(2)


def _starts_with_vowel_sound(word: str) -> bool:
    lower = word.lower()
    if lower.startswith(("uni", "use", "usu", "eu", "one", "once")):
        return False
    if lower.startswith(("hour", "honest", "honor", "heir")):
        return True
    if lower[:1].isdigit():
        return lower.startswith(("8", "11", "18"))
    return lower[:1] in "aeiou"


def _agree(match: re.Match[str]) -> str:
    subject, space, verb = match.group(1), match.group(2), match.group(3)
    key = _normalise(verb)
    if _normalise(subject) == "they're":
        if key in _THEYRE_AS_HAVE:
            subject = _match_case("they've", subject)
        return subject + space + verb
    if key not in _PLURAL_AGREEMENT:
        return match.group(0)
    return subject + space + _match_case(_PLURAL_AGREEMENT[key], verb)


def _normalise(term: str) -> str:
    return " ".join(term.replace("’", "'").lower().split())


def _compile_feature(
    spec: TermFeature,
) -> tuple[re.Pattern[str], dict[str, list[tuple[str, int]]]]:
    lookup: dict[str, list[tuple[str, int]]] = {}
    for group in spec.detectable_groups:
        for index, term in enumerate(spec.groups[group]):
            lookup.setdefault(_normalise(term), []).append((group, index))
    alternatives = sorted(lookup, key=len, reverse=True)
    body = "|".join(
        r"\s+".join(re.escape(part).replace("'", "['’]") for part in term.split())
        for term in alternatives
    )
    # Whole word: no word character, apostrophe or hyphen on either side, except
    # a possessive 's after the term ("Emily's").
    pattern = re.compile(
        rf"(?<![{_WORD_CHARS}])(?:{body})(?![\w-])(?!['’](?!s(?![\w'’-])))",
        re.IGNORECASE,
    )
    return pattern, lookup


@lru_cache(maxsize=1)
def _builtin_identity() -> TermSuite:
    source = resources.files("promptaudit.corpora").joinpath("identity.json")
    raw = json.loads(source.read_text(encoding="utf-8"))
    return _suite_from_raw(raw, name=BUILTIN_IDENTITY, path=BUILTIN_IDENTITY)


def _load_suite_file(path: Path) -> TermSuite:
    if not path.is_file():
        raise DataError(ERR_SUITE_NOT_FOUND.format(path=path))
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise DataError(ERR_SUITE_SUFFIX.format(path=path, suffix=suffix))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(ERR_SUITE_PARSE.format(path=path, kind="UTF-8 text", reason=exc)) from None
    if suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(ERR_SUITE_PARSE.format(path=path, kind="JSON", reason=exc)) from None
    else:
        import yaml

        from promptaudit.safe_yaml import safe_load_bounded  # dates stay text, duplicates refused

        try:
            raw = safe_load_bounded(text)
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())
            raise DataError(ERR_SUITE_PARSE.format(path=path, kind="YAML", reason=reason)) from None
    return _suite_from_raw(raw, name=str(path), path=str(path))


def _suite_from_raw(raw: Any, *, name: str, path: str) -> TermSuite:
    """Validate the parsed file and build a :class:`TermSuite`."""
    _require_mapping(raw, "(top level)", path)
    _reject_unknown(raw, _TOP_KEYS, prefix="", path=path)
    if "features" not in raw:
        raise DataError(ERR_SUITE_MISSING_KEY.format(path=path, key="features"))
    features_raw = raw["features"]
    _require_mapping(features_raw, "features", path)
    if not features_raw:
        raise DataError(ERR_SUITE_TYPE.format(
            path=path, key="features", expected="a non-empty mapping", got="an empty one"))
    features = {}
    for feature, value in features_raw.items():
        if str(feature) in features:
            raise DataError(ERR_SUITE_DUPLICATE.format(path=path, key="features",
                                                       name=str(feature)))
        features[str(feature)] = _feature_from_raw(str(feature), value, path)
    return TermSuite(name=name, features=MappingProxyType(features))


def _feature_from_raw(feature: str, raw: Any, path: str) -> TermFeature:
    key = f"features.{feature}"
    _require_mapping(raw, key, path)
    _reject_unknown(raw, _FEATURE_KEYS, prefix=key + ".", path=path)
    if "groups" not in raw:
        raise DataError(ERR_SUITE_MISSING_KEY.format(path=path, key=f"{key}.groups"))
    groups_raw = raw["groups"]
    _require_mapping(groups_raw, f"{key}.groups", path)
    if len(groups_raw) < 2:
        raise DataError(
            ERR_SUITE_FEW_GROUPS.format(path=path, key=f"{key}.groups", count=len(groups_raw))
        )
    groups: dict[str, tuple[str, ...]] = {}
    first: str | None = None
    for group, terms in groups_raw.items():
        group_key = f"{key}.groups.{group}"
        if str(group) in groups:
            raise DataError(ERR_SUITE_DUPLICATE.format(path=path, key=f"{key}.groups",
                                                       name=str(group)))
        aligned = groups[str(group)] = _string_list(terms, group_key, path)
        first = first or group_key
        n_terms = len(next(iter(groups.values())))
        if len(aligned) != n_terms:
            raise DataError(ERR_SUITE_ALIGN.format(
                path=path, key=group_key, got=len(aligned), first=first, expected=n_terms))
    roles = None
    if raw.get("roles") is not None:
        roles = _string_list(raw["roles"], f"{key}.roles", path)
        if len(roles) != n_terms:
            raise DataError(ERR_SUITE_ALIGN.format(
                path=path, key=f"{key}.roles", got=len(roles), first=first, expected=n_terms))
    target_only: tuple[str, ...] = ()
    if raw.get("target_only") is not None:
        target_key = f"{key}.target_only"
        target_only = _string_list(raw["target_only"], target_key, path, allow_empty=True)
        for group in target_only:
            if group not in groups:
                raise DataError(ERR_SUITE_TARGET_ONLY.format(
                    path=path, key=target_key, group=group, groups=", ".join(groups)))
        if set(target_only) >= set(groups):
            raise DataError(ERR_SUITE_ALL_TARGET_ONLY.format(path=path, key=target_key))
    return TermFeature(
        name=feature, groups=MappingProxyType(groups), roles=roles, target_only=target_only
    )


def _require_mapping(value: Any, key: str, path: str) -> None:
    if not isinstance(value, Mapping):
        raise DataError(
            ERR_SUITE_TYPE.format(path=path, key=key, expected="a mapping", got=_kind(value))
        )


def _reject_unknown(raw: Mapping, allowed: Sequence[str], *, prefix: str, path: str) -> None:
    for key in raw:
        if key not in allowed:
            raise DataError(ERR_SUITE_UNKNOWN_KEY.format(
                path=path, key=f"{prefix}{key}", allowed=", ".join(allowed)))


def _string_list(value: Any, key: str, path: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    expected = "a list of strings" if allow_empty else "a non-empty list of non-empty strings"
    ok = isinstance(value, list) and (allow_empty or value)
    ok = ok and all(isinstance(item, str) and item.strip() for item in value)
    if not ok:
        raise DataError(
            ERR_SUITE_TYPE.format(path=path, key=key, expected=expected, got=_kind(value))
        )
    return tuple(item.strip() for item in value)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an empty list" if not value else "a list with a non-string or empty item"
    if isinstance(value, Mapping):
        return "a mapping"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"
