"""Whether two results measured alike (minimal version for ``promptaudit trend``).

Issue 24 brings the full like-for-like check (data, size, features and groups, labels,
model, max_length, baselines, metric definitions); this minimal version checks the data
hash, the sensitive features, the labels and the model so that ``trend`` works on its
own. Same signature, same meaning: one sentence per difference, empty when alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["result_differences"]


def _get(data: Mapping | None, *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def result_differences(before: Mapping, after: Mapping) -> list[str]:
    """One sentence per way ``after`` was measured unlike ``before`` (empty: like for like).

    Parameters
    ----------
    before, after : mapping
        Result JSON objects (``promptaudit run``).

    Returns
    -------
    list of str
        Checked: the data (sha256, else source), the sensitive features, the labels and
        positive label, the base model.

    Examples
    --------
    >>> a = {"task": {"labels": ["no", "yes"]}}
    >>> result_differences(a, {"task": {"labels": ["yes", "no"]}})
    ['the labels differ: [no, yes] before, [yes, no] after']
    """
    out = []
    checks = [
        ("the evaluation data differ", ("provenance", "data", "sha256")),
        ("the evaluation data differ", ("provenance", "data", "source")),
        ("the sensitive features differ", ("fairness", "sensitive_features")),
        ("the labels differ", ("task", "labels")),
        ("the positive label differs", ("task", "positive_label")),
        ("the base model differs", ("provenance", "model", "reference")),
    ]
    for sentence, path in checks:
        old, new = _get(before, *path), _get(after, *path)
        if old != new:
            out.append(f"{sentence}: {_shown(old)} before, {_shown(new)} after")
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "none recorded"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
