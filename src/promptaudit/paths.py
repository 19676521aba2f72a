"""Where files come from and where they go: pure path rules shared by every command.

* **Declared inputs and outputs.** Every command that writes files declares, in one
  :class:`DeclaredIO` (``plan_<command>``), what it reads and *every* file or folder it
  will write. :meth:`DeclaredIO.check` refuses any overlap before work starts, and the
  writers take their file names from the same declarations (:func:`report_files`,
  :func:`comparison_files`), so a new output cannot be written without being declared
  (and therefore checked).
* :func:`looks_like_local_path` decides whether a model or prompt reference that does
  not exist is a mistyped local path (fail at once) or a Hugging Face Hub id.

Nothing here imports torch or transformers.

Adding a command that writes files
----------------------------------
1. Write a ``plan_<command>(...) -> DeclaredIO`` here: name every input (``None``,
   ``builtin:``/``hf:`` references and Hub ids are skipped) and every output with
   :func:`output_file` (one file the command writes or replaces), :func:`output_folder`
   (a folder, possibly the user's, into which only the declared files go) or
   :func:`owned_folder` (a folder the command fills with files of its own choosing: an
   adapter, checkpoints, a sweep).
2. Call ``plan.check()`` in the command before any work (and in ``validate`` when a
   spec section drives the command).
3. Let the writer take its paths from the plan (``plan.path("json")``) or from a shared
   file-name function like :func:`report_files`, never from a literal of its own.
4. Add the writer to ``tests/test_declared_io.py``, which runs every writer and asserts
   that each file it wrote was declared.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from promptaudit.errors import InputError

__all__ = [
    "DeclaredIO",
    "Output",
    "OutputKind",
    "output_file",
    "output_folder",
    "owned_folder",
    "report_files",
    "comparison_files",
    "REPORT_SUFFIXES",
    "BIAS_AUDIT_SUFFIX",
    "COMPARISON_FILES",
    "TREND_FILES",
    "PDF_SUFFIX",
    "trend_files",
    "plan_run",
    "plan_demo",
    "plan_train",
    "plan_predict",
    "plan_mitigate",
    "plan_compare",
    "plan_pdf",
    "plan_trend",
    "plan_card",
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

    The rule is documented in ``docs/cli.md`` (model and prompt references): anything
    not of the Hub id form, or whose ``org`` folder exists under ``root``, is local.

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
    text = "" if reference is None else str(reference)
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


#: Report kind -> file suffix after ``<name>`` (the four reports of an audit).
REPORT_SUFFIXES = {"html": ".html", "json": ".json", "junit": ".junit.xml", "markdown": ".md"}

#: Suffix of the bias-audit CSV, written beside the four reports when the result has
#: a ``bias_audit`` section (report kind ``"bias_audit"``).
BIAS_AUDIT_SUFFIX = ".bias_audit.csv"

#: ``run --pdf`` writes the report as ``<name>.pdf`` beside the other reports.
PDF_SUFFIX = ".pdf"

#: Trend kind -> file name (``promptaudit trend --out DIR``).
TREND_FILES = {"html": "trend.html", "markdown": "trend.md", "json": "trend.json"}

#: Comparison kind -> file name (``promptaudit compare --out DIR``).
COMPARISON_FILES = {
    "html": "comparison.html", "markdown": "comparison.md", "json": "comparison.json"
}


class OutputKind(StrEnum):
    """What a command writes at a declared output path."""

    #: One file, written or replaced.
    FILE = "file"
    #: A folder (created if missing, perhaps the user's own) into which only declared
    #: files go: refused when it is an input or lies inside an input folder.
    FOLDER = "folder"
    #: A folder the command fills with files of its own choosing (an adapter, its
    #: checkpoints, a sweep): also refused when it contains an input or another output.
    OWNED_FOLDER = "owned folder"


@dataclass(frozen=True)
class Output:
    """One declared output: ``label`` names it in messages (``"--out"``, ``"json report"``)."""

    label: str
    path: Path
    kind: OutputKind = OutputKind.FILE


def output_file(label: str, path: str | Path) -> Output:
    """A file the command writes or replaces."""
    return Output(label, Path(path), OutputKind.FILE)


def output_folder(label: str, path: str | Path) -> Output:
    """A folder into which the command writes only its declared files."""
    return Output(label, Path(path), OutputKind.FOLDER)


def owned_folder(label: str, path: str | Path) -> Output:
    """A folder the command fills with files of its own choosing (an adapter folder)."""
    return Output(label, Path(path), OutputKind.OWNED_FOLDER)


@dataclass(frozen=True)
class DeclaredIO:
    """Everything one command reads and writes, declared before it starts.

    Attributes
    ----------
    command : str
        The command (``"run"``, ``"mitigate"``, ...), for messages.
    inputs : mapping of str to path or None
        What each input is (``"data file"``, ``"prompt"``) -> its reference.
    outputs : tuple of Output
        Every file and folder the command will write.
    """

    command: str
    inputs: Mapping[str, str | Path | None] = field(default_factory=dict)
    outputs: tuple[Output, ...] = ()

    def check(self) -> None:
        """Refuse any overlap of outputs with inputs or each other (:func:`check_declared_io`)."""
        check_declared_io(self)

    def path(self, label: str) -> Path:
        """The declared path of output ``label`` (a KeyError names an undeclared output)."""
        for output in self.outputs:
            if output.label == label:
                return output.path
        raise KeyError(f"output {label!r} is not declared for {self.command}")


def _resolved_inputs(inputs: Mapping[str, str | Path | None]) -> list[tuple[str, Path, Path]]:
    out = []
    for what, reference in inputs.items():
        path = local_input(reference)
        if path is not None:
            out.append((what, path, _resolved(path)))
    return out


def _inside(child: Path, folder: Path) -> bool:
    return folder in child.parents


def _refuse_output_over_inputs(
    output: Output, target: Path, local_inputs: list[tuple[str, Path, Path]]
) -> None:
    """Refuse ``output`` (resolved: ``target``) if it is, lies inside or owns an input.

    ``local_inputs`` are ``(what, path, resolved path)`` from :func:`_resolved_inputs`.
    """
    label, shown = output.label, output.path
    for what, path, source in local_inputs:
        if target == source or _same_file(output.path, path):
            raise InputError(
                f"{label} {shown}: is the {what} of this run ({path}); writing there "
                "would overwrite an input; choose another output path"
            )
        if source.is_dir() and _inside(target, source):
            raise InputError(
                f"{label} {shown}: lies inside the {what} folder of this run ({path}); "
                "writing there would change an input; choose another output folder"
            )
        if output.kind is OutputKind.OWNED_FOLDER and _inside(source, target):
            raise InputError(
                f"{label} {shown}: contains the {what} of this run ({path}); this "
                "folder is filled with the command's own files; choose an output "
                "folder that holds no input"
            )


def check_declared_io(plan: DeclaredIO) -> None:
    """Refuse a plan whose outputs overlap its inputs (see :class:`OutputKind`).

    For every output, after resolving symlinks on both sides: the output is an input
    (same path or same file by inode: a hard link), or lies inside an input folder,
    or (an owned folder) contains an input. Owned folders must also not equal, contain
    or lie inside another declared output, and no two outputs may be the same path.

    Raises
    ------
    InputError
        One line naming both paths.
    """
    local_inputs = _resolved_inputs(plan.inputs)
    resolved_outputs = [(output, _resolved(output.path)) for output in plan.outputs]
    for output, target in resolved_outputs:
        _refuse_output_over_inputs(output, target, local_inputs)
    for i, (first, first_target) in enumerate(resolved_outputs):
        for second, second_target in resolved_outputs[i + 1:]:
            owned = OutputKind.OWNED_FOLDER in (first.kind, second.kind)
            if first_target == second_target and (owned or first.kind == second.kind):
                raise InputError(
                    f"{second.label} {second.path}: is also {first.label} ({first.path}); "
                    "give each output its own path"
                )
            for (outer, outer_target), (inner, inner_target) in (
                ((first, first_target), (second, second_target)),
                ((second, second_target), (first, first_target)),
            ):
                if not _inside(inner_target, outer_target):
                    continue
                if outer.kind is OutputKind.OWNED_FOLDER:
                    why = "a folder the command fills with its own files"
                elif inner.kind is OutputKind.OWNED_FOLDER and outer.kind is OutputKind.FILE:
                    why = "which is written as a file"
                else:
                    continue
                raise InputError(
                    f"{inner.label} {inner.path}: lies inside {outer.label} ({outer.path}), "
                    f"{why}; give each output its own path"
                )

def report_files(out: str | Path, name: str) -> dict[str, Path]:
    """Every file an audit's report set may write into ``out``, by kind.

    The four reports, the bias-audit CSV (written only when the result has a
    ``bias_audit`` section), the PDF (``run --pdf`` only) and the journal of the set
    switch (``"journal"``, see :mod:`promptaudit.report._writer`). The report writer
    takes its paths from here.
    """
    from promptaudit.atomic import pending_journal_path

    folder = Path(out)
    files = {kind: folder / f"{name}{suffix}" for kind, suffix in REPORT_SUFFIXES.items()}
    files["bias_audit"] = folder / f"{name}{BIAS_AUDIT_SUFFIX}"
    files["pdf"] = folder / f"{name}{PDF_SUFFIX}"  # with `run --pdf` only
    files["journal"] = pending_journal_path(folder, name)
    return files


def comparison_files(out: str | Path) -> dict[str, Path]:
    """Every file ``compare --out`` writes into ``out``, by kind (its writer reads them here)."""
    return {kind: Path(out) / file_name for kind, file_name in COMPARISON_FILES.items()}


def trend_files(out: str | Path) -> dict[str, Path]:
    """Every file ``trend --out`` writes into ``out``, by kind (its writer reads them here)."""
    return {kind: Path(out) / file_name for kind, file_name in TREND_FILES.items()}


def _folder_outputs(out: str | Path | None, files: Mapping[str, Path], what: str) -> list[Output]:
    """``--out`` and its ``files`` (labelled ``"<what> <kind>"``), or nothing without it."""
    if out is None:
        return []
    return [output_folder("--out", out),
            *(output_file(f"{what} {kind}", path) for kind, path in files.items())]


def _report_outputs(out: str | Path, name: str, *, prefix: str = "") -> list[Output]:
    outputs = [output_folder(f"{prefix}--out", out)]
    for kind, path in report_files(out, name).items():
        what = "journal" if kind == "journal" else f"{kind} report"
        outputs.append(output_file(f"{prefix}{what}", path))
    return outputs


def audit_inputs(spec, spec_path: str | Path | None = None) -> dict[str, str | None]:
    """The local inputs of an audit spec, named for messages (``builtin:``/Hub ids give None).

    Includes the ``mitigation:`` section's data and term suite.
    """
    train = spec.prompt.train
    counterfactuals = getattr(spec, "counterfactuals", None)
    mitigation = getattr(spec, "mitigation", None)
    return {
        "audit spec": None if spec_path is None else str(spec_path),
        "data file": spec.data.path,
        "prompt": spec.prompt.path,
        "training data": None if train is None else train.data.path,
        "model": spec.model.base,
        "term suite": None if counterfactuals is None else counterfactuals.suite,
        "mitigation data": None if mitigation is None else mitigation.data.path,
        "mitigation term suite": None if mitigation is None else mitigation.suite,
    }


def plan_run(spec, out: str | Path, *, spec_path: str | Path | None = None) -> DeclaredIO:
    """What ``promptaudit run`` (and ``validate``) declares for a resolved spec.

    Outputs: the report folder ``out`` and every report file in it
    (:func:`report_files`), ``prompt.train.out`` and ``mitigation.out`` (owned
    adapter folders; an unset one is a fresh private temporary folder).
    """
    outputs = _report_outputs(out, spec.name)
    train = spec.prompt.train
    if train is not None and train.out:
        outputs.append(owned_folder("prompt.train.out", train.out))
    mitigation = getattr(spec, "mitigation", None)
    if mitigation is not None and mitigation.out:
        outputs.append(owned_folder("mitigation.out", mitigation.out))
    return DeclaredIO("run", audit_inputs(spec, spec_path), tuple(outputs))


def plan_demo(out: str | Path, *, prompt: str | Path, retrain: bool = False) -> DeclaredIO:
    """``promptaudit demo``: the demo report set in ``out`` (and, retrained, its prompt)."""
    outputs = _report_outputs(out, "demo")
    if retrain:
        outputs.append(owned_folder("retrained demo prompt", Path(out) / ".demo_prompt"))
    return DeclaredIO("demo", {"demo prompt": prompt}, tuple(outputs))


def plan_train(out: str | Path, *, data, model, validation_data=None) -> DeclaredIO:
    """``promptaudit train``: the adapter folder ``--out`` (with its ``.checkpoints``)."""
    return DeclaredIO(
        "train",
        {"data file": data, "validation data": validation_data, "model": model},
        (owned_folder("--out", out),),
    )


def plan_predict(out: str | Path | None, *, data, prompt, model) -> DeclaredIO:
    """``promptaudit predict --out FILE``: one CSV file (nothing without ``--out``)."""
    outputs = () if out is None else (output_file("--out", out),)
    return DeclaredIO("predict", {"data file": data, "prompt": prompt, "model": model}, outputs)


def plan_mitigate(out: str | Path, *, data, prompt, model, unlabelled_data=None,
                  suite=None) -> DeclaredIO:
    """``promptaudit mitigate``: the folder ``--out`` (adapter, record, tables, sweep)."""
    inputs = {"data file": data, "prompt": prompt, "model": model,
              "unlabelled data": unlabelled_data, "term suite": suite}
    return DeclaredIO("mitigate", inputs, (owned_folder("--out", out),))


def plan_compare(before, after, out: str | Path | None) -> DeclaredIO:
    """``promptaudit compare``: the folder ``--out`` and its comparison files."""
    files = {} if out is None else comparison_files(out)
    outputs = _folder_outputs(out, files, "comparison")
    return DeclaredIO("compare", {"before result": before, "after result": after}, tuple(outputs))


def plan_pdf(result: str | Path, out: str | Path | None) -> DeclaredIO:
    """``promptaudit pdf RESULT.json [--out FILE]``: one PDF (default: RESULT with ``.pdf``)."""
    target = Path(result).with_suffix(PDF_SUFFIX) if out is None else Path(out)
    return DeclaredIO("pdf", {"result JSON": result}, (output_file("--out", target),))


def plan_trend(results: Iterable[str | Path], out: str | Path | None) -> DeclaredIO:
    """``promptaudit trend R1.json R2.json ... [--out DIR]``: the folder and its trend files."""
    outputs = _folder_outputs(out, {} if out is None else trend_files(out), "trend")
    inputs = {f"result {i + 1}": path for i, path in enumerate(results)}
    return DeclaredIO("trend", inputs, tuple(outputs))


def plan_card(result: str | Path, adapter: str | Path) -> DeclaredIO:
    """``promptaudit card RESULT.json --adapter DIR``: the adapter's ``README.md`` only."""
    return DeclaredIO(
        "card", {"result JSON": result}, (output_file("model card", Path(adapter) / "README.md"),)
    )


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
