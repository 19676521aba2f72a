"""Where files come from and where they go: pure path rules shared by every command.

Two rules live here:

* :func:`check_outputs_do_not_clobber` refuses, before anything is written, an output
  path that is (after resolving symlinks) an input of the same run, or lies inside an
  input folder (a model or adapter directory), or contains an input file.
* :func:`looks_like_local_path` decides whether a model or prompt reference that does
  not exist is a mistyped local path (fail at once) or a Hugging Face Hub id
  (``name`` or ``org/name``).

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from promptaudit.errors import InputError

__all__ = [
    "check_outputs_do_not_clobber",
    "check_audit_outputs",
    "audit_inputs",
    "local_input",
    "looks_like_local_path",
    "is_hub_id",
    "HUB_ID_PATTERN",
    "sha256_file",
]

#: A Hugging Face Hub repository id: ``name`` or ``org/name`` (letters, digits, ``-_.``).
HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")


def is_hub_id(reference: str) -> bool:
    """Whether ``reference`` has the form of a Hub id (``name`` or ``org/name``)."""
    return bool(HUB_ID_PATTERN.fullmatch(reference)) and ".." not in reference


def looks_like_local_path(reference: str, root: str | Path | None = None) -> bool:
    """Whether a reference that is not an existing path was meant as a local path.

    The rule (documented in ``docs/cli.md``): a reference is local when it starts with
    ``.``, ``/`` or ``~``, holds a backslash or more than one ``/``, is not of the Hub id
    form (``name`` or ``org/name`` with letters, digits, ``-``, ``_`` and ``.``), or when
    its first component (``org`` of ``org/name``) exists as a local folder (relative to
    ``root``, default the working directory). Everything else is a Hub id.

    Parameters
    ----------
    reference : str
        The model or prompt reference as the user wrote it.
    root : str or Path, optional
        Folder relative references are read against (a spec's folder).
    """
    if reference.startswith((".", "/", "~")) or "\\" in reference or reference.count("/") > 1:
        return True
    if not is_hub_id(reference):
        return True
    first = reference.split("/")[0]
    base = Path(root) if root is not None else Path(".")
    return "/" in reference and (base / first).is_dir()


def local_input(reference: str | Path | None) -> Path | None:
    """The local path of an input reference, or None (``builtin:``, ``hf:``, a Hub id)."""
    if reference is None:
        return None
    text = str(reference)
    if not text or text.startswith(("builtin:", "hf:")):
        return None
    path = Path(text).expanduser()
    return path if path.exists() or path.is_symlink() else None


def _resolved(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path.expanduser()))
    except (OSError, ValueError):
        return path.expanduser().absolute()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs_do_not_clobber(
    outputs: Mapping[str, str | Path] | Iterable[str | Path],
    inputs: Mapping[str, str | Path | None],
) -> None:
    """Refuse an output path that would overwrite or write into an input of the run.

    Symlinks are resolved on both sides (an output inside a symlink to an input folder
    is caught) and hard links are compared by inode.

    Parameters
    ----------
    outputs : mapping of str to path, or iterable of paths
        Files or folders the command will write, optionally named by what they are
        (``{"--out": ..., "report": ...}``).
    inputs : mapping of str to path or None
        What each input is (``"data file"``, ``"prompt"``, ``"model"``, ``"audit spec"``,
        ``"term suite"``) -> its local path. ``None``, ``builtin:``/``hf:`` references
        and paths that do not exist (Hub ids) are skipped.

    Raises
    ------
    InputError
        One line naming the output, the input it would clobber and what to do.
    """
    named_outputs = (
        list(outputs.items())
        if isinstance(outputs, Mapping)
        else [(str(path), path) for path in outputs]
    )
    local_inputs = []
    for what, reference in inputs.items():
        path = local_input(reference)
        if path is not None:
            local_inputs.append((what, path, _resolved(path)))
    for label, output in named_outputs:
        output = Path(output)
        target = _resolved(output)
        for what, path, source in local_inputs:
            if target == source or _same_file(output, path):
                raise InputError(
                    f"{label} {output}: is the {what} of this run ({path}); writing there "
                    "would overwrite an input; choose another output path"
                )
            if source.is_dir() and source in target.parents:
                raise InputError(
                    f"{label} {output}: lies inside the {what} folder of this run ({path}); "
                    "writing there would change an input; choose another output folder"
                )


def audit_inputs(spec, spec_path: str | Path | None = None) -> dict[str, str | None]:
    """The local inputs of an audit spec, named for messages (``builtin:``/Hub ids give None)."""
    train = spec.prompt.train
    counterfactuals = getattr(spec, "counterfactuals", None)
    return {
        "audit spec": None if spec_path is None else str(spec_path),
        "data file": spec.data.path,
        "prompt": spec.prompt.path,
        "training data": None if train is None else train.data.path,
        "model": spec.model.base,
        "term suite": None if counterfactuals is None else counterfactuals.suite,
    }


def check_audit_outputs(spec, out: str | Path, *, spec_path: str | Path | None = None) -> None:
    """Refuse an audit whose reports (or in-audit trained adapter) would clobber an input.

    Checks ``out`` itself, the four report files ``<out>/<name>.*`` and
    ``prompt.train.out`` against :func:`audit_inputs`.
    """
    from promptaudit.report._writer import REPORT_SUFFIXES

    outputs: dict[str, Path] = {"--out": Path(out)}
    for kind, suffix in REPORT_SUFFIXES.items():
        outputs[f"{kind} report"] = Path(out) / f"{spec.name}{suffix}"
    train = spec.prompt.train
    if train is not None and train.out:
        outputs["prompt.train.out"] = Path(train.out)
    check_outputs_do_not_clobber(outputs, audit_inputs(spec, spec_path))


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
