"""Write the four report files of an audit atomically."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from promptaudit.atomic import atomic_write_text, prepare_output_dir
from promptaudit.errors import InputError
from promptaudit.report._bias_audit import bias_audit_csv
from promptaudit.report.html import render_html
from promptaudit.report.junit import render_junit
from promptaudit.report.markdown import render_markdown

__all__ = ["write_reports", "REPORT_SUFFIXES", "BIAS_AUDIT_SUFFIX"]

logger = logging.getLogger(__name__)

#: Report kind -> file suffix after ``<name>``.
REPORT_SUFFIXES: dict[str, str] = {
    "html": ".html",
    "json": ".json",
    "junit": ".junit.xml",
    "markdown": ".md",
}

#: Suffix of the bias-audit CSV, written beside the four reports when the result has
#: a ``bias_audit`` section (report kind ``"bias_audit"``).
BIAS_AUDIT_SUFFIX = ".bias_audit.csv"

ERROR_NAME_EMPTY = "report name is empty; give a file stem such as 'sst2-identity'"
ERROR_NAME_INVALID = (
    "report name {name!r} is not a plain file stem; it must not contain a path "
    "separator or be '.' or '..'"
)
ERROR_OUT_DIR = "{path}: report folder is not writable ({reason})"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InputError(ERROR_NAME_EMPTY)
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in name for sep in separators) or name in (".", "..") or "\x00" in name:
        raise InputError(ERROR_NAME_INVALID.format(name=name))


def _render_json(result: Mapping) -> str:
    try:
        return json.dumps(result, sort_keys=True, indent=2, allow_nan=False)
    except ValueError as error:  # NaN/inf should have become null upstream
        raise ValueError(f"audit result is not valid JSON: {error}") from error


def _fsync_dir(path: Path) -> None:
    """Persist the renames in ``path`` (best effort; not every platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_reports(result: dict, out_dir: str | os.PathLike[str], *, name: str) -> dict[str, Path]:
    """Render an audit result and write its four report files atomically.

    All four documents are rendered before anything is written, so an error while
    rendering leaves earlier reports untouched. Each file is written to a temporary
    file in ``out_dir``, flushed to disk and renamed over the target
    (:func:`promptaudit.atomic.atomic_write_text`).

    Parameters
    ----------
    result : dict
        The audit result JSON dict (NaN and infinity already replaced by ``None``).
    out_dir : str or path-like
        Folder for the reports; created (with parents) if missing.
    name : str
        File stem: writes ``<name>.html``, ``<name>.json``, ``<name>.junit.xml`` and
        ``<name>.md``, and ``<name>.bias_audit.csv`` when the result has a
        ``bias_audit`` section.

    Returns
    -------
    dict of str to Path
        ``{"html": ..., "json": ..., "junit": ..., "markdown": ...}``, plus
        ``"bias_audit"`` when the CSV was written.

    Raises
    ------
    promptaudit.errors.InputError
        If ``name`` is empty or holds a path separator, or ``out_dir`` cannot be
        created or written.

    Examples
    --------
    >>> import tempfile
    >>> result = {"schema_version": "1", "audit": {"name": "demo"}, "gates": [], "passed": True}
    >>> paths = write_reports(result, tempfile.mkdtemp(), name="demo")
    >>> sorted(p.name for p in paths.values())
    ['demo.html', 'demo.json', 'demo.junit.xml', 'demo.md']
    """
    _check_name(name)
    folder = Path(out_dir)
    documents = {
        "html": render_html(result),
        "json": _render_json(result),
        "junit": render_junit(result),
        "markdown": render_markdown(result),
    }
    suffixes = dict(REPORT_SUFFIXES)
    bias_csv = bias_audit_csv(result)
    if bias_csv is not None:
        documents["bias_audit"] = bias_csv
        suffixes["bias_audit"] = BIAS_AUDIT_SUFFIX
    prepare_output_dir(folder)
    paths = {kind: folder / f"{name}{suffix}" for kind, suffix in suffixes.items()}
    try:
        for kind, path in paths.items():
            atomic_write_text(path, documents[kind])
    except PermissionError as error:
        raise InputError(ERROR_OUT_DIR.format(path=folder, reason=error.strerror or error)) \
            from None
    _fsync_dir(folder)
    logger.info("wrote reports %s", ", ".join(str(p) for p in paths.values()))
    return paths
