"""Base models: references, tasks, devices, dtypes, frozen eval mode."""

from __future__ import annotations

import pytest
import torch

from promptaudit.errors import ModelError
from promptaudit.models import (
    BUILTIN_MINILM,
    DType,
    Task,
    builtin_minilm_dir,
    load_base_model,
    resolve_device,
    resolve_model_reference,
)


@pytest.mark.parametrize(
    ("task", "class_name"),
    [
        ("sequence-classification", "BertForSequenceClassification"),
        ("masked-lm", "BertForMaskedLM"),
    ],
)
def test_tiny_bert_loads_for_each_encoder_task(tiny_bert_dir, task, class_name):
    loaded = load_base_model(str(tiny_bert_dir), task=task, num_labels=3, device="cpu")
    assert type(loaded.model).__name__ == class_name
    assert loaded.task is Task(task)
    assert loaded.resolved == str(tiny_bert_dir)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.device == torch.device("cpu")
    assert loaded.tokenizer.padding_side == "right"
    if task == "sequence-classification":
        assert loaded.model.config.num_labels == 3


def test_tiny_gpt2_causal_lm_gets_a_pad_token(tiny_gpt2_dir):
    loaded = load_base_model(str(tiny_gpt2_dir), task=Task.CAUSAL_LM)
    assert type(loaded.model).__name__ == "GPT2LMHeadModel"
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|endoftext|>"
    assert loaded.model.config.pad_token_id == loaded.tokenizer.eos_token_id


def test_builtin_minilm_loads_from_the_installed_package():
    path = builtin_minilm_dir()
    assert (path / "config.json").exists()
    assert resolve_model_reference(BUILTIN_MINILM) == str(path)
    loaded = load_base_model(BUILTIN_MINILM, task="sequence-classification", num_labels=2)
    assert loaded.reference == BUILTIN_MINILM and loaded.resolved == str(path)
    assert loaded.model.config.hidden_size == 384


def test_dtype_choice(tiny_bert_dir):
    loaded = load_base_model(str(tiny_bert_dir), task="masked-lm", dtype="bfloat16")
    assert loaded.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert DType("float16").torch_dtype is torch.float16


def test_trust_remote_code_is_only_passed_when_asked(tiny_bert_dir, monkeypatch):
    import transformers

    seen: list[dict] = []
    original = transformers.AutoModelForMaskedLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForMaskedLM, "from_pretrained", spy)
    load_base_model(str(tiny_bert_dir), task="masked-lm")
    assert "trust_remote_code" not in seen[-1]
    load_base_model(str(tiny_bert_dir), task="masked-lm", trust_remote_code=True)
    assert seen[-1]["trust_remote_code"] is True


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("builtin:gpt5", "unknown builtin model; allowed: builtin:minilm"),
        ("./no/such/model", "directory not found"),
        ("/no/such/model", "directory not found"),
    ],
)
def test_bad_model_reference(reference, message):
    with pytest.raises(ModelError, match=message):
        resolve_model_reference(reference)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        load_base_model(str(tmp_path), task="causal-lm")


def test_hub_id_is_kept_as_is():
    assert resolve_model_reference("gpt2") == "gpt2"
    assert resolve_model_reference("org/model") == "org/model"


def test_unknown_task():
    with pytest.raises(
        ModelError,
        match="unknown task 'summarize'; allowed: sequence-classification, causal-lm, masked-lm",
    ):
        Task.parse("summarize")


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ModelError, match="unknown; allowed: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            resolve_device("cuda")


# ------------------------------------------------------------- untrained heads
def test_missing_head_keys_are_what_transformers_reports(tiny_bert_dir, minilm_dir):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    # the reference: transformers' own loading info
    _, info = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=2, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    loaded = load_base_model(BUILTIN_MINILM, task="sequence-classification", num_labels=2,
                             device="cpu")
    assert loaded.missing_head_keys == ("classifier.bias", "classifier.weight")
    # the tiny BERT was saved with its MLM head: nothing missing as a masked LM
    _, info = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir, output_loading_info=True)
    assert not info["missing_keys"]
    assert load_base_model(str(tiny_bert_dir), task="masked-lm", device="cpu").missing_head_keys \
        == ()


def test_untrained_classifier_head_is_refused_unless_allowed(tmp_path, sentences):
    from safetensors.torch import save_file

    from promptaudit.prompted_model import load_prompted_model

    prompt = tmp_path / "bare.safetensors"
    save_file({"p": torch.randn(4, 384, generator=torch.Generator().manual_seed(0))}, str(prompt))
    with pytest.raises(ModelError) as caught:
        load_prompted_model(BUILTIN_MINILM, str(prompt), task="sequence-classification",
                            device="cpu")
    message = str(caught.value)
    assert "\n" not in message
    for fragment in ("builtin:minilm", "classifier.bias, classifier.weight", "initialised at "
                     "random", "PEFT SEQ_CLS prompt adapter", "--allow-untrained-head",
                     "model.allow_untrained_head: true", str(prompt)):
        assert fragment in message, fragment
    prompted, _, loaded = load_prompted_model(
        BUILTIN_MINILM, str(prompt), task="sequence-classification", device="cpu",
        allow_untrained_head=True)
    assert loaded.missing_head_keys == ("classifier.bias", "classifier.weight")
    assert prompted.predict_proba(sentences[:2]).shape == (2, 2)


def test_adapter_head_counts_as_trained(minilm_seqcls_adapter):
    from promptaudit.prompted_model import load_prompted_model

    _, soft, loaded = load_prompted_model(BUILTIN_MINILM, str(minilm_seqcls_adapter),
                                          device="cpu")
    assert loaded.missing_head_keys == ()
    assert set(soft.head_state) == {"classifier.weight", "classifier.bias"}


def test_spec_key_allow_untrained_head_defaults_off():
    from promptaudit.spec import ModelSpec

    assert ModelSpec().allow_untrained_head is False
    assert ModelSpec(allow_untrained_head=True).allow_untrained_head is True


def test_audit_with_an_allowed_untrained_head_says_so(tmp_path, tiny_bert_dir):
    import pandas as pd
    from safetensors.torch import save_file

    from promptaudit.pipeline import run_audit
    from promptaudit.spec import parse_spec

    save_file({"p": torch.randn(2, 32, generator=torch.Generator().manual_seed(0))},
              str(tmp_path / "p.safetensors"))
    pd.DataFrame({"text": ["good", "bad movie", "ok", "fun film"],
                  "g": ["a", "b", "a", "b"]}).to_csv(tmp_path / "d.csv", index=False)
    spec = parse_spec({
        "name": "untrained",
        "model": {"base": str(tiny_bert_dir), "task": "sequence-classification",
                  "labels": ["no", "yes"], "allow_untrained_head": True, "device": "cpu"},
        "prompt": {"path": str(tmp_path / "p.safetensors")},
        "data": {"path": str(tmp_path / "d.csv"), "text_column": "text",
                 "sensitive_features": ["g"]},
        "projection": {"enabled": False}, "attribution": {"enabled": False},
        "baselines": {"projected": False, "init_text": False},
        "fairness": {"bootstrap": 0, "min_group_size": 1},
    })
    result = run_audit(spec)
    assert result["task"]["untrained_head"] == ["classifier.bias", "classifier.weight"]
    assert "head is untrained" in result["fairness"]["warnings"][0]
