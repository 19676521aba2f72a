"""Crash-safe file writes: write a temporary file beside the target, fsync, rename.

A reader (or a crash) sees either the old file or the new one, never a
half-written one. Used for reports, result JSON, prediction CSVs and adapters.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from promptaudit.errors import InputError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "prepare_output_dir",
    "check_output_dir",
    "sweep_stale_temp_files",
    "pending_journal_path",
    "write_temp_file",
]

#: Temporary files we write: ``.<target>.<pid>-<random>.tmp`` beside the target.
_TEMP_PATTERN = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp")
#: A temp file of ours whose process cannot be checked is stale after this many seconds.
STALE_AFTER_SECONDS = 24 * 3600
#: A temp file of a process that no longer runs here is stale after this many seconds (a
#: writer on another machine of a shared file system finishes long before).
DEAD_WRITER_GRACE_SECONDS = 60


def check_output_dir(path: str | Path) -> Path:
    """Check that ``path`` is, or can be created as, a folder; create nothing.

    For commands that write their output folder only at the end of long work
    (``train``): a file in the way is refused before the work starts.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: output path exists and is not a directory")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise InputError(
            f"{path}: cannot create the output directory; {blocker} is a file, not a directory"
        )
    return path


def pending_journal_path(out_dir: str | Path, name: str) -> Path:
    """Journal marking the report set ``name`` in ``out_dir`` as being switched.

    Written by :func:`promptaudit.report.write_reports` before its renames and removed
    after them; readers refuse a result while it exists.
    """
    return Path(out_dir) / f".{name}.reports-pending.json"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        pass
    return True


def sweep_stale_temp_files(folder: str | Path, *, now: float | None = None) -> list[Path]:
    """Remove temporary files of ours left in ``folder`` by a killed process.

    A file named ``.<target>.<pid>-<random>.tmp`` is stale when process ``pid`` no
    longer runs here and the file is over a minute old, or (pid reused, or another
    machine of a shared file system) when it is over a day old. Other files are never
    touched. Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time() if now is None else now
    for entry in folder.iterdir():
        match = _TEMP_PATTERN.fullmatch(entry.name)
        if match is None or not entry.is_file() or entry.is_symlink():
            continue
        try:
            age = now - entry.stat().st_mtime
        except OSError:
            continue
        dead = not _process_alive(int(match["pid"]))
        if not (dead and age > DEAD_WRITER_GRACE_SECONDS or age > STALE_AFTER_SECONDS):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def prepare_output_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check it is a writable folder (before any long work)."""
    path = check_output_dir(path)
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
        sweep_stale_temp_files(folder)
    except OSError as exc:
        raise InputError(f"{folder}: cannot write there ({exc.strerror})") from None
    tmp_name = write_temp_file(folder, path.name, data)
    try:
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_temp_file(folder: Path, target: str, data: bytes) -> Path:
    """Write ``data`` to a new temporary file of ours in ``folder``, flushed to disk.

    Permissions follow the umask (``0666 & ~umask``) like any file the user creates.
    Returns its path; the caller renames it over ``folder / target``.
    """
    try:
        fd, name = tempfile.mkstemp(
            dir=folder, prefix=f".{target}.{os.getpid()}-", suffix=".tmp"
        )
    except PermissionError:
        raise
    except OSError as exc:
        raise InputError(f"{folder}: cannot write there ({exc.strerror})") from None
    tmp_path = Path(name)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; reports are for sharing
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return tmp_path


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
