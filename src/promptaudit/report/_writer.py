"""Write the four report files of an audit as one set (the journal is described in docs/cli.md).

Each file is rendered, written to a temporary file beside its target and flushed; then
the journal ``.<name>.reports-pending.json`` names the set, the renames follow and the
journal is removed. A reader never takes a mix of old and new reports for one audit.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from promptaudit.atomic import (
    atomic_write_text,
    pending_journal_path,
    prepare_output_dir,
    sweep_stale_temp_files,
    write_temp_file,
)
from promptaudit.errors import InputError
from promptaudit.paths import BIAS_AUDIT_SUFFIX, REPORT_SUFFIXES, report_files
from promptaudit.report._bias_audit import bias_audit_csv
from promptaudit.report._common import as_result
from promptaudit.report.html import render_html
from promptaudit.report.junit import render_junit
from promptaudit.report.markdown import render_markdown

__all__ = ["write_reports", "REPORT_SUFFIXES", "BIAS_AUDIT_SUFFIX", "complete_pending_reports",
           "pending_journal_path"]

logger = logging.getLogger(__name__)

# The file names live with the output declarations (promptaudit.paths): the
# output-versus-input check and this writer read the same list.

NAME_EMPTY_MESSAGE = "report name is empty; give a file stem such as 'sst2-identity'"
NAME_INVALID_MESSAGE = (
    "report name {name!r} is not a plain file stem; it must not contain a path "
    "separator or be '.' or '..'"
)
OUT_DIR_MESSAGE = "{path}: report folder is not writable ({reason})"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InputError(NAME_EMPTY_MESSAGE)
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in name for sep in separators) or name in (".", "..") or "\x00" in name:
        raise InputError(NAME_INVALID_MESSAGE.format(name=name))


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


def complete_pending_reports(out_dir: str | os.PathLike[str], name: str) -> bool:
    """Finish a report-set switch that a crash interrupted (roll forward).

    Every temporary file the journal names was complete and flushed before the journal
    was written, so moving the remaining ones in yields the whole new set. Returns True
    when a pending switch was found and completed.
    """
    folder = Path(out_dir)
    journal = pending_journal_path(folder, name)
    if not journal.exists():
        return False
    try:
        moves = json.loads(journal.read_text(encoding="utf-8"))["moves"]
        pairs = [(folder / str(src), folder / str(dst)) for src, dst in moves]
    except (OSError, ValueError, KeyError, TypeError):
        pairs = []  # an unreadable journal was never committed: nothing to roll forward
    for src, dst in pairs:
        if src.parent == folder and dst.parent == folder and src.exists():
            os.replace(src, dst)
    journal.unlink(missing_ok=True)
    _fsync_dir(folder)
    logger.info("completed an interrupted report write in %s", folder)
    return True


def write_reports(
    result: dict, out_dir: str | os.PathLike[str], *, name: str | None = None
) -> dict[str, Path]:
    """Render an audit result and write its four report files as one set.

    All four documents are rendered before anything is written, so an error while
    rendering leaves earlier reports untouched. The files are written to temporary
    files, a journal records the set, and the four renames follow (see the module
    docstring): a crash leaves either the previous set or, after the next write or
    :func:`complete_pending_reports`, the new one; never a mix.

    Parameters
    ----------
    result : dict
        The audit result JSON dict (NaN and infinity already replaced by ``None``).
    out_dir : str or path-like
        Folder for the reports; created (with parents) if missing.
    name : str, optional
        File stem (default: ``result["audit"]["name"]``): writes ``<name>.html``,
        ``<name>.json``, ``<name>.junit.xml`` and ``<name>.md``, and
        ``<name>.bias_audit.csv`` when the result has a ``bias_audit`` section.

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
    >>> paths = write_reports(result, tempfile.mkdtemp())
    >>> sorted(p.name for p in paths.values())
    ['demo.html', 'demo.json', 'demo.junit.xml', 'demo.md']
    """
    if name is None:
        audit = result.get("audit") if isinstance(result, Mapping) else None
        name = audit.get("name") if isinstance(audit, Mapping) else None
        if not isinstance(name, str):
            raise InputError("the result has no audit.name; pass name= to write_reports")
    _check_name(name)
    folder = Path(out_dir)
    documents = _render_documents(result)
    declared = report_files(folder, name)  # what `run` checked against its inputs
    undeclared = sorted(set(documents) - set(declared))
    if undeclared:  # a new report kind must be declared in promptaudit.paths.report_files
        raise RuntimeError(f"report kinds {undeclared} are not declared in report_files()")
    prepare_output_dir(folder)
    paths = {kind: declared[kind] for kind in documents}
    try:
        complete_pending_reports(folder, name)
        sweep_stale_temp_files(folder)
        _write_set(folder, name, paths, documents, declared["journal"])
    except PermissionError as error:
        raise InputError(OUT_DIR_MESSAGE.format(path=folder, reason=error.strerror or error)) \
            from None
    _fsync_dir(folder)
    logger.info("wrote reports %s", ", ".join(str(p) for p in paths.values()))
    return paths


def _render_documents(result: Mapping) -> dict[str, str]:
    """Every report of ``result``, rendered in memory (kind -> text) before any is written."""
    typed = as_result(result)  # read once; the JSON is written from the dict itself
    documents = {
        "html": render_html(typed),
        "json": _render_json(result),
        "junit": render_junit(typed),
        "markdown": render_markdown(typed),
    }
    bias_csv = bias_audit_csv(typed)
    if bias_csv is not None:
        documents["bias_audit"] = bias_csv
    return documents


def _write_set(folder: Path, name: str, paths: dict[str, Path], documents: dict[str, str],
               journal: Path) -> None:
    """Write the set to temporary files, journal the renames, rename, drop the journal."""
    temps: dict[str, Path] = {}
    try:
        for kind, path in paths.items():
            temps[kind] = write_temp_file(folder, path.name, documents[kind].encode("utf-8"))
        moves = [[temps[kind].name, paths[kind].name] for kind in paths]
        atomic_write_text(journal, json.dumps({"moves": moves}, indent=1))
    except BaseException:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        raise
    try:
        for kind, path in paths.items():
            os.replace(temps[kind], path)
    except OSError as first:
        # Roll forward: every new file is whole, so finishing the switch is safe.
        try:
            complete_pending_reports(folder, name)
        except OSError:
            raise InputError(
                f"{folder}: the new report set for {name!r} could not be moved into place "
                f"({first.strerror or first}); it stays pending and the next run into this "
                "folder completes it"
            ) from None
    journal.unlink(missing_ok=True)
