"""The report fixture is what the pipeline writes today (no schema drift).

``tests/fixtures/sample_result.json`` is rendered by the report tests; it is made
by ``scripts/make_sample_result.py`` from a real ``run_audit``. This test runs the
same audit and compares the key structure (every key path, list items folded
into ``[]``) of the fresh result with the fixture's, and checks both against the
result schema that ``promptaudit gate`` enforces.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "sample_result.json"


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "make_sample_result", ROOT / "scripts" / "make_sample_result.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def key_paths(value, prefix: str = "") -> set[str]:
    """Every key path of a JSON value: ``a.b``, list items as ``a[].c``.

    >>> sorted(key_paths({"a": [{"b": 1}, {"c": None}], "d": {}}))
    ['a', 'a[]', 'a[].b', 'a[].c', 'd']
    """
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            paths.add(f"{prefix}[]")
            paths |= key_paths(item, f"{prefix}[]")
    return paths


@pytest.fixture(scope="module")
def fresh() -> dict:
    return _load_script().make_sample_result()


@pytest.fixture(scope="module")
def fixture() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_the_fixture_has_exactly_the_keys_the_pipeline_writes(fresh, fixture):
    new, old = key_paths(fresh), key_paths(fixture)
    assert not (new - old) and not (old - new), (
        "the result schema drifted from tests/fixtures/sample_result.json; run "
        "`python scripts/make_sample_result.py` and review the diff. "
        f"written but not in the fixture: {sorted(new - old)[:20]}; "
        f"in the fixture but no longer written: {sorted(old - new)[:20]}"
    )


@pytest.mark.slow
def test_the_fixture_equals_the_pipeline_apart_from_time_and_machine(fresh, fixture):
    def stable(result: dict) -> dict:
        result = json.loads(json.dumps(result))
        result.pop("integrity", None)
        provenance = result["provenance"]
        for key in ("created_at", "versions", "device", "command"):
            provenance.pop(key, None)
        result["audit"]["spec"]["prompt"] = None  # an absolute path on the maker's machine
        provenance["prompt"]["source"] = None
        provenance["model"]["resolved"] = None
        return result

    a, b = stable(fresh), stable(fixture)
    # Same numbers up to float rounding across machines/BLAS builds.
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or _close(a, b)


def _close(a, b, tol: float = 1e-6) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol * max(1.0, abs(a), abs(b))
    return a == b


def test_the_fixture_passes_the_result_schema(fixture):
    import jsonschema

    from promptaudit.result import result_schema

    jsonschema.validate(fixture, result_schema())
