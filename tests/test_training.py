"""Training a soft prompt: a PEFT-compatible adapter, deterministic, resumable."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from promptaudit.errors import InputError
from promptaudit.prompted_model import load_prompted_model
from promptaudit.training import CHECKPOINT_DIR, InitMethod, TrainingConfig, train_prompt

LABELS = ["negative", "positive"]
TOLERANCE = 1e-4


def synthetic_reviews(n: int = 32, seed: int = 0) -> tuple[list[str], list[int]]:
    """Tiny sentiment data from the tiny vocabulary: label 1 iff a positive word."""
    rng = np.random.default_rng(seed)
    positive, negative = ["good", "great", "fun", "loved"], ["bad", "awful", "boring", "hated"]
    subjects = ["the movie", "this film", "the plot", "the acting", "the story"]
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        word = rng.choice(positive if label else negative)
        texts.append(f"{rng.choice(subjects)} was really {word}")
        labels.append(label)
    return texts, labels


def _config(**overrides) -> TrainingConfig:
    values = dict(num_virtual_tokens=4, init=InitMethod.TEXT, init_text="the movie was",
                  epochs=2, learning_rate=0.05, batch_size=8, max_length=16, seed=0)
    values.update(overrides)
    return TrainingConfig(**values)


def _prompt_of(adapter_dir) -> dict[str, torch.Tensor]:
    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def trained_bert(tmp_path_factory, tiny_bert_dir):
    """Two epochs on the tiny BERT with the text init; (result, adapter_dir)."""
    texts, labels = synthetic_reviews()
    out = tmp_path_factory.mktemp("trained-bert")
    result = train_prompt(str(tiny_bert_dir), texts, labels, labels=LABELS, out_dir=out,
                          config=_config(), progress=False)
    return result, out


def test_saved_adapter_loads_in_peft_with_the_same_probabilities(trained_bert, tiny_bert_dir,
                                                                 peft_probs):
    result, out = trained_bert
    assert result.adapter_dir == out
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["task_type"] == "SEQ_CLS"
    assert config["num_virtual_tokens"] == 4
    # PEFT itself lists the SEQ_CLS head twice; the saved config names each module once.
    assert config["modules_to_save"] == list(dict.fromkeys(config["modules_to_save"]))
    assert "classifier" in config["modules_to_save"]

    texts, _ = synthetic_reviews(6, seed=7)
    reference = peft_probs(tiny_bert_dir, out, texts, task="sequence-classification")
    prompted, soft, _ = load_prompted_model(str(tiny_bert_dir), str(out))
    assert prompted.labels == LABELS  # recorded in training_info.json
    assert soft.init_method == "TEXT" and soft.init_text == "the movie was"
    assert np.abs(prompted.predict_proba(texts) - reference).max() <= TOLERANCE


def test_history_and_training_info(trained_bert):
    result, out = trained_bert
    assert [e["epoch"] for e in result.history] == [1, 2]
    assert result.n_train + result.n_validation == 32 and result.n_validation == 3
    for entry in result.history:
        assert np.isfinite(entry["train_loss"]) and 0 <= entry["val_accuracy"] <= 1
    assert result.train_examples_per_second > 0
    info = json.loads((out / "training_info.json").read_text())
    assert info["labels"] == LABELS and info["task"] == "sequence-classification"
    assert info["history"] == json.loads(json.dumps(result.history))
    assert sorted((out / CHECKPOINT_DIR).iterdir())[-1].name == "epoch-0002"


def test_text_init_special_tokens_are_reported(trained_bert, caplog, tiny_bert_dir, tmp_path):
    result, out = trained_bert
    assert result.init_tokens == ["[CLS]", "the", "movie", "was"]
    assert result.init_special_tokens == ["[CLS]"]
    info = json.loads((out / "training_info.json").read_text())
    assert info["init_special_tokens"] == ["[CLS]"]

    texts, labels = synthetic_reviews(8)
    with caplog.at_level(logging.WARNING, logger="promptaudit"):
        again = train_prompt(str(tiny_bert_dir), texts, labels, labels=LABELS,
                             out_dir=tmp_path / "a", progress=False,
                             config=_config(num_virtual_tokens=6, epochs=1))
    assert again.init_tokens == ["[CLS]", "the", "movie", "was", "[SEP]", "[CLS]"]
    assert again.init_special_tokens == ["[CLS]", "[SEP]"]
    assert any("[CLS], [SEP]" in r.getMessage() for r in caplog.records)


def test_training_actually_moves_the_prompt(trained_bert, tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    result, out = trained_bert
    words = AutoModel.from_pretrained(tiny_bert_dir).get_input_embeddings().weight
    ids = AutoTokenizer.from_pretrained(tiny_bert_dir).convert_tokens_to_ids(result.init_tokens)
    learned = _prompt_of(out)["prompt_embeddings"]
    assert learned.shape == (4, 32)
    assert (learned - words[ids]).abs().max() > 1e-3


def test_same_seed_gives_identical_prompts(tiny_bert_dir, tmp_path):
    texts, labels = synthetic_reviews(16)
    outs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train_prompt(str(tiny_bert_dir), texts, labels, labels=LABELS, out_dir=tmp_path / name,
                     config=_config(init=InitMethod.RANDOM, init_text=None, epochs=1, seed=seed),
                     progress=False)
        outs.append(_prompt_of(tmp_path / name))
    assert outs[0].keys() == outs[1].keys()
    for key in outs[0]:
        torch.testing.assert_close(outs[0][key], outs[1][key], rtol=0, atol=0)
    assert not torch.equal(outs[0]["prompt_embeddings"], outs[2]["prompt_embeddings"])


def test_resume_continues_from_the_checkpoint(tiny_bert_dir, tmp_path):
    texts, labels = synthetic_reviews(24)
    straight = tmp_path / "straight"
    resumed = tmp_path / "resumed"
    common = dict(labels=LABELS, progress=False)
    train_prompt(str(tiny_bert_dir), texts, labels, out_dir=straight,
                 config=_config(epochs=2), **common)
    first = train_prompt(str(tiny_bert_dir), texts, labels, out_dir=resumed,
                         config=_config(epochs=1), **common)
    assert [e["epoch"] for e in first.history] == [1]
    second = train_prompt(str(tiny_bert_dir), texts, labels, out_dir=resumed,
                          config=_config(epochs=2), resume=True, **common)
    assert [e["epoch"] for e in second.history] == [1, 2]
    a, b = _prompt_of(straight), _prompt_of(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        train_prompt(str(tiny_bert_dir), texts, labels, out_dir=tmp_path / "fresh",
                     config=_config(), resume=True, **common)


def test_causal_lm_training_on_tiny_gpt2(tiny_gpt2_dir, tmp_path, peft_probs):
    texts, labels = synthetic_reviews(16)
    words = ["bad", "good"]
    out = tmp_path / "gpt2"
    result = train_prompt(str(tiny_gpt2_dir), texts, labels, labels=words, out_dir=out,
                          task="causal-lm", progress=False,
                          config=_config(init_text="the movie", epochs=1))
    assert result.init_special_tokens == []  # GPT-2 adds no BOS
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM"
    reference = peft_probs(tiny_gpt2_dir, out, texts[:6], task="causal-lm", labels=words)
    prompted, _, _ = load_prompted_model(str(tiny_gpt2_dir), str(out))
    assert prompted.labels == words
    assert np.abs(prompted.predict_proba(texts[:6]) - reference).max() <= TOLERANCE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_virtual_tokens": 0}, "num_virtual_tokens: 0; must be >= 1"),
        ({"epochs": 0}, "epochs: 0; must be >= 1"),
        ({"learning_rate": 0.0}, "learning_rate: 0.0; must be > 0"),
        ({"batch_size": 0}, "batch_size: 0; must be >= 1"),
        ({"init_text": " "}, "init_text: required when init is 'text'"),
        ({"validation_fraction": 1.0}, "validation_fraction: 1.0; must be < 1"),
    ],
)
def test_bad_training_config(overrides, message):
    with pytest.raises(InputError, match=message):
        _config(**overrides)


def test_bad_training_inputs(tiny_bert_dir, tmp_path):
    with pytest.raises(InputError, match="training supports"):
        train_prompt(str(tiny_bert_dir), ["a"], [0], labels=LABELS, out_dir=tmp_path,
                     task="masked-lm", config=_config())
    with pytest.raises(InputError, match="no training examples"):
        train_prompt(str(tiny_bert_dir), [], [], labels=LABELS, out_dir=tmp_path,
                     config=_config())
    with pytest.raises(InputError, match="2 texts but 1 labels"):
        train_prompt(str(tiny_bert_dir), ["a", "b"], [0], labels=LABELS, out_dir=tmp_path,
                     config=_config())
