"""Multi-process audits (promptaudit.distributed) against the single-process pipeline.

The shard plans (Accelerate's own ``split_between_processes`` on each rank of a
plan) and the merge of attributions are checked in one process (each "process"
of the plan run in turn, the pieces merged, compared with the single-process
call); then a real two-process audit runs under ``accelerate launch`` on CPUs
(gloo) and its result JSON is compared number for number with a one-process run,
and a bad input seen by one process only makes every process of a ``torchrun``
launch exit with code 2. The model is a tiny BERT built here from a config.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import PartialState

from promptaudit.attribution import (
    PromptAttributor,
    attribution_batches,
    attribution_method,
    merge_attributions,
)
from promptaudit.distributed import (
    AuditProcesses,
    attribute_batches,
    dealing_order,
    launched_num_processes,
    prediction_batches,
    process_device,
)
from promptaudit.prompted_model import PromptedModel, float32_model, load_prompted_model

WORDS = ("the a candidate applicant engineer nurse teacher manager is was has with strong weak "
         "good great poor excellent experience skills record team leader reliable late "
         "he she his her him man woman mr ms mother father").split()
GENDERS = ["male", "female"]
RACES = ["white", "black", "asian", "hispanic"]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BertForSequenceClassification with a small WordPiece vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert-cls")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "."]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=96,
                        num_labels=2, pad_token_id=0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # a decisive head, so predictions are not all one label
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def prompt_file(tiny_classifier, tmp_path_factory) -> Path:
    """A ``(5, 32)`` soft prompt in a .safetensors file."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("prompt") / "prompt.safetensors"
    generator = torch.Generator().manual_seed(1)
    save_file({"prompt_embeddings": torch.randn(5, 32, generator=generator) * 0.5}, str(path))
    return path


