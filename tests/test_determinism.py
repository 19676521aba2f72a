"""Determinism and provenance: the same audit gives the same bytes; every hash can be recomputed.

Two runs of one audit (a tiny BERT, a ``.safetensors`` prompt, a small CSV, a small
bootstrap, counterfactuals and attribution on) - one in a fresh interpreter with another
``PYTHONHASHSEED``, one in this process - must write byte-identical result JSON apart
from ``provenance.created_at``. A reader holding the files must be able to recompute
every sha256 the provenance records and the ``integrity.content_sha256`` by the rule the
result states; ``promptaudit gate`` refuses a result edited after the audit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from promptaudit.cli import app

CREATED_AT = re.compile(r'"created_at": "[^"]*"')


@pytest.fixture(scope="module")
def audit(tmp_path_factory, tiny_bert_dir, sentences) -> Path:
    folder = tmp_path_factory.mktemp("determinism")
    save_file({"prompt": torch.randn(4, 32, generator=torch.Generator().manual_seed(7))},
              str(folder / "prompt.safetensors"))
    rows = []
    for i in range(24):
        pronoun = "she" if (i // 3) % 2 else "he"
        rows.append({"sentence": f"{pronoun} said {sentences[i % len(sentences)]}",
                     "label": ["negative", "positive"][i % 2],
                     "gender": ["female", "male"][(i // 3) % 2],
                     "age": ["young", "old", "mid"][i % 3]})
    pd.DataFrame(rows).to_csv(folder / "eval.csv", index=False)
    spec = {
        "name": "determinism", "seed": 3,
        "model": {"base": str(tiny_bert_dir), "task": "sequence-classification",
                  "allow_untrained_head": True,  # a bare prompt on the head-less tiny BERT
                  "labels": ["negative", "positive"], "positive_label": "positive",
                  "max_length": 24, "batch_size": 10},
        "prompt": {"path": "prompt.safetensors"},  # relative: resolved against this folder
        "data": {"path": "eval.csv", "text_column": "sentence", "label_column": "label",
                 "sensitive_features": ["gender", "age"]},
        "counterfactuals": {"suite": "builtin:identity", "features": ["gender"]},
        "projection": {"top_k": 3},
        "attribution": {"method": "integrated_gradients", "n_steps": 4, "max_examples": 3},
        # 95% intervals over the 6 gender x age cells (15 comparisons) need >= 600 resamples
        "fairness": {"bootstrap": 600, "min_group_size": 4},
        "gates": [{"metric": "demographic_parity_ratio", "min": 0.5},
                  {"metric": "equalized_odds_difference", "max": 0.3, "use_bound": True},
                  {"metric": "counterfactual_flip_rate", "max": 0.5}],
    }
    (folder / "audit.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return folder / "audit.yaml"


@pytest.fixture(scope="module")
def two_runs(audit, tmp_path_factory) -> tuple[Path, Path]:
    """The audit run twice, with the same command line, into two folders' ``reports/``.

    Run A: a fresh ``python -m promptaudit`` with PYTHONHASHSEED=12345 (another set and
    dict-of-str order). Run B: in this process, while A runs.
    """
    first = tmp_path_factory.mktemp("run-a")
    second = tmp_path_factory.mktemp("run-b")
    argv = ["run", str(audit), "--out", "reports"]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PROMPTAUDIT_DEBUG": "1"}
    process = subprocess.Popen([sys.executable, "-m", "promptaudit", *argv], cwd=first, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        saved_cwd, saved_argv = os.getcwd(), sys.argv
        os.chdir(second)
        sys.argv = ["promptaudit", *argv]  # the command line provenance records
        try:
            result = CliRunner().invoke(app, argv, catch_exceptions=False)
        finally:
            os.chdir(saved_cwd)
            sys.argv = saved_argv
        assert result.exit_code in (0, 1), result.output
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == result.exit_code, stderr
    return first / "reports", second / "reports"


def test_two_runs_give_byte_identical_json_apart_from_the_time(two_runs):
    first, second = (folder / "determinism.json" for folder in two_runs)
    a, b = first.read_text(encoding="utf-8"), second.read_text(encoding="utf-8")
    assert len(CREATED_AT.findall(a)) == 1
    assert CREATED_AT.sub('"created_at": ""', a) == CREATED_AT.sub('"created_at": ""', b)
    result = json.loads(a)
    # the result holds real, seeded numbers rather than agreeing by being empty
    # (the random head selects nobody, so the selection-rate ratios are undefined: 0/0;
    # the accuracy gap and its bootstrap interval are real, seeded numbers)
    low, high = result["fairness"]["by_feature"]["gender"]["disparity_intervals"][
        "accuracy_difference"]
    assert 0 <= low < high
    assert result["fairness"]["disparity_intervals"]["demographic_parity_ratio"] is None
    assert result["fairness"]["counterfactual"]["n_tuples"] > 0
    assert len(result["attribution"]["examples"]) == 3
    assert result["projection"]["fidelity"] is not None
    assert result["provenance"]["seed"] == 3
    assert json.loads(b)["integrity"] == result["integrity"]


def test_every_report_is_identical_apart_from_the_time(two_runs):
    for suffix in (".html", ".md", ".junit.xml"):  # figures included: PNGs carry no date
        first, second = ((folder / f"determinism{suffix}").read_text(encoding="utf-8")
                         for folder in two_runs)
        stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\+00:00|Z)?")
        assert stamp.sub("T", first) == stamp.sub("T", second), suffix


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_reader_can_recompute_every_hash(two_runs, audit, tiny_bert_dir):
    result = json.loads((two_runs[0] / "determinism.json").read_text(encoding="utf-8"))
    provenance = result["provenance"]

    prompt = provenance["prompt"]
    source = Path(prompt["source"])
    assert source == audit.parent / "prompt.safetensors"
    assert prompt["sha256"] == {"prompt.safetensors": _sha256(source)}

    data = provenance["data"]
    assert Path(data["source"]) == audit.parent / "eval.csv"
    assert data["sha256"] == _sha256(Path(data["source"]))

    model = provenance["model"]
    resolved = Path(model["resolved"])
    assert resolved == Path(tiny_bert_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(model["sha256"])
    for name, digest in model["sha256"].items():
        assert digest == _sha256(resolved / name), name

    # integrity.content_sha256, by the rule the result states in provenance.hash_algorithm
    rule = provenance["hash_algorithm"]
    assert "sorted-key compact JSON" in rule and "created_at" in rule and "integrity" in rule
    body = {key: value for key, value in result.items() if key != "integrity"}
    body["provenance"] = {k: v for k, v in provenance.items() if k != "created_at"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert result["integrity"] == {"algorithm": "sha256",
                                   "content_sha256": hashlib.sha256(canonical.encode()).hexdigest()}


def _gate(path: Path):
    return CliRunner().invoke(app, ["gate", str(path)], catch_exceptions=False)


def test_gate_accepts_the_untouched_result_and_a_reformatted_one(two_runs, tmp_path):
    original = two_runs[0] / "determinism.json"
    result = json.loads(original.read_text(encoding="utf-8"))
    outcome = _gate(original)
    assert outcome.exit_code == (0 if result["passed"] else 1), outcome.output
    assert f"({len(result['gates'])} checked)" in outcome.stdout
    reformatted = tmp_path / "compact.json"  # whitespace and key order carry no meaning
    reformatted.write_text(json.dumps(dict(reversed(list(result.items())))), encoding="utf-8")
    assert _gate(reformatted).exit_code == outcome.exit_code


@pytest.mark.parametrize("edit", ["number", "passed", "file-hash", "gate-threshold", "created-at"])
def test_gate_refuses_an_edited_result(edit, two_runs, tmp_path):
    result = json.loads((two_runs[0] / "determinism.json").read_text(encoding="utf-8"))
    if edit == "number":
        result["fairness"]["disparities"]["demographic_parity_ratio"] = 0.99
    elif edit == "passed":
        result["passed"] = not result["passed"]
    elif edit == "file-hash":
        result["provenance"]["data"]["sha256"] = hashlib.sha256(b"other data").hexdigest()
    elif edit == "gate-threshold":
        result["audit"]["spec"]["gates"][0]["min"] = 0.0
    else:  # the time stamp alone is outside the hash: editing it is not tampering with results
        result["provenance"]["created_at"] = "2000-01-01T00:00:00+00:00"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    outcome = _gate(path)
    if edit == "created-at":
        assert outcome.exit_code in (0, 1), outcome.output
        return
    assert outcome.exit_code == 2, outcome.output
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr
    assert "edited.json" in lines[0] and "does not match its integrity hash" in lines[0]
