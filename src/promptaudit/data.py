"""Read evaluation and training tables (csv, tsv, jsonl, parquet, hf:, builtin:).

Local files are read with pandas, pyarrow and the ``json`` module directly: no
network request is ever made for a local file (``datasets.load_dataset`` would
contact the Hub even for ``data_files``). Only ``hf:NAME`` uses ``datasets``.
Every failure is a :class:`~promptaudit.errors.DataError` naming the file, the
line (1-based, as an editor shows it) and the column at fault.

Each frame read from a file carries ``frame.attrs["line_numbers"]``: the file line
where each row starts, by index label, so messages can say "line N".
"""

from __future__ import annotations

import contextlib
import csv
import json
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
    "fill_missing_groups",
    "MISSING_GROUP",
    "SUPPORTED_SUFFIXES",
    "read_columns",
    "row_location",
]

#: The group name missing sensitive values get in group fairness metrics when a
#: column may hold them (the bias audit counts them as unknown instead).
MISSING_GROUP = "(missing)"

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
        raise _empty_data(text)
    require_columns(frame, required_columns, source=text)
    refuse_nested_values(frame, required_columns, source=text)
    return _integers_stay_integers(frame)


def refuse_nested_values(frame: pd.DataFrame, columns: Sequence[str], *, source: str) -> None:
    """Refuse a JSON object or list (or a parquet list) where a column needs one value.

    Text, labels and groups are single values; an object would otherwise be audited
    as its Python text (``"{'a': 1}"``).
    """
    for column in dict.fromkeys(columns):
        values = frame[column]
        if values.dtype != object:
            continue
        for row, value in enumerate(values.tolist()):
            if isinstance(value, dict | list | tuple | np.ndarray):
                kind = "object" if isinstance(value, dict) else "list"
                raise DataError(
                    f"{source}: column {column!r} {row_location(values, row)} holds a JSON "
                    f"{kind}; each value must be text, a number or empty"
                )


def _integers_stay_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns that are integers with gaps (JSON/parquet ints with nulls) back to ints.

    A JSON column ``1, null, 2`` reads as floats ``1.0, NaN, 2.0``; as a group column it
    would show as ``"1.0"`` and ``"2.0"``. Such a column becomes Python integers with
    NaN for the missing values (which stay missing).
    """
    out = None
    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind != "f" or not values.isna().any():
            continue
        present = values.dropna()
        if present.empty or not (np.isfinite(present) & (present == np.round(present))).all():
            continue
        if out is None:
            out = frame.copy()
            out.attrs = dict(frame.attrs)
        converted = [int(v) if v == v else np.nan for v in values.tolist()]
        out[column] = pd.Series(converted, index=values.index, dtype=object)
    return frame if out is None else out


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
        raise DataError(
            f"{source}: column {column!r} has a missing label at {row_location(values, row)}"
        )
    name_to_index = {str(name): i for i, name in enumerate(labels)}
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values.tolist()):
        key = str(value).strip()
        if not key and "" not in name_to_index:  # an empty CSV cell (read as text, not NaN)
            raise DataError(
                f"{source}: column {column!r} has a missing label at {row_location(values, row)}"
            )
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
        raise DataError(
            f"{source}: column {column!r} {row_location(values, row)} has label {value!r}; "
            f"allowed: {', '.join(labels)} or an index 0..{len(labels) - 1}"
        )
    return out


def check_sensitive_columns(
    frame: pd.DataFrame,
    columns: Sequence[str],
    *,
    source: str,
    reference_group: str | Mapping[str, str] | None = None,
    allow_missing: Sequence[str] = (),
) -> None:
    """Refuse a sensitive feature column with a missing value or a single group.

    ``reference_group`` (a group name, or ``between_groups``) must be a group of every
    column; a mapping ``{feature: group}`` names one group per feature. Columns in
    ``allow_missing`` (bias-audit categories) may hold missing values; the caller then
    fills them with :func:`fill_missing_groups` before group fairness metrics.
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
        missing = _missing(values)
        if column in allow_missing and missing.any():
            if (text[~missing] == MISSING_GROUP).any():
                raise DataError(
                    f"{source}: sensitive feature column {column!r} has missing values and "
                    f"also the value {MISSING_GROUP!r}, the name given to missing values; "
                    "rename that value"
                )
            text = text[~missing]
            if text.empty:
                raise DataError(
                    f"{source}: sensitive feature column {column!r} has no value in any row; "
                    "a fairness comparison needs at least two groups"
                )
        elif missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{source}: sensitive feature column {column!r} has a missing value at "
                f"{row_location(values, row)}; "
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


