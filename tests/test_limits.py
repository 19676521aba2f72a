"""Limits: long texts are truncated with a recorded count; prediction streams in batches.

* ``task.n_truncated`` counts the texts longer than ``model.max_length`` tokens, a warning
  says so on stderr, and the reports show it (``promptaudit run``); ``promptaudit
  predict`` warns the same way.
* ``PromptedModel.predict_proba`` never tokenizes or forwards more than ``batch_size``
  texts at once, keeps input order, and its Python-side memory grows with the row count
  by no more than the stored ``(n, n_labels)`` float64 output plus a few int64 per row
  (``benchmarks/bench_memory.py`` measures the same on the bundled MiniLM at 10k/100k rows).
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.prompted_model import PromptedModel, load_prompted_model

LONG = " ".join(["the movie was really very good and the acting was great"] * 8)  # ~90 tokens


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("limits") / "prompt.safetensors"
    save_file({"prompt": torch.randn(3, 32, generator=torch.Generator().manual_seed(0))},
              str(path))
    return path


@pytest.fixture(scope="module")
def prompted(tiny_bert_dir, prompt_file) -> PromptedModel:
    model, _, _ = load_prompted_model(str(tiny_bert_dir), str(prompt_file),
                                      task="sequence-classification", labels=["no", "yes"],
                                      device="cpu", max_length=16, batch_size=8,
                                      allow_untrained_head=True)
    return model


# ------------------------------------------------------------------- truncation
def test_run_records_and_reports_truncated_texts(tmp_path, tiny_bert_dir, prompt_file,
                                                 sentences):
    texts = [LONG if i in (2, 5, 9) else sentences[i % len(sentences)] for i in range(12)]
    pd.DataFrame({"sentence": texts, "label": [i % 2 for i in range(12)],
                  "group": ["a", "b"] * 6}).to_csv(tmp_path / "eval.csv", index=False)
    spec = {
        "name": "limits",
        "model": {"base": str(tiny_bert_dir), "task": "sequence-classification",
                  "allow_untrained_head": True,  # a bare prompt on the head-less tiny BERT
                  "labels": ["no", "yes"], "max_length": 16},
        "prompt": {"path": str(prompt_file)},
        "data": {"path": "eval.csv", "text_column": "sentence", "label_column": "label",
                 "sensitive_features": ["group"]},
        "projection": {"enabled": False},
        "attribution": {"enabled": False},
        "baselines": {"projected": False, "init_text": False},
        "fairness": {"bootstrap": 0, "min_group_size": 2},
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "audit.yaml"),
                                      "--out", str(tmp_path / "reports")],
                                catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    assert "WARNING: 3 of 12 texts were longer than 16 tokens and were truncated" in result.stderr
    task = json.loads((tmp_path / "reports" / "limits.json").read_text())["task"]
    assert task["n_truncated"] == 3 and task["n_examples"] == 12 and task["max_length"] == 16
    html = (tmp_path / "reports" / "limits.html").read_text()
    assert "3 truncated" in html


def test_predict_warns_about_truncated_texts(tmp_path, tiny_bert_dir, prompt_file):
    data = tmp_path / "d.csv"
    pd.DataFrame({"sentence": [LONG, "ok", LONG, "fun"]}).to_csv(data, index=False)
    result = CliRunner().invoke(app, [
        "predict", "--model", str(tiny_bert_dir), "--prompt", str(prompt_file), "--data",
        str(data), "--text-column", "sentence", "--task", "sequence-classification",
        "--labels", "no,yes", "--max-length", "16", "--out", str(tmp_path / "p.csv"),
        "--allow-untrained-head"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "WARNING: 2 of 4 texts were longer than 16 tokens and were truncated" in result.stderr
    assert len(pd.read_csv(tmp_path / "p.csv")) == 4


def test_count_truncated_matches_the_tokenizer(prompted):
    texts = [LONG, "ok", "the movie was good", LONG + " and more", "a" * 500]
    lengths = [len(ids) for ids in prompted.tokenizer(texts)["input_ids"]]
    assert prompted.count_truncated(texts) == sum(n > prompted.max_length for n in lengths) == 2


def test_truncation_keeps_the_prediction_of_the_kept_tokens(prompted):
    """A text cut at max_length predicts exactly as its first max_length tokens do."""
    ids = prompted.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    head = prompted.tokenizer.decode(ids[: prompted.max_length - 2])  # [CLS] ... [SEP]
    probs = prompted.predict_proba([LONG, head])
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)


# ------------------------------------------------------------------- streaming
def test_prediction_streams_in_batches_and_keeps_input_order(prompted, monkeypatch, sentences):
    texts = [f"{sentences[i % len(sentences)]} {'very ' * (i % 5)}".strip() for i in range(20)]
    seen: list[int] = []
    real_encode = PromptedModel.encode

    def spy(self, batch):
        seen.append(len(batch))
        return real_encode(self, batch)

    monkeypatch.setattr(PromptedModel, "encode", spy)
    probs = prompted.predict_proba(texts)
    assert max(seen) <= prompted.batch_size and len(seen) == -(-len(texts) // prompted.batch_size)
    assert probs.shape == (20, 2) and probs.dtype == np.float64
    seen.clear()
    one_by_one = np.vstack([prompted.predict_proba([text]) for text in texts])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-5)  # order kept, padding harmless


def test_counterfactual_variants_forward_each_new_text_once(prompted, monkeypatch, sentences):
    """A variant equal to a data text reuses its prediction; repeated variants run once."""
    from promptaudit.pipeline import predict_variants

    texts = list(sentences[:3])
    probs = prompted.predict_proba(texts)
    new_a, new_b = f"{sentences[0]} indeed", f"{sentences[1]} indeed"
    variants = [new_a, texts[2], new_b, new_a, texts[0], new_b]
    encoded: list[str] = []
    real_encode = PromptedModel.encode

    def spy(self, batch):
        encoded.extend(batch)
        return real_encode(self, batch)

    monkeypatch.setattr(PromptedModel, "encode", spy)
    out = predict_variants(prompted, variants, texts, probs)
    assert encoded == [new_a, new_b] or encoded == [new_b, new_a]  # two forwards for six rows
    monkeypatch.undo()
    np.testing.assert_allclose(out, prompted.predict_proba(variants), atol=1e-5)
    assert (out[1] == probs[2]).all() and (out[4] == probs[0]).all()  # copied, to the bit
    assert (out[0] == out[3]).all() and (out[2] == out[5]).all()


def test_count_truncated_streams_in_chunks(prompted, monkeypatch):
    calls: list[int] = []
    tokenizer = prompted.tokenizer
    real_call = type(tokenizer).__call__

    def spy(self, text, *args, **kwargs):
        calls.append(len(text) if isinstance(text, list) else 1)
        return real_call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    assert prompted.count_truncated(["ok"] * 1000) == 0
    assert calls and max(calls) <= 256


def _python_peak(prompted: PromptedModel, texts: list[str]) -> int:
    tracemalloc.start()
    try:
        prompted.predict_proba(texts)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_prediction_memory_grows_only_by_the_stored_output(prompted, sentences, monkeypatch):
    """Tokenizing every text up front would add ~1 KiB a row (lists of ids, masks, encodings)."""
    monkeypatch.setattr(prompted, "batch_size", 64)
    small = [sentences[i % len(sentences)] for i in range(200)]
    large = [sentences[i % len(sentences)] for i in range(3200)]
    _python_peak(prompted, small)  # warm-up
    growth = _python_peak(prompted, large) - _python_peak(prompted, small)
    output = 8 * len(prompted.labels)  # the stored float64 probabilities
    bookkeeping = 48  # int64 length and order, the sort's buffer, the list of texts
    assert growth <= (len(large) - len(small)) * (output + bookkeeping) + 512 * 1024, growth
