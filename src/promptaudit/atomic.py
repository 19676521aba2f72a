"""Crash-safe file writes: write a temporary file beside the target, fsync, rename.

A reader (or a crash) sees either the old file or the new one, never a
half-written one. Used for reports, result JSON, prediction CSVs and adapters.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from promptaudit.errors import InputError

__all__ = ["atomic_write_bytes", "atomic_write_text", "prepare_output_dir"]


def prepare_output_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check it is a writable folder (before any long work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: output path exists and is not a directory")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise InputError(f"{path}: cannot create the output directory; {blocker} is a file, "
                         "not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create the output directory ({exc.strerror})") from None
    try:
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".promptaudit-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise InputError(f"{path}: output directory is not writable ({exc.strerror})") from None
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise InputError(f"{folder}: cannot write there; {blocker} is a file, not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"{folder}: cannot write there ({exc.strerror})") from None
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; reports are for sharing
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) when it is not a directory."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))
