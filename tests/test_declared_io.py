"""Declared inputs and outputs (issue 22, items 4-7): every writer writes only what its
command declared, and the one check refuses any output that overlaps an input.

* the writers, run for real, write nothing they did not declare (a new output cannot
  be forgotten by the check);
* each overlap rule, by hand (symlinks, hard links, an owned folder holding an input,
  two outputs on one path);
* a Hypothesis property over random path layouts with symlinks and hard links: the
  check refuses exactly when a plain reference (``os.path.realpath`` and string
  prefixes) finds an overlap, and its message names both paths.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.errors import InputError
from promptaudit.paths import (
    DeclaredIO,
    OutputKind,
    check_declared_io,
    comparison_files,
    output_file,
    output_folder,
    owned_folder,
    plan_compare,
    plan_run,
    report_files,
)
from promptaudit.spec import load_spec

LABELS = ["negative", "positive"]
FIXTURES = Path(__file__).parent / "fixtures"


# ------------------------------------------------------------ what the writers wrote
def _written(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _undeclared(plan: DeclaredIO, written: list[Path]) -> list[Path]:
    """Files not declared as a file output and not inside a declared owned folder."""
    files = {os.path.realpath(o.path) for o in plan.outputs if o.kind is OutputKind.FILE}
    owned = [os.path.realpath(o.path) for o in plan.outputs
             if o.kind is OutputKind.OWNED_FOLDER]
    out = []
    for path in written:
        real = os.path.realpath(path)
        if real in files or any(real.startswith(folder + os.sep) for folder in owned):
            continue
        out.append(path)
    return out


@pytest.fixture(scope="module")
def audit_inputs(tmp_path_factory, tiny_bert_dir, tiny_bert_seqcls_adapter, sentences):
    folder = tmp_path_factory.mktemp("declared-io")
    rows = [{"sentence": sentences[i % len(sentences)], "label": LABELS[i % 2],
             "gender": ["female", "male"][(i // 2) % 2], "pair": i // 2} for i in range(24)]
    data = folder / "eval.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    return {"model": Path(tiny_bert_dir), "prompt": Path(tiny_bert_seqcls_adapter),
            "data": data, "folder": folder}


def _spec(inputs: dict, out_adapter: Path) -> dict:
    return {
        "name": "io",
        "seed": 0,
        "model": {"base": str(inputs["model"]), "task": "sequence-classification",
                  "labels": list(LABELS), "positive_label": "positive", "max_length": 16},
        "prompt": {"path": str(inputs["prompt"])},
        "data": {"path": str(inputs["data"]), "text_column": "sentence",
                 "label_column": "label", "sensitive_features": ["gender"]},
        "projection": {"top_k": 2, "fidelity": False},
        "attribution": {"n_steps": 2, "max_examples": 2},
        "fairness": {"bootstrap": 0, "min_group_size": 2},
        "baselines": {"projected": False, "init_text": False},
        "bias_audit": {"categories": ["gender"]},
        "mitigation": {"data": {"path": str(inputs["data"]), "text_column": "sentence",
                                "label_column": "label", "pair_column": "pair"},
                       "weights": [0.0], "epochs": 1, "batch_size": 8,
                       "max_accuracy_drop": 1.0, "out": str(out_adapter)},
        "gates": [{"metric": "demographic_parity_ratio", "min": 0.5}],
    }


def test_every_file_run_writes_was_declared(audit_inputs, tmp_path):
    """`run` with a bias audit and a mitigation section: reports, CSV, mitigated adapter."""
    out = tmp_path / "reports"
    adapter = tmp_path / "mitigated"
    spec_path = tmp_path / "audit.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(audit_inputs, adapter)), encoding="utf-8")
    outcome = CliRunner().invoke(app, ["run", str(spec_path), "--out", str(out)])
    assert outcome.exit_code in (0, 1), outcome.output
    written = _written(out) + _written(adapter)
    names = {p.name for p in written}
    assert {"io.json", "io.bias_audit.csv", "mitigation.json",
            "adapter_model.safetensors"} <= names  # the writers did run
    plan = plan_run(load_spec(spec_path), out, spec_path=spec_path)
    assert _undeclared(plan, written) == []
    # the report folder is a folder of declared files: every report file is declared one by one
    files = {o.path for o in plan.outputs if o.kind is OutputKind.FILE}
    assert all(p in files for p in _written(out))


def test_every_file_compare_writes_was_declared(tmp_path):
    sample = json.loads((FIXTURES / "sample_result.json").read_text())
    before = tmp_path / "before.json"
    before.write_text(json.dumps(sample))
    out = tmp_path / "cmp"
    outcome = CliRunner().invoke(app, ["compare", str(before), str(before), "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    written = _written(out)
    assert len(written) == 3
    assert _undeclared(plan_compare(before, before, out), written) == []
    assert set(written) == set(comparison_files(out).values())


def test_every_file_train_and_predict_write_was_declared(audit_inputs, tmp_path):
    from promptaudit.paths import plan_predict, plan_train

    adapter = tmp_path / "adapter"
    trained = CliRunner().invoke(app, [
        "train", "--model", str(audit_inputs["model"]), "--data", str(audit_inputs["data"]),
        "--text-column", "sentence", "--label-column", "label", "--out", str(adapter),
        "--epochs", "1", "--num-virtual-tokens", "2", "--max-length", "16"])
    assert trained.exit_code == 0, trained.output
    plan = plan_train(adapter, data=audit_inputs["data"], model=audit_inputs["model"])
    assert _written(adapter) and _undeclared(plan, _written(tmp_path)) == []
    predictions = tmp_path / "p" / "predictions.csv"
    predicted = CliRunner().invoke(app, [
        "predict", "--model", str(audit_inputs["model"]), "--prompt", str(adapter),
        "--data", str(audit_inputs["data"]), "--text-column", "sentence",
        "--out", str(predictions), "--max-length", "16"])
    assert predicted.exit_code == 0, predicted.output
    plan = plan_predict(predictions, data=audit_inputs["data"], prompt=adapter,
                        model=audit_inputs["model"])
    assert _written(tmp_path / "p") == [predictions]
    assert _undeclared(plan, _written(tmp_path / "p")) == []


def test_report_writer_refuses_an_undeclared_report_kind(monkeypatch, tmp_path):
    """A writer that gains a document kind without declaring it fails loudly, writes nothing."""
    import promptaudit.report._writer as writer

    sample = json.loads((FIXTURES / "sample_result.json").read_text())
    monkeypatch.setattr(writer, "report_files",
                        lambda out, name: {k: v for k, v in report_files(out, name).items()
                                           if k != "junit"})
    with pytest.raises(RuntimeError, match="not declared"):
        writer.write_reports(sample, tmp_path / "r", name="x")
    assert not (tmp_path / "r").exists()


def test_report_files_name_every_report_kind():
    from promptaudit.report._writer import BIAS_AUDIT_SUFFIX, REPORT_SUFFIXES

    files = report_files("out", "n")
    assert {files[k].name for k in REPORT_SUFFIXES} == {"n.html", "n.json", "n.junit.xml", "n.md"}
    assert files["bias_audit"].name == "n" + BIAS_AUDIT_SUFFIX == "n.bias_audit.csv"
    assert files["journal"].name == ".n.reports-pending.json"


# ------------------------------------------------------------- the rules, by hand
def _refused(plan: DeclaredIO) -> str | None:
    try:
        check_declared_io(plan)
    except InputError as exc:
        return str(exc)
    return None


def test_owned_folder_holding_an_input_is_refused(tmp_path):
    data = tmp_path / "d" / "train.csv"
    data.parent.mkdir()
    data.write_text("x")
    message = _refused(DeclaredIO("mitigate", {"data file": data},
                                  (owned_folder("--out", tmp_path / "d"),)))
    assert message and "contains the data file" in message and str(data) in message
    # a report folder (declared files only) may hold its data
    assert _refused(DeclaredIO("run", {"data file": data},
                               (output_folder("--out", tmp_path / "d"),))) is None


def test_hard_link_and_symlink_to_an_input_are_refused(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("x")
    hard = tmp_path / "hard.csv"
    os.link(data, hard)
    soft = tmp_path / "soft.csv"
    soft.symlink_to(data)
    for alias in (hard, soft):
        message = _refused(DeclaredIO("predict", {"data file": data},
                                      (output_file("--out", alias),)))
        assert message and "is the data file" in message
        assert str(alias) in message and str(data) in message


def test_two_outputs_on_one_path_or_nested_in_an_owned_folder_are_refused(tmp_path):
    adapter = tmp_path / "a"
    same = _refused(DeclaredIO("run", {}, (owned_folder("prompt.train.out", adapter),
                                           owned_folder("mitigation.out", adapter))))
    assert same and "mitigation.out" in same and "prompt.train.out" in same
    nested = _refused(DeclaredIO("run", {}, (output_folder("--out", adapter / "reports"),
                                             owned_folder("mitigation.out", adapter))))
    assert nested and "lies inside mitigation.out" in nested
    # an adapter folder inside the report folder is fine
    assert _refused(DeclaredIO("run", {}, (output_folder("--out", tmp_path),
                                           owned_folder("mitigation.out", adapter)))) is None


# ----------------------------------------------------- the property: random layouts
#: Paths a layout may hold, relative to its root (parents before children).
POOL = ["a", "a/b", "a/b/c", "a/f", "x", "x/y", "x/g", "z"]
ENTRY = st.sampled_from(["absent", "dir", "file", "symlink", "hardlink"])


def _build(root: Path, kinds: dict[str, str], targets: dict[str, str]) -> None:
    for rel in POOL:  # parents first: a child of a non-folder is skipped
        path = root / rel
        if not path.parent.is_dir() or path.parent.is_symlink() or os.path.lexists(path):
            continue
        kind, target = kinds[rel], root / targets[rel]
        if kind == "dir":
            path.mkdir()
        elif kind == "file":
            path.write_text(rel)
        elif kind == "symlink" and target != path:
            path.symlink_to(target)
        elif kind == "hardlink" and target.is_file() and not target.is_symlink():
            os.link(target, path)


def _reference_overlap(output: str, kind: OutputKind, inputs: list[str]) -> bool:
    """Plain reference: realpath strings, prefixes and inode numbers."""
    out_real = os.path.realpath(output)
    for source in inputs:
        if not os.path.lexists(source):
            continue  # an input that does not exist (a Hub id) is skipped
        real = os.path.realpath(source)
        if out_real == real:
            return True
        if os.path.exists(output) and os.path.exists(source):
            a, b = os.stat(output), os.stat(source)
            if (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev):
                return True
        if os.path.isdir(real) and out_real.startswith(real.rstrip(os.sep) + os.sep):
            return True
        if kind is OutputKind.OWNED_FOLDER and real.startswith(out_real.rstrip(os.sep) + os.sep):
            return True
    return False


@given(
    kinds=st.fixed_dictionaries({rel: ENTRY for rel in POOL}),
    targets=st.fixed_dictionaries({rel: st.sampled_from(POOL) for rel in POOL}),
    inputs=st.lists(st.sampled_from(POOL), min_size=1, max_size=3, unique=True),
    output=st.sampled_from([*POOL, "a/new", "x/y/new", "new"]),
    kind=st.sampled_from(list(OutputKind)),
)
def test_property_check_refuses_iff_outputs_overlap_inputs(kinds, targets, inputs, output, kind):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(os.path.realpath(tmp))
        _build(root, kinds, targets)
        named = {f"input {i}": str(root / rel) for i, rel in enumerate(inputs)}
        out_path = root / output
        message = _refused(DeclaredIO("cmd", named, (
            {OutputKind.FILE: output_file, OutputKind.FOLDER: output_folder,
             OutputKind.OWNED_FOLDER: owned_folder}[kind]("--out", out_path),)))
        expected = _reference_overlap(str(out_path), kind, list(named.values()))
        assert (message is not None) == expected, (kinds, targets, inputs, output, kind, message)
        if message is not None:  # one line naming both paths
            assert "\n" not in message and str(out_path) in message
            assert any(path in message for path in named.values())
        shutil.rmtree(root, ignore_errors=True)
