"""Write docs/result.schema.json: the JSON Schema of a result, generated from its typed sections.

The schema is :func:`promptaudit.result.result_schema` (draft 2020-12, pydantic's
``model_json_schema()`` of the models of :mod:`promptaudit.result_sections`).
``tests/test_result_sections.py`` fails when the published file differs from what this
script writes; run it after changing a section type.

Usage: ``python scripts/make_result_schema.py [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "docs" / "result.schema.json"


def schema_text() -> str:
    """The published file's exact text: the schema as indented JSON and a final newline."""
    from promptaudit.result import result_schema

    return json.dumps(result_schema(), indent=2, ensure_ascii=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PUBLISHED)
    args = parser.parse_args()
    args.out.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
