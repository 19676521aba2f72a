"""The audit result: a dataclass over the JSON contract (schema_version "1").

Sections are plain JSON-able dicts so a report renders from the JSON alone.
``integrity.content_sha256`` is the sha256 of the canonical JSON of everything
else; ``promptaudit gate`` recomputes it and refuses an edited result.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from promptaudit.errors import InputError

__all__ = [
    "SCHEMA_VERSION",
    "AuditResult",
    "to_jsonable",
    "canonical_json",
    "content_sha256",
    "read_result_json",
]

SCHEMA_VERSION = "1"
_REQUIRED = ("schema_version", "audit", "provenance", "task", "fairness", "gates", "passed")


@dataclass
class AuditResult:
    """Everything an audit found and where it came from."""

    audit: dict
    provenance: dict
    task: dict
    projection: dict | None = None
    attribution: dict | None = None
    fairness: dict = field(default_factory=dict)
    baselines: dict | None = None
    gates: list = field(default_factory=list)
    passed: bool = True
    schema_version: str = SCHEMA_VERSION
    bias_audit: dict | None = None

    def to_dict(self) -> dict:
        """The contract's JSON object, with ``integrity`` added."""
        body = to_jsonable(asdict(self))
        if body.get("bias_audit") is None:  # only present when the spec asks for it
            body.pop("bias_audit", None)
        body["integrity"] = {"algorithm": "sha256", "content_sha256": content_sha256(body)}
        return body

    @classmethod
    def from_dict(cls, data: dict) -> AuditResult:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def to_jsonable(value):
    """Recursively convert numpy scalars/arrays, tuples and paths; NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    if isinstance(value, Path):
        return str(value)
    return value


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


def read_result_json(path: str | Path, *, verify: bool = True) -> dict:
    """Read a result JSON, check its shape and (by default) its integrity hash."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: result file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise InputError(f"{path}: not a promptaudit result; missing keys: {', '.join(missing)}")
    if str(data["schema_version"]) != SCHEMA_VERSION:
        raise InputError(
            f"{path}: schema_version {data['schema_version']!r} is not supported; "
            f"allowed: {SCHEMA_VERSION}"
        )
    if verify:
        recorded = (data.get("integrity") or {}).get("content_sha256")
        if recorded is None:
            raise InputError(f"{path}: has no integrity.content_sha256; cannot verify it")
        if recorded != content_sha256(data):
            raise InputError(
                f"{path}: content does not match its integrity hash; the result was edited "
                "after the audit (re-run the audit instead of editing its JSON)"
            )
    return data