def fill_missing_groups(
    frame: pd.DataFrame, columns: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Give missing values (NaN, empty or blank text) of ``columns`` the group ``(missing)``.

    Returns
    -------
    (frame, counts)
        A copy of ``frame`` with the values filled, and the number filled per column
        (columns without missing values left out).
    """
    out = frame.copy()
    counts = {}
    for column in columns:
        values = out[column]
        missing = _missing(values)
        if missing.any():
            counts[column] = int(missing.sum())
            out[column] = values.astype(object).where(~missing, MISSING_GROUP)
    return out, counts


def _missing(values: pd.Series) -> np.ndarray:
    """``(n,)`` bool: the value is NaN/None, empty or blank text."""
    return values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()


def row_location(values: pd.Series | pd.DataFrame, row: int) -> str:
    """Where row ``row`` (0-based position) came from: ``line N`` of its file, else ``row N``.

    ``row N`` counts data rows from 1 (for generated or Hub data without file lines).
    """
    lines = values.attrs.get("line_numbers") if hasattr(values, "attrs") else None
    if lines is not None:
        try:
            label = values.index[row]
            return f"line {int(lines[label])}"
        except (IndexError, KeyError, TypeError, ValueError):
            pass
    return f"row {row + 1}"


def check_group_column(frame: pd.DataFrame, column: str, *, source: str) -> None:
    """Refuse a counterfactual ``group_column`` with a missing or empty value.

    A missing value would otherwise become a group named ``"nan"`` or ``""``.
    """
    values = frame[column]
    missing = _missing(values)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{source}: counterfactual group column {column!r} has a missing value at "
            f"{row_location(values, row)}; "
            "every row needs a group (empty cells are not allowed)"
        )


def _check_path(path: Path) -> str:
    """Refuse a missing path, a folder or an unsupported suffix; return the suffix."""
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a data file ({_suffix_list()})")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path}: unsupported data file type {suffix!r}; allowed: {_suffix_list()}")
    return suffix


def _load_file(path: Path) -> pd.DataFrame:
    suffix = _check_path(path)
    builder = SUPPORTED_SUFFIXES[suffix]
    # A text file with no line past the CSV header holds no rows.
    no_rows = path.stat().st_size == 0
    if suffix != ".parquet":
        no_rows = _check_utf8(path) <= (1 if builder == "csv" else 0)
    if no_rows:
        raise _empty_data(path)
    if builder == "csv":
        frame = _read_csv(path, tsv=suffix == ".tsv")
    elif builder == "json":
        frame = _read_json(path)
    else:
        frame = _read_parquet(path)
    _refuse_duplicate_columns(path, [str(c) for c in frame.columns])
    return frame


def read_columns(source: str | Path) -> list[str] | None:
    """Column names of a data file, read cheaply and without any model.

    CSV/TSV: the header line only; parquet: the schema only; JSON: the keys of its
    records (JSON has no header). Generated ``builtin:`` tables are built (they are
    small); ``hf:`` datasets give None (they need the network). Raises a
    :class:`DataError` like :func:`load_table` for a missing, unsupported, empty or
    unreadable file, or duplicate column names.
    """
    text = str(source)
    if text.startswith("hf:"):
        return None
    if text.startswith("builtin:"):
        return [str(c) for c in load_table(text).columns]
    path = Path(text)
    suffix = _check_path(path)
    if path.stat().st_size == 0:
        raise _empty_data(path)
    builder = SUPPORTED_SUFFIXES[suffix]
    if builder == "parquet":
        names = list(_parquet(path, "read_schema").names)
    elif builder == "csv":
        names = _csv_header(path, tsv=suffix == ".tsv")
    else:  # JSON has no header: the union of the keys, in order of first appearance
        frame = _read_json(path)
        names = [str(c) for c in frame.columns]
    _refuse_duplicate_columns(path, names)
    return names


def _refuse_duplicate_columns(path: Path, names: Sequence[str]) -> None:
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise DataError(
            f"{path}: column name {repeated[0]!r} appears more than once in the header; "
            "give every column a distinct name"
        )


def _csv_reader(handle, *, tsv: bool):
    return csv.reader(handle, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else 0)


def _csv_header(path: Path, *, tsv: bool) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        for record in _csv_reader(handle, tsv=tsv):
            if record:
                return [name.strip() for name in record]
    return []


def _csv_line_numbers(path: Path, *, tsv: bool) -> list[int]:
    """The file line where each data record starts (blank lines skipped, like pandas)."""
    starts: list[int] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = _csv_reader(handle, tsv=tsv)
        try:
            while True:
                before = reader.line_num
                record = next(reader)
                if record and any(field != "" for field in record) or len(record) > 1:
                    starts.append(before + 1)
        except (StopIteration, csv.Error):
            pass
    return starts[1:]  # the first record is the header


def _read_csv(path: Path, *, tsv: bool) -> pd.DataFrame:
    header = _csv_header(path, tsv=tsv)
    _refuse_duplicate_columns(path, header)  # pandas would rename the second to "name.1"
    try:
        frame = pd.read_csv(
            path,
            sep="\t" if tsv else ",",
            quoting=3 if tsv else 0,  # GLUE TSVs hold bare quotes
            keep_default_na=False,  # "NA" or "null" in a sentence is not a missing value
            encoding="utf-8",
            dtype=None,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise DataError(f"{path}: could not be read as {path.suffix[1:]}: {message}") from None
    lines = _csv_line_numbers(path, tsv=tsv)
    if len(lines) == len(frame):
        frame.attrs["line_numbers"] = lines
    return frame


def _json_record(path: Path, line_number: int, line: str) -> dict:
    try:
        record = json.loads(line, parse_constant=_refuse_json_constant)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: line {line_number} is not valid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: line {line_number} is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise DataError(
            f"{path}: line {line_number} holds a JSON {type(record).__name__}; each line must "
            "be one JSON object such as {\"text\": \"...\", \"label\": \"...\"}"
        )
    _refuse_lone_surrogate(record, f"{path}: line {line_number}")
    return record


def _refuse_json_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (use null for a missing value)")


def _refuse_lone_surrogate(value, where: str) -> None:
    """Refuse a string (key or value, at any depth) holding half of a UTF-16 pair."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            for char in item:
                if "\ud800" <= char <= "\udfff":
                    raise DataError(
                        f"{where} holds a lone surrogate escape \\u{ord(char):04x} (half of a "
                        "UTF-16 pair, not a character); fix the text or remove the escape"
                    )
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _read_json(path: Path) -> pd.DataFrame:
    with path.open(encoding="utf-8") as handle:
        first = handle.read(4096).lstrip()
    if first.startswith("["):  # one JSON array of objects
        records = _json_record_list(path)
        lines = None
    else:  # JSON lines: one object per line
        records, lines = [], []
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    records.append(_json_record(path, line_number, line))
                    lines.append(line_number)
    frame = pd.DataFrame.from_records(records)
    if lines is not None:
        frame.attrs["line_numbers"] = lines
    return frame


def _json_record_list(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text, parse_constant=_refuse_json_constant)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not all(isinstance(item, dict) for item in data):
        raise DataError(f"{path}: a JSON array of data must hold one object per example")
    for index, item in enumerate(data):
        _refuse_lone_surrogate(item, f"{path}: example {index + 1}")
    return data


def _parquet(path: Path, reader: str):
    """``pyarrow.parquet.<reader>(path)`` (``read_table``, ``read_schema``), one-line errors."""
    import pyarrow.parquet as pq

    try:
        return getattr(pq, reader)(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: could not be read as parquet: {_root_cause(exc)}") from None


def _read_parquet(path: Path) -> pd.DataFrame:
    table = _parquet(path, "read_table")
    _refuse_duplicate_columns(path, list(table.schema.names))
    return table.to_pandas()


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


def _empty_data(source: str | Path) -> DataError:
    return DataError(f"{source}: the data is empty (no rows); an audit needs at least one example")


def _suffix_list() -> str:
    return ", ".join(SUPPORTED_SUFFIXES)


def infer_labels(values: pd.Series, *, source: str | None = None,
                 column: str | None = None) -> list[str]:
    """Label names when the user gives none: ``0..max`` for integer labels, else sorted names."""
    clean = values.dropna()
    as_text = clean.astype(str).str.strip()
    if len(as_text) and as_text.str.fullmatch(r"\d+").all():
        numbers = sorted({int(value) for value in as_text})
        if numbers[0] != 0:  # `1, 2` would make a phantom class 0 (three labels, not two)
            shown = ",".join(str(n) for n in numbers[:10])
            where = f"{source}: column {column!r}" if source and column else "label column"
            raise DataError(
                f"{where} holds integer labels {shown} without 0; integer labels are "
                "class indices from 0: give the label names in index order (--labels "
                f"{shown} or model.labels) or relabel the classes 0..{len(numbers) - 1}"
            )
        return [str(i) for i in range(numbers[-1] + 1)]
    return sorted(as_text.unique().tolist())