def _rows(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    roles = ["engineer", "nurse", "teacher", "manager", "applicant"]
    traits = ["strong skills", "poor record", "great experience", "weak skills",
              "excellent team record", "a good leader", "late", "reliable"]
    rows = []
    for i in range(n):
        gender = GENDERS[i % 2]
        pronoun = "he" if gender == "male" else "she"
        words = rng.choice(traits, size=1 + i % 3, replace=False)
        text = f"{pronoun} is a {roles[i % 5]} with " + " and ".join(words)
        rows.append({"text": text, "label": int(rng.integers(0, 2)), "gender": gender,
                     "race": RACES[(i // 2) % 4]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def audit_spec(tiny_classifier, prompt_file, tmp_path_factory) -> Path:
    """A 40-row audit with counterfactuals, projection, attribution and baselines."""
    folder = tmp_path_factory.mktemp("audit")
    _rows(40).to_csv(folder / "eval.csv", index=False)
    spec = {
        "name": "tiny-dist",
        "seed": 3,
        "model": {"base": str(tiny_classifier), "task": "sequence-classification",
                  "labels": ["reject", "accept"], "positive_label": "accept",
                  "device": "cpu", "max_length": 32, "batch_size": 4},
        "prompt": {"path": str(prompt_file)},
        "data": {"path": "eval.csv", "text_column": "text", "label_column": "label",
                 "sensitive_features": ["gender", "race"]},
        "counterfactuals": {"suite": "builtin:identity", "features": ["gender"]},
        "projection": {"top_k": 3, "metric": "cosine"},
        "attribution": {"method": "integrated_gradients", "n_steps": 8, "baseline": "pad",
                        "max_examples": 40},
        "fairness": {"metrics": ["selection_rate", "accuracy", "mean_score"],
                     "bootstrap": 20, "min_group_size": 5},
        "gates": [{"metric": "accuracy", "min": 0.0}],
    }
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def prompted(tiny_classifier, prompt_file):
    model, _, _ = load_prompted_model(str(tiny_classifier), str(prompt_file),
                                      task="sequence-classification", labels=["reject", "accept"],
                                      device="cpu", max_length=32, batch_size=4)
    return model


# -------------------------------------------------------------------- plans
def test_process_device_maps_each_process_to_its_own_device():
    assert process_device("auto", torch.device("cuda", 3)) == "cuda:3"
    assert process_device("cuda:0", torch.device("cuda", 1)) == "cuda:1"
    assert process_device("cpu", torch.device("cuda", 1)) == "cpu"
    assert process_device("auto", torch.device("cpu")) == "cpu"
    assert process_device("cuda", "cpu") == "cuda"  # the loader reports the missing GPU


def test_launched_num_processes_reads_world_size(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_num_processes() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launched_num_processes() == 4


class _Rank:
    """The parts of ``accelerate.PartialState`` a shard plan uses, for rank ``rank`` of ``n``."""

    split_between_processes = PartialState.split_between_processes  # Accelerate's own split

    def __init__(self, rank: int, n: int) -> None:
        self.process_index, self.num_processes, self.device = rank, n, torch.device("cpu")


def _plan(n_batches: int, num_processes: int) -> list[list[int]]:
    return [AuditProcesses(_Rank(rank, num_processes)).my_batches(n_batches)
            for rank in range(num_processes)]


def test_accelerate_split_of_the_dealing_order_is_round_robin():
    assert dealing_order(5, 2) == [0, 2, 4, 1, 3]
    for num_processes in (1, 2, 3, 4):
        for n_batches in range(0, 11):
            assert _plan(n_batches, num_processes) == [
                list(range(rank, n_batches, num_processes)) for rank in range(num_processes)
            ], (n_batches, num_processes)


def test_prediction_batches_are_the_length_ordered_schedule():
    texts = ["x" * n for n in (5, 1, 4, 2, 3, 9, 7)]
    batches = prediction_batches(texts, batch_size=2)
    # length order: 1,3,4,2,0,6,5 -> batches [1,3] [4,2] [0,6] [5]
    assert [b.tolist() for b in batches] == [[1, 3], [4, 2], [0, 6], [5]]
    assert [[batches[b].tolist() for b in mine] for mine in _plan(len(batches), 2)] == [
        [[1, 3], [0, 6]], [[4, 2], [5]]]
    # more processes than batches: the extra ones get nothing
    assert [len(mine) for mine in _plan(len(prediction_batches(texts, batch_size=4)), 3)] == [
        1, 1, 0]


def test_attribution_batches_order_by_token_count():
    batches = attribution_batches(torch.tensor([4, 2, 9, 2, 5]), batch_size=2)
    assert [b.tolist() for b in batches] == [[1, 3], [0, 4], [2]]


# --------------------------------------------- shards equal one process exactly
def _deal(batches, num_processes):
    return [[b for b in mine] for mine in _plan(len(batches), num_processes)]


def test_sharded_predictions_equal_one_process(prompted):
    texts = _rows(23)["text"].tolist()
    whole = prompted.predict_proba(texts)
    batches = prediction_batches(texts, batch_size=prompted.batch_size)
    gathered = np.zeros_like(whole)
    for mine in _deal(batches, 3):
        rows = np.concatenate([batches[b] for b in mine])
        gathered[rows] = prompted.predict_proba([texts[i] for i in rows])
    np.testing.assert_array_equal(gathered, whole)


@pytest.mark.parametrize("method", ["integrated_gradients", "shapley_sampling"])
def test_merged_attribution_equals_one_process(prompted, method):
    frame = _rows(19)
    texts = frame["text"].tolist()
    chosen = attribution_method(method, n_steps=8, n_samples=3, baseline="pad")
    whole = PromptAttributor(prompted, chosen, seed=5).attribute(texts)
    lengths = prompted.encode(texts).attention_mask.sum(dim=1)
    batches = attribution_batches(lengths, batch_size=8)
    pieces = []
    for mine in _deal(batches, 2):
        work = [(b, [texts[i] for i in batches[b]]) for b in mine]
        for index, result in attribute_batches(prompted, work, chosen, seed=5, batch_size=8):
            pieces.append((batches[index], result))
    merged = merge_attributions(pieces, n_examples=len(texts), seed=5)
    assert merged == whole


# ------------------------------------------------------------------ precision
def test_float32_model_upcasts_for_attribution_and_restores_bit_for_bit(prompted):
    model = copy.deepcopy(prompted.model).to(torch.bfloat16)  # the fixture's model stays fp32
    bf16 = PromptedModel(model, prompted.tokenizer, prompted.prompt, task=prompted.task,
                         labels=prompted.labels, max_length=prompted.max_length, batch_size=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    texts = _rows(6)["text"].tolist()
    with float32_model(bf16) as fp32:
        assert fp32.dtype == torch.float32
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert torch.equal(fp32.prompt, bf16.prompt.float())
    after = model.state_dict()
    assert all(after[k].dtype == before[k].dtype and torch.equal(after[k], before[k])
               for k in before)

    # attribution of the bf16 model = attribution of its exact float32 upcast
    with float32_model(bf16) as fp32:
        result = PromptAttributor(fp32, attribution_method(n_steps=16)).attribute(texts)
    reference_model = copy.deepcopy(model).float()
    reference = PromptedModel(reference_model, prompted.tokenizer, bf16.prompt.float(),
                              task=prompted.task, labels=prompted.labels,
                              max_length=prompted.max_length, batch_size=4)
    assert result == PromptAttributor(reference, attribution_method(n_steps=16)).attribute(texts)
    assert result["max_convergence_delta"] < 0.05
    assert next(model.parameters()).dtype == torch.bfloat16


def test_float32_model_of_a_float32_model_is_the_model(prompted):
    with float32_model(prompted) as fp32:
        assert fp32 is prompted


# ------------------------------------------------- two processes, end to end
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment() -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONWARNINGS": "ignore"})
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("provenance", "integrity")}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_two_process_audit_equals_one_process(audit_spec, tmp_path):
    env = _environment()
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run(
        [sys.executable, "-m", "promptaudit", "run", str(audit_spec), "--out", str(one)],
        env=env, capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-2000:]
    launched = subprocess.run(
        ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(_free_port()),
         "-m", "promptaudit", "run", str(audit_spec), "--out", str(two)],
        env=env, capture_output=True, text=True, timeout=120)
    assert launched.returncode == 0, launched.stderr[-3000:]

    first = json.loads((one / "tiny-dist.json").read_text())
    second = json.loads((two / "tiny-dist.json").read_text())
    assert first["provenance"]["num_processes"] == 1
    assert second["provenance"]["num_processes"] == 2
    assert _comparable(second) == _comparable(first)
    # the stages that were sharded really ran and were gathered in order
    assert second["attribution"]["n_examples"] == 40
    assert [e["text"] for e in second["attribution"]["examples"]] == _rows(40)["text"].tolist()
    assert second["fairness"]["counterfactual"]["n_tuples"] > 0
    assert set(second["baselines"]) >= {"soft_prompt", "projected_prompt", "no_prompt"}
    # only the main process wrote, and only the reports
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert "audit tiny-dist: PASSED" in launched.stdout
    assert launched.stdout.count("audit tiny-dist") == 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_bad_input_on_one_process_exits_2_everywhere(audit_spec, tmp_path):
    """Only the main process writes, so only it sees that --out is a file: all exit 2."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the report folder should be", encoding="utf-8")
    launched = subprocess.run(
        ["torchrun", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "promptaudit", "run", str(audit_spec), "--out", str(blocked)],
        env=_environment(), capture_output=True, text=True, timeout=120)
    assert launched.returncode != 0
    errors = [line for line in launched.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, launched.stderr[-3000:]  # one line per process, no traceback
    assert all(str(blocked) in line for line in errors)
    assert any(line.startswith("error: process 0: ") for line in errors)  # told by the main
    assert "internal error" not in launched.stderr
    assert "exitcode  : 2" in launched.stderr or "exitcode: 2" in launched.stderr
    assert blocked.read_text(encoding="utf-8").startswith("a file")


def test_a_launched_run_keeps_the_rows_one_process_keeps_under_a_budget(prompted, monkeypatch):
    """attribution.max_gradient_evals_total: the launched path attributes every batch of the
    budget schedule and keeps the rows a single process keeps (same result)."""
    frame = _rows(19)
    texts = frame["text"].tolist()
    chosen = attribution_method("integrated_gradients", n_steps=8, baseline="pad",
                                max_gradient_evals_total=60)
    whole = PromptAttributor(prompted, chosen, seed=5, batch_size=4).attribute(texts)
    assert whole["budget"]["n_attributed"] == 8  # 4 rows x 8 steps per batch: 64 >= 60
    processes = AuditProcesses(_Rank(0, 1))
    monkeypatch.setattr(processes, "exchange", lambda work: [work()])
    launched = processes.attribute(prompted, texts, chosen, seed=5, batch_size=4)
    assert launched == whole
