"""The audit result: a pydantic model of the JSON contract (schema_version "1").

Sections are the typed models of :mod:`promptaudit.result_sections`;
:meth:`AuditResult.to_dict` writes the JSON the reports render from (serialised and
hashed once, there), :func:`read_result` is the strict reader of a result file and
:func:`result_schema` the JSON Schema (published as ``docs/result.schema.json``).

``integrity.content_sha256`` is the sha256 of the canonical JSON of everything
else: a *checksum* that catches accidental change (a truncated copy, a hand edit
that forgot to recompute it). Anyone can recompute it, so it proves nothing about
who wrote the file. With ``PROMPTAUDIT_SIGNING_KEY`` set, :meth:`AuditResult.to_dict`
also writes ``integrity.hmac_sha256``, an HMAC-SHA256 of the canonical content
under that key: a *signature* only key holders can produce, which ``promptaudit
gate`` (with the key set) requires. The key itself is never written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from promptaudit.errors import InputError
from promptaudit.result_sections import (
    AttributionResult,
    AuditSection,
    BaselineResult,
    BiasAuditResult,
    FairnessResult,
    GateResult,
    Integrity,
    ProjectionResult,
    Provenance,
    Section,
    TaskResult,
    json_schema,
    optional,
    to_jsonable,
)

__all__ = [
    "SCHEMA_VERSION", "AuditResult", "as_result", "to_jsonable", "canonical_json",
    "content_sha256", "read_result", "read_result_json", "hmac_sha256", "signing_key_from_env",
    "SIGNING_KEY_ENV", "result_schema", "MAX_RESULT_DEPTH",
]

#: Environment variable holding the signing key (never written to any file or log).
SIGNING_KEY_ENV = "PROMPTAUDIT_SIGNING_KEY"
#: Deepest nesting a result may have (real results stay under 12 levels).
MAX_RESULT_DEPTH = 64
#: Largest result file `gate` reads (bytes).
MAX_RESULT_BYTES = 256 * 1024 * 1024

SCHEMA_VERSION = "1"
_REQUIRED = ("schema_version", "audit", "provenance", "task", "fairness", "gates", "passed")


class AuditResult(Section):
    """Everything an audit found and where it came from: the typed result JSON.

    Each section is a typed model of :mod:`promptaudit.result_sections`; a section given
    as a plain dict (numpy scalars, tuples and NaN allowed) is converted and checked.
    ``AuditResult.from_dict(data)`` is the strict reader (``gate``, ``compare``),
    ``from_dict(data, strict=False)`` the lenient one (the reports).
    """

    audit: AuditSection
    provenance: Provenance
    task: TaskResult
    projection: ProjectionResult | None = None
    attribution: AttributionResult | None = None
    fairness: FairnessResult
    baselines: dict[str, BaselineResult] | None = None
    gates: list[GateResult] = Field(default_factory=list)
    passed: bool = True
    schema_version: Literal["1"] = SCHEMA_VERSION
    #: only when the spec has ``bias_audit``
    bias_audit: BiasAuditResult | None = optional(omit_none=True)
    #: only with a ``mitigation:`` spec section (docs/mitigation.md); an open mapping
    mitigation: dict[str, Any] | None = optional(omit_none=True)
    #: written by :meth:`to_dict`, which computes it afresh
    integrity: Integrity | None = optional(omit_none=True)

    def to_dict(self, *, signing_key: bytes | None = None) -> dict:
        """The contract's JSON object, with ``integrity`` computed afresh.

        ``signing_key`` (default: ``PROMPTAUDIT_SIGNING_KEY`` from the environment,
        when set) adds ``integrity.hmac_sha256``.
        """
        body = to_jsonable(super().to_dict())
        body.pop("integrity", None)
        key = signing_key if signing_key is not None else signing_key_from_env()
        integrity = {"algorithm": "sha256", "content_sha256": content_sha256(body)}
        if key is not None:
            integrity["hmac_sha256"] = hmac_sha256(body, key)
        body["integrity"] = integrity
        return body


def as_result(result: AuditResult | Mapping[str, Any] | None) -> AuditResult:
    """The typed result; a mapping (JSON, or a stage's numpy values) is read leniently.

    A missing, ``None`` or malformed field reads as ``None`` (an optional one as its
    default), so a partial result (``{"task": ..., "fairness": ...}``) is read too.
    """
    if isinstance(result, AuditResult):
        return result
    data = to_jsonable(dict(result)) if isinstance(result, Mapping) else {}
    return AuditResult.from_dict(data, strict=False)


def result_schema() -> dict:
    """The JSON Schema of a result (draft 2020-12), generated from :class:`AuditResult`.

    ``docs/result.schema.json`` is this schema, published; ``scripts/make_result_schema.py``
    writes it.
    """
    return json_schema(AuditResult, title=f"promptaudit result (schema_version {SCHEMA_VERSION})")


def canonical_json(data: dict) -> str:
    """Sorted-key, compact JSON used for hashing."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def content_sha256(data: dict) -> str:
    """sha256 of the canonical JSON of ``data`` without ``integrity`` and the time stamp.

    ``provenance.created_at`` is left out so two runs of the same audit carry
    the same hash; every number, setting and input hash is covered.
    """
    body = {k: v for k, v in data.items() if k != "integrity"}
    if isinstance(body.get("provenance"), dict):
        body["provenance"] = {k: v for k, v in body["provenance"].items() if k != "created_at"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def signing_key_from_env() -> bytes | None:
    """The signing key from ``PROMPTAUDIT_SIGNING_KEY`` (UTF-8 bytes), or None when unset.

    Raises
    ------
    InputError
        When the variable is set but empty (a CI secret that did not resolve).
    """
    value = os.environ.get(SIGNING_KEY_ENV)
    if value is None:
        return None
    if not value.strip():
        raise InputError(
            f"{SIGNING_KEY_ENV} is set but empty; set it to the team's signing secret or unset it"
        )
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:  # undecodable bytes in the environment (surrogates)
        raise InputError(
            f"{SIGNING_KEY_ENV} is not valid UTF-8 text (undecodable byte at position "
            f"{exc.start}); set it to the team's signing secret as UTF-8 text"
        ) from None


def hmac_sha256(data: dict, key: bytes) -> str:
    """HMAC-SHA256 (hex) of the canonical JSON of ``data`` without ``integrity``.

    Unlike :func:`content_sha256` it covers ``provenance.created_at`` too.
    """
    body = {k: v for k, v in data.items() if k != "integrity"}
    return hmac.new(key, canonical_json(body).encode("utf-8"), hashlib.sha256).hexdigest()


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether JSON text nests deeper than ``limit`` (brackets outside strings, no recursion)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


#: Largest magnitude a JSON number of a result may have (a 64-bit float's).
_LARGEST_NUMBER = sys.float_info.max


def _out_of_range_number(data) -> str | None:
    """The dotted path of the first number beyond a 64-bit float (``1e309`` reads as inf)."""
    stack: list[tuple[str, object]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            return where or "the top level"
        if isinstance(value, int) and abs(value) > _LARGEST_NUMBER:
            return where or "the top level"
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), item)
                         for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (a number must be finite; use null)")


def _result_text(path: Path) -> str:
    """The file's text, refused when it is missing, too large, half-replaced or not UTF-8."""
    if not path.exists():
        raise InputError(f"{path}: result file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; expected a result JSON file")
    if path.stat().st_size > MAX_RESULT_BYTES:
        raise InputError(f"{path}: larger than {MAX_RESULT_BYTES} bytes; not a promptaudit result")
    if path.suffix == ".json":
        from promptaudit.atomic import pending_journal_path

        if pending_journal_path(path.parent, path.stem).exists():
            raise InputError(
                f"{path}: its report set was interrupted while being replaced (a pending "
                f"{pending_journal_path(path.parent, path.stem).name} is there); re-run the "
                "audit to write a whole set"
            )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 (byte {exc.start})") from None


def _json_object(path: Path, text: str) -> dict:
    """The JSON object in ``text``: not too deep, no NaN, every number a 64-bit float."""
    if _depth_exceeds(text, MAX_RESULT_DEPTH):
        raise InputError(
            f"{path}: JSON nested deeper than {MAX_RESULT_DEPTH} levels; not a promptaudit result"
        )
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
        raise InputError(f"{path}: not valid JSON ({exc})".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    where = _out_of_range_number(data)
    if where is not None:
        raise InputError(
            f"{path}: {where}: a number out of range (beyond a 64-bit float, e.g. 1e309); "
            "not a promptaudit result"
        )
    return data


def _check_contract(path: Path, data: dict) -> AuditResult:
    """``data`` read strictly as a result of this schema version; gates never silently lost."""
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise InputError(f"{path}: not a promptaudit result; missing keys: {', '.join(missing)}")
    if str(data["schema_version"]) != SCHEMA_VERSION:
        raise InputError(
            f"{path}: schema_version {data['schema_version']!r} is not supported; "
            f"allowed: {SCHEMA_VERSION}"
        )
    try:
        result = AuditResult.from_dict(data)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    spec_gates = result.audit.spec.gates
    if result.gates and not spec_gates:
        # deleted, renamed (a look-alike letter), null or emptied: `gate` would check nothing
        state = "empty" if isinstance(spec_gates, list) else "missing"
        raise InputError(
            f"{path}: records {len(result.gates)} gate result(s) but audit.spec.gates is "
            f"{state}; a result whose audit had gates never passes with 0 gates checked"
        )
    return result


def _verify(path: Path, data: dict, signing_key: bytes | None) -> None:
    """Check the checksum, and the signature when a key is known."""
    integrity = data.get("integrity") or {}
    recorded = integrity.get("content_sha256")
    if recorded is None:
        raise InputError(f"{path}: has no integrity.content_sha256; cannot verify it")
    if recorded != content_sha256(data):
        raise InputError(
            f"{path}: content does not match its integrity hash, a checksum: the file "
            "changed after the audit wrote it (re-run the audit instead of editing its JSON; "
            f"a checksum catches accidental change, a signature with {SIGNING_KEY_ENV} "
            "catches deliberate edits)"
        )
    key = signing_key if signing_key is not None else signing_key_from_env()
    if key is None:
        return
    signature = integrity.get("hmac_sha256")
    if signature is None:
        raise InputError(
            f"{path}: has no integrity.hmac_sha256 signature but {SIGNING_KEY_ENV} is "
            "set; only a result signed with the team's key is accepted"
        )
    expected = hmac_sha256(data, key).encode("ascii")
    given = str(signature).encode("utf-8", "backslashreplace")  # any text, as bytes
    if not hmac.compare_digest(given, expected):
        raise InputError(
            f"{path}: integrity.hmac_sha256 signature is wrong for {SIGNING_KEY_ENV}; "
            "the result was changed after it was signed, or signed with another key"
        )


def read_result(
    path: str | Path, *, verify: bool = True, signing_key: bytes | None = None
) -> tuple[dict, AuditResult]:
    """Read a result JSON strictly: its shape, its checksum and (with a key) its signature.

    Parameters
    ----------
    path : str or Path
    verify : bool
        Check ``integrity.content_sha256`` (and the signature when a key is known).
    signing_key : bytes, optional
        Default: ``PROMPTAUDIT_SIGNING_KEY``. With a key, a result whose
        ``integrity.hmac_sha256`` is missing or wrong is refused.

    Returns
    -------
    (dict, AuditResult)
        The JSON object as written and the typed result read from it.

    Raises
    ------
    InputError
        One line naming the file and what is wrong with it.
    """
    path = Path(path)
    data = _json_object(path, _result_text(path))
    result = _check_contract(path, data)
    if verify:
        _verify(path, data, signing_key)
    return data, result


def read_result_json(
    path: str | Path, *, verify: bool = True, signing_key: bytes | None = None
) -> dict:
    """The JSON object of a result file, checked as :func:`read_result` checks it."""
    return read_result(path, verify=verify, signing_key=signing_key)[0]
