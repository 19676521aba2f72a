"""Crash safety: a result is never lost or half-written, and training resumes after a kill.

* Reports are written to a temporary file in the same folder and renamed over the old
  one (``os.replace``): a hard link to the previous report keeps its old bytes, and a
  failure part-way leaves no temporary file behind.
* ``promptaudit run`` killed with SIGKILL while it computes leaves the previous report
  byte-identical and no stray file in the report folder.
* ``promptaudit train`` writes a checkpoint per epoch; killed during an epoch, ``--resume``
  finishes the job and gives the same prompt as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.report import write_reports

PREVIOUS = {
    "crash.json": b'{"previous": "result"}\n',
    "crash.html": b"<html>previous report</html>\n",
    "crash.junit.xml": b"<testsuites/>\n",
    "crash.md": b"previous summary\n",
}
#: Child processes run single-threaded: less contention with the test process on 2 cores.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
RESULT = {"schema_version": "1", "audit": {"name": "crash"}, "gates": [], "passed": True,
          "task": {"n_examples": 1}, "provenance": {}, "fairness": {}}


def _plant_previous(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in PREVIOUS.items():
        (folder / name).write_bytes(content)


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------ temp file + rename
def test_reports_are_written_to_a_temp_file_and_renamed(tmp_path, monkeypatch):
    out = tmp_path / "reports"
    _plant_previous(out)
    links = {}
    for name in PREVIOUS:  # a reader holding the old file keeps seeing the old bytes
        links[name] = tmp_path / f"link-{name}"
        os.link(out / name, links[name])
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        renames.append((Path(src), Path(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    paths = write_reports(RESULT, out, name="crash")
    journal = out / ".crash.reports-pending.json"  # the set's commit record, written first
    assert renames[0][1] == journal and not journal.exists()
    renames = [(src, dst) for src, dst in renames if dst != journal]
    assert {dst for _, dst in renames} == set(paths.values())
    for src, dst in renames:
        assert src.parent == dst.parent == out  # same folder: the rename is atomic
        assert src.name.startswith(".") and src.name.endswith(".tmp") and not src.exists()
    for name, link in links.items():
        assert link.read_bytes() == PREVIOUS[name]  # replaced, never rewritten in place
        assert (out / name).read_bytes() != PREVIOUS[name]
    assert json.loads((out / "crash.json").read_text())["audit"]["name"] == "crash"
    assert sorted(p.name for p in out.iterdir()) == sorted(PREVIOUS)


def test_a_failing_rename_finishes_the_whole_set_and_leaves_no_temp_files(tmp_path,
                                                                          monkeypatch):
    """One rename fails (once): the writer rolls forward; never a mix of old and new files."""
    out = tmp_path / "reports"
    _plant_previous(out)
    real_replace = os.replace
    calls = []

    def failing(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:  # the journal, one report, then this one fails
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    paths = write_reports(RESULT, out, name="crash")
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in out.iterdir()) == sorted(PREVIOUS)  # no .tmp, no journal
    complete = write_reports(RESULT, tmp_path / "complete", name="crash")
    fresh = _listing(out)
    for kind, path in paths.items():  # every file new, all from the same result
        assert fresh[path.name] == complete[kind].read_bytes() != PREVIOUS[path.name]


class _Killed(BaseException):
    """Stands for the process dying: nothing after it runs, no clean-up."""


def test_a_crash_between_renames_is_completed_and_gate_refuses_the_mix(tmp_path, monkeypatch):
    out = tmp_path / "reports"
    _plant_previous(out)
    real_replace = os.replace
    calls = []

    def dying(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:  # killed after the first report file was switched
            raise _Killed
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", dying)
    with pytest.raises(_Killed):
        write_reports(RESULT, out, name="crash")
    monkeypatch.setattr(os, "replace", real_replace)
    journal = out / ".crash.reports-pending.json"
    assert journal.exists()  # the set is recorded as pending: a mix is visible as such
    gate = CliRunner().invoke(app, ["gate", str(out / "crash.json")])
    assert gate.exit_code == 2, gate.output
    assert "interrupted" in gate.stderr and "crash" in gate.stderr
    # the next write finishes the switch (here: completes it explicitly)
    from promptaudit.report import complete_pending_reports

    assert complete_pending_reports(out, "crash")
    complete = write_reports(RESULT, tmp_path / "complete", name="crash")
    assert _listing(out) == {p.name: p.read_bytes() for p in complete.values()}


def test_a_switch_that_cannot_finish_stays_pending_and_the_next_write_completes_it(
        tmp_path, monkeypatch):
    from promptaudit.errors import InputError

    out = tmp_path / "reports"
    _plant_previous(out)
    real_replace = os.replace
    calls = []

    def broken_disk(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) > 2:  # the journal and one report land; then every rename fails
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", broken_disk)
    with pytest.raises(InputError, match="could not be moved into place .*stays pending"):
        write_reports(RESULT, out, name="crash")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (out / ".crash.reports-pending.json").exists()
    assert CliRunner().invoke(app, ["gate", str(out / "crash.json")]).exit_code == 2
    newer = {**RESULT, "task": {"n_examples": 2}}
    paths = write_reports(newer, out, name="crash")  # finishes the old switch, then writes
    complete = write_reports(newer, tmp_path / "complete", name="crash")
    assert _listing(out) == {p.name: p.read_bytes() for p in complete.values()}
    assert set(paths) == set(complete)


def test_stale_temp_files_of_a_killed_writer_are_swept_on_the_next_write(tmp_path):
    out = tmp_path / "reports"
    _plant_previous(out)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = out / f".crash.html.{dead.stdout.strip()}-deadbeef.tmp"  # our naming, dead pid
    stale.write_text("half a report")
    os.utime(stale, (time.time() - 120, time.time() - 120))  # killed two minutes ago
    fresh_dead = out / f".crash.junit.xml.{dead.stdout.strip()}-f00d.tmp"
    fresh_dead.write_text("a writer elsewhere, just now")  # under a minute old: kept
    old = out / ".crash.md.1-cafe.tmp"
    old.write_text("older than a day")
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    live = out / f".crash.json.{os.getpid()}-abcd.tmp"  # a writer still running: kept
    live.write_text("{}")
    someone_elses = out / ".notes.tmp"  # not our naming: never touched
    someone_elses.write_text("x")
    write_reports(RESULT, out)  # the name comes from the result
    names = {p.name for p in out.iterdir()}
    assert stale.name not in names and old.name not in names
    assert {live.name, someone_elses.name, fresh_dead.name} <= names


def test_a_rendering_error_leaves_every_previous_report(tmp_path, monkeypatch):
    import promptaudit.report._writer as writer

    out = tmp_path / "reports"
    _plant_previous(out)

    def broken(result):
        raise RuntimeError("template bug")

    monkeypatch.setattr(writer, "render_markdown", broken)
    with pytest.raises(RuntimeError):
        write_reports(RESULT, out, name="crash")
    assert _listing(out) == PREVIOUS


# ------------------------------------------------------------------ kill a run
def _wait_for_line(process: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """Read the child's stderr until a line holds ``needle``; return the lines read."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line.rstrip())
        if needle in line:
            return seen
    raise AssertionError(f"never saw {needle!r}; stderr: {seen[-20:]}")


