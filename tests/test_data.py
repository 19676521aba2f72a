"""Data tables: every supported format, label encoding, and errors naming the culprit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from promptaudit.data import encode_labels, infer_labels, load_table, read_columns
from promptaudit.errors import DataError

ROWS = [
    {"sentence": "a good film", "label": "positive", "group": "x"},
    {"sentence": 'an "awful", boring plot', "label": "negative", "group": "y"},
    {"sentence": "NA", "label": "positive", "group": "x"},
]


def _write(path, rows=ROWS):
    frame = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        # GLUE style: tab separated, quotes left bare
        lines = ["\t".join(frame.columns)]
        lines += ["\t".join(map(str, row)) for row in frame.itertuples(index=False)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".parquet":
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_loads_the_same_table(tmp_path, suffix):
    path = _write(tmp_path / f"data{suffix}")
    frame = load_table(path, required_columns=["sentence", "label"])
    assert frame["sentence"].tolist() == [r["sentence"] for r in ROWS]  # "NA" stays text
    assert frame["label"].tolist() == ["positive", "negative", "positive"]
    assert list(frame.columns) == ["sentence", "label", "group"]


def test_label_names_and_integer_indices():
    labels = ["negative", "positive"]
    by_name = encode_labels(
        pd.Series(["positive", "negative", " positive "]), labels, source="f.csv", column="label"
    )
    by_index = encode_labels(pd.Series([1, 0, 1]), labels, source="f.csv", column="label")
    by_text_index = encode_labels(pd.Series(["1", "0", "1.0"]), labels, source="f", column="y")
    for encoded in (by_name, by_index, by_text_index):
        np.testing.assert_array_equal(encoded, [1, 0, 1])
        assert encoded.dtype == np.int64


def test_integer_label_column_from_a_file(tmp_path):
    path = tmp_path / "ints.csv"
    path.write_text("text,y\nhello,1\nbye,0\n", encoding="utf-8")
    frame = load_table(path)
    np.testing.assert_array_equal(
        encode_labels(frame["y"], ["neg", "pos"], source=str(path), column="y"), [1, 0]
    )
    assert infer_labels(frame["y"]) == ["0", "1"]
    assert infer_labels(pd.Series(["b", "a", "b"])) == ["a", "b"]


@pytest.mark.parametrize("value", ["neutral", 2, -1, "1.5"])
def test_label_outside_the_label_set(value):
    with pytest.raises(DataError) as info:
        encode_labels(
            pd.Series(["positive", value]),
            ["negative", "positive"],
            source="train.csv",
            column="label",
        )
    message = str(info.value)
    assert message.startswith("train.csv: column 'label' row 2 has label ")  # counted from 1
    assert repr(value) in message
    assert "allowed: negative, positive or an index 0..1" in message


def test_missing_label_value():
    with pytest.raises(DataError, match="column 'label' has a missing label at row 2"):
        encode_labels(
            pd.Series(["positive", None]), ["negative", "positive"], source="f.csv", column="label"
        )


def test_missing_column_names_file_column_and_alternatives(tmp_path):
    path = _write(tmp_path / "data.csv")
    with pytest.raises(DataError) as info:
        load_table(path, required_columns=["sentence", "text"])
    assert str(info.value) == (
        f"{path}: column 'text' not found; available columns: sentence, label, group"
    )


@pytest.mark.parametrize("content", ["", "sentence,label\n"], ids=["zero-bytes", "header-only"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.csv: the data is empty"):
        load_table(path)


def test_empty_jsonl(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="the data is empty"):
        load_table(path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("sentence,label\nok,1\ncaf\u00e9,0\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_table(path)
    assert str(info.value).startswith(f"{path}: line 3 is not valid UTF-8")
    assert "save the file as UTF-8" in str(info.value)


def test_missing_file_directory_and_unsupported_type(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: data file not found"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_table(tmp_path)
    xlsx = tmp_path / "data.xlsx"
    xlsx.write_bytes(b"x")
    with pytest.raises(DataError, match=r"unsupported data file type '\.xlsx'; allowed: "):
        load_table(xlsx)


def test_unparseable_jsonl(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"sentence": "a"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        load_table(path)


# ------------------------------------------------- file lines, duplicates, no network
def test_label_error_names_the_file_line_counted_from_one(tmp_path):
    path = tmp_path / "quoted.csv"  # row 0 spans lines 2-3 (a quoted newline), row 2 is line 6
    path.write_text('sentence,label\n"two\nlines",positive\nok,negative\n\nbad,neutral\n',
                    encoding="utf-8")
    frame = load_table(path)
    assert frame["sentence"].tolist() == ["two\nlines", "ok", "bad"]
    with pytest.raises(DataError) as info:
        encode_labels(frame["label"], ["negative", "positive"], source=str(path),
                      column="label")
    assert f"{path}: column 'label' line 6 has label 'neutral'" in str(info.value)


def test_jsonl_label_error_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"t": "a", "y": "positive"}\n\n{"t": "b", "y": "maybe"}\n',
                    encoding="utf-8")
    frame = load_table(path)
    with pytest.raises(DataError, match="column 'y' line 3 has label 'maybe'"):
        encode_labels(frame["y"], ["negative", "positive"], source=str(path), column="y")


def test_duplicate_csv_column_names_are_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("sentence,gender,gender\nok,f,m\n", encoding="utf-8")
    for read in (load_table, read_columns):
        with pytest.raises(DataError) as info:
            read(path)
        assert str(info.value) == (f"{path}: column name 'gender' appears more than once in the "
                                   "header; give every column a distinct name")


def test_lone_surrogate_in_jsonl_names_the_line_and_the_problem(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "bad \\ud800 half"}\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_table(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 2 holds a lone surrogate escape \\ud800")
    assert "Trailing data" not in message


def test_json_array_file_and_nan_literal(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    assert load_table(path)["sentence"].tolist() == [r["sentence"] for r in ROWS]
    bad = tmp_path / "n.jsonl"
    bad.write_text('{"text": NaN}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1 is not valid JSON: NaN"):
        load_table(bad)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_read_columns_reads_the_header_only(tmp_path, suffix):
    path = _write(tmp_path / f"data{suffix}")
    assert read_columns(path) == ["sentence", "label", "group"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_local_files_open_no_socket(tmp_path, suffix, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network attempt while reading a local file: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    path = _write(tmp_path / f"data{suffix}")
    assert len(load_table(path)) == len(ROWS)


# ---------------------------------------------------------------- issue 22 (smaller items)
def test_integer_group_column_with_blanks_keeps_integers(tmp_path):
    """JSON ints with a null read as 1.0/NaN/2.0; groups must show as "1" and "2"."""
    from promptaudit.data import fill_missing_groups, load_table

    path = tmp_path / "g.jsonl"
    path.write_text('{"text": "a", "g": 1}\n{"text": "b", "g": null}\n{"text": "c", "g": 2}\n',
                    encoding="utf-8")
    frame = load_table(path, required_columns=["text", "g"])
    filled, counts = fill_missing_groups(frame, ["g"])
    assert filled["g"].astype(str).tolist() == ["1", "(missing)", "2"]
    assert counts == {"g": 1}
    assert frame.attrs.get("line_numbers") == [1, 2, 3]  # kept for messages


def test_real_fractions_stay_floats(tmp_path):
    from promptaudit.data import load_table

    path = tmp_path / "g.jsonl"
    path.write_text('{"text": "a", "s": 0.5}\n{"text": "b", "s": null}\n', encoding="utf-8")
    assert load_table(path)["s"].dtype.kind == "f"


def test_integer_labels_must_start_at_zero():
    import pandas as pd

    from promptaudit.data import infer_labels
    from promptaudit.errors import DataError

    assert infer_labels(pd.Series(["0", "1", "1"])) == ["0", "1"]
    with pytest.raises(DataError, match="integer labels 1,2 without 0"):
        infer_labels(pd.Series([1, 2, 1]), source="d.csv", column="label")
