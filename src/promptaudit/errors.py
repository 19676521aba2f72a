"""One exception hierarchy for promptaudit.

Library code raises these; only :mod:`promptaudit.cli` maps them to exit codes
(``InputError`` and subclasses -> 2). Messages are one line and name the file,
field or value at fault and what is allowed.
"""

from __future__ import annotations

__all__ = [
    "PromptAuditError",
    "InputError",
    "SpecError",
    "DataError",
    "ModelError",
    "PromptError",
]


class PromptAuditError(Exception):
    """Base class of every error promptaudit raises on purpose."""


class InputError(PromptAuditError, ValueError):
    """Bad user input: a file, field or value that is not allowed (CLI exit code 2)."""


class SpecError(InputError):
    """An audit spec (YAML) that is malformed, misspelt or inconsistent."""


class DataError(InputError):
    """A data file that is missing, empty, unreadable or lacks a required column."""


class ModelError(InputError):
    """A base model reference that cannot be loaded or does not fit the task."""


class PromptError(InputError):
    """A soft prompt that is missing, malformed, untrusted or does not fit the model."""