def test_a_killed_run_leaves_the_previous_report_intact(tmp_path, tiny_bert_dir, sentences):
    save_file({"prompt": torch.randn(4, 32)}, str(tmp_path / "prompt.safetensors"))
    rows = [{"sentence": sentences[i % len(sentences)], "label": i % 2,
             "gender": ["f", "m"][(i // 2) % 2]} for i in range(400)]
    pd.DataFrame(rows).to_csv(tmp_path / "eval.csv", index=False)
    spec = {
        "name": "crash",
        "model": {"base": str(tiny_bert_dir), "task": "sequence-classification",
                  "allow_untrained_head": True,  # a bare prompt on the head-less tiny BERT
                  "labels": ["no", "yes"], "max_length": 24},
        "prompt": {"path": "prompt.safetensors"},
        "data": {"path": "eval.csv", "text_column": "sentence", "label_column": "label",
                 "sensitive_features": ["gender"]},
        "attribution": {"n_steps": 64, "max_examples": 200},
        "fairness": {"bootstrap": 2000, "min_group_size": 2},
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    out = tmp_path / "reports"
    _plant_previous(out)
    process = subprocess.Popen(
        [sys.executable, "-m", "promptaudit", "run", str(tmp_path / "audit.yaml"),
         "--out", str(out), "--verbose"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    try:
        _wait_for_line(process, "predicting 400 examples", timeout=240)
        process.send_signal(signal.SIGKILL)  # mid-computation: no chance to clean up
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL  # it was still working when killed
    assert _listing(out) == PREVIOUS  # previous report intact, no temp or partial file


# --------------------------------------------------------- kill training, resume
def test_training_killed_mid_epoch_resumes_from_the_last_checkpoint(tmp_path, tiny_bert_dir):
    positive, negative = ["good", "great", "fun", "loved"], ["bad", "awful", "boring", "hated"]
    rows = [{"sentence": f"the movie was really {(positive if i % 2 else negative)[i % 4]}",
             "label": "positive" if i % 2 else "negative"} for i in range(40)]
    data = tmp_path / "train.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    common = ["--model", str(tiny_bert_dir), "--data", str(data), "--text-column", "sentence",
              "--label-column", "label", "--num-virtual-tokens", "3", "--init", "random",
              "--batch-size", "4", "--epochs", "4", "--max-length", "12"]
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "promptaudit", "train", *common, "--out", str(interrupted)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    first = interrupted / ".checkpoints" / "epoch-0001" / "trainer_state.json"
    try:
        deadline = time.monotonic() + 240
        while not first.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert first.exists(), "no checkpoint after the first epoch"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not (interrupted / "adapter_model.safetensors").exists()  # it did not finish

    runner = CliRunner()
    resumed = runner.invoke(app, ["train", *common, "--out", str(interrupted), "--resume"],
                            catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    history = json.loads((interrupted / "training_info.json").read_text())["history"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3, 4]
    assert "epoch 4: train loss" in resumed.stdout

    straight = tmp_path / "straight"
    result = runner.invoke(app, ["train", *common, "--out", str(straight)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = load_file(str(interrupted / "adapter_model.safetensors"))
    want = load_file(str(straight / "adapter_model.safetensors"))
    assert got.keys() == want.keys()
    for key in want:  # resuming is the same as never stopping
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6)
