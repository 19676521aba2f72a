"""Read evaluation and training tables (csv, tsv, jsonl, parquet, hf:, builtin:).

Files are read through Hugging Face ``datasets`` (the same reader a user's
training scripts use) and handed to the rest of promptaudit as pandas frames.
Every failure is a :class:`~promptaudit.errors.DataError` naming the file and
column at fault.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from promptaudit.errors import DataError

__all__ = [
    "load_table",
    "require_columns",
    "encode_labels",
    "infer_labels",
    "check_sensitive_columns",
    "SUPPORTED_SUFFIXES",
]

logger = logging.getLogger(__name__)

#: File suffix -> ``datasets`` builder name.
SUPPORTED_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}


def load_table(
    source: str | Path,
    *,
    required_columns: Sequence[str] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """Load a table and check that it holds the required columns.

    Parameters
    ----------
    source : str or Path
        A file path (``.csv``, ``.tsv``, ``.jsonl``, ``.json``, ``.parquet``),
        ``hf:NAME[:split]`` (a Hub dataset, needs network) or ``builtin:NAME``
        (a generated corpus from :mod:`promptaudit.corpora`).
    required_columns : sequence of str
        Columns that must exist; a missing one raises naming the column and
        listing the available ones.
    seed : int
        Seed for generated ``builtin:`` corpora.

    Returns
    -------
    pandas.DataFrame
        One row per example, ``(n_rows, n_columns)``; never empty.
    """
    text = str(source)
    if text.startswith("builtin:"):
        from promptaudit.corpora import load_builtin_table

        frame = load_builtin_table(text[len("builtin:") :], seed=seed)
    elif text.startswith("hf:"):
        frame = _load_hub_dataset(text[len("hf:") :])
    else:
        frame = _load_file(Path(text))
    if len(frame) == 0:
        raise DataError(f"{text}: the data is empty (no rows); an audit needs at least one example")
    require_columns(frame, required_columns, source=text)
    return frame


def require_columns(frame: pd.DataFrame, columns: Sequence[str], *, source: str) -> None:
    """Raise a :class:`DataError` naming the first column of ``columns`` missing in ``frame``."""
    for column in columns:
        if column not in frame.columns:
            available = ", ".join(map(str, frame.columns)) or "none"
            raise DataError(
                f"{source}: column {column!r} not found; available columns: {available}"
            )


def encode_labels(
    values: pd.Series, labels: Sequence[str], *, source: str, column: str
) -> np.ndarray:
    """Map a label column to integer indices into ``labels``.

    A column may hold label names (``"positive"``) or integer indices into the
    label list (``1``, ``"1"``). Anything else is an error naming the value.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 indices.
    """
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{source}: column {column!r} has a missing label at row {row}")
    name_to_index = {str(name): i for i, name in enumerate(labels)}
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values.tolist()):
        key = str(value).strip()
        if not key and "" not in name_to_index:  # an empty CSV cell (read as text, not NaN)
            raise DataError(f"{source}: column {column!r} has a missing label at row {row}")
        if key in name_to_index:
            out[row] = name_to_index[key]
            continue
        try:
            as_float = float(key)
        except ValueError:
            as_float = float("nan")
        if as_float.is_integer() and 0 <= int(as_float) < len(labels):
            out[row] = int(as_float)
            continue
        allowed = ", ".join(labels)
        raise DataError(
            f"{source}: column {column!r} row {row} has label {value!r}; allowed: "
            f"{allowed} or an index 0..{len(labels) - 1}"
        )
    return out


def check_sensitive_columns(
    frame: pd.DataFrame,
    columns: Sequence[str],
    *,
    source: str,
    reference_group: str | Mapping[str, str] | None = None,
) -> None:
    """Refuse a sensitive feature column with a missing value or a single group.

    Checked when the data is read, before any model work, so the message names
    the file. ``reference_group`` (a group name, or ``between_groups``) must be
    a group of every column; a mapping ``{feature: group}`` names one group per
    feature, each of which must exist in its column.
    """
    if isinstance(reference_group, Mapping):
        for feature in reference_group:
            if feature not in columns:
                raise DataError(
                    f"fairness.reference_group: {feature!r} is not a sensitive feature; "
                    f"sensitive features: {', '.join(columns) or 'none'}"
                )
    for column in columns:
        values = frame[column]
        text = values.astype(str).str.strip()
        missing = values.isna().to_numpy() | (text == "").to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{source}: sensitive feature column {column!r} has a missing value at row {row}; "
                "every row needs a group (empty cells are not allowed)"
            )
        groups = sorted(text.unique().tolist())
        if len(groups) < 2:
            raise DataError(
                f"{source}: sensitive feature column {column!r} has only one group "
                f"({groups[0]!r}); a fairness comparison needs at least two groups"
            )
        wanted = (
            reference_group.get(column) if isinstance(reference_group, Mapping) else reference_group
        )
        if isinstance(reference_group, Mapping) and wanted is not None and wanted not in groups:
            raise DataError(
                f"fairness.reference_group.{column}: {wanted!r} is not a group of sensitive "
                f"feature {column!r} in {source}; groups: {', '.join(groups)}"
            )
        if isinstance(reference_group, str) and wanted != "between_groups" and (
            wanted not in groups
        ):
            raise DataError(
                f"fairness.reference_group: {reference_group!r} is not a group of sensitive "
                f"feature {column!r} in {source}; groups: {', '.join(groups)} (or between_groups)"
            )


def check_group_column(frame: pd.DataFrame, column: str, *, source: str) -> None:
    """Refuse a counterfactual ``group_column`` with a missing or empty value.

    A missing value would otherwise become a group named ``"nan"`` or ``""``.
    ``row`` in the message is the 0-based data row (the header is not a row).
    """
    values = frame[column]
    missing = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{source}: counterfactual group column {column!r} has a missing value at row {row}; "
            "every row needs a group (empty cells are not allowed)"
        )


def _load_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a data file ({_suffix_list()})")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path}: unsupported data file type {suffix!r}; allowed: {_suffix_list()}")
    builder = SUPPORTED_SUFFIXES[suffix]
    # A text file with no line past the CSV header holds no rows (datasets would
    # fail on it with an unhelpful message).
    no_rows = path.stat().st_size == 0
    if suffix != ".parquet":
        no_rows = _check_utf8(path) <= (1 if builder == "csv" else 0)
    if no_rows:
        raise DataError(f"{path}: the data is empty (no rows); an audit needs at least one example")
    import datasets

    kwargs: dict = {}
    if suffix == ".tsv":
        kwargs["sep"] = "\t"
    if builder == "csv":
        # Keep text as text: "NA" or "null" in a sentence is not a missing value.
        kwargs["keep_default_na"] = False
        kwargs["quoting"] = 3 if suffix == ".tsv" else 0  # GLUE TSVs hold bare quotes
    datasets.disable_progress_bars()
    try:
        with _quiet_loaders():
            dataset = datasets.load_dataset(
                builder,
                data_files=str(path),
                split="train",
                keep_in_memory=True,
                cache_dir=None,
                **kwargs,
            )
    except Exception as exc:  # datasets raises many types; all mean "cannot parse"
        raise DataError(f"{path}: could not be read as {suffix[1:]}: {_root_cause(exc)}") from exc
    return dataset.to_pandas()


def _load_hub_dataset(reference: str) -> pd.DataFrame:
    name, _, split = reference.partition(":")
    import datasets

    try:
        with _quiet_loaders():
            dataset = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:
        raise DataError(
            f"hf:{reference}: could not load the dataset: {exc}".splitlines()[0]
        ) from exc
    return dataset.to_pandas()


@contextlib.contextmanager
def _quiet_loaders():
    """Keep ``datasets``/``huggingface_hub`` from logging tracebacks of errors reported here."""
    names = ("datasets", "huggingface_hub", "fsspec")
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _root_cause(exc: BaseException) -> str:
    """First line of the innermost cause (datasets wraps parser errors in a generic one)."""
    seen = set()
    while id(exc) not in seen and (exc.__cause__ or exc.__context__) is not None:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_utf8(path: Path) -> int:
    """Raise a DataError at the first non-UTF-8 line; return the number of non-blank lines."""
    non_blank = 0
    with path.open("rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}: line {line_number} is not valid UTF-8 (byte {exc.start}); "
                    "save the file as UTF-8"
                ) from None
            non_blank += bool(line.strip())
    return non_blank


def _suffix_list() -> str:
    return ", ".join(SUPPORTED_SUFFIXES)


def infer_labels(values: pd.Series) -> list[str]:
    """Label names when the user gives none: ``0..max`` for integer labels, else sorted names."""
    clean = values.dropna()
    as_text = clean.astype(str).str.strip()
    if len(as_text) and as_text.str.fullmatch(r"\d+").all():
        return [str(i) for i in range(int(as_text.astype(int).max()) + 1)]
    return sorted(as_text.unique().tolist())
