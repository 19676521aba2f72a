"""Loading soft prompts: adapters, tensor files, and every bad input as a clear error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from promptaudit.errors import PromptError
from promptaudit.models import Task
from promptaudit.soft_prompts import (
    PREFIX_TUNING_MESSAGE,
    check_prompt_tensor,
    load_prompt,
    text_init_token_ids,
)


# ------------------------------------------------------------------ adapters
def test_prompt_tuning_adapter(minilm_seqcls_adapter):
    soft = load_prompt(minilm_seqcls_adapter, hidden_size=384)
    saved = load_file(str(minilm_seqcls_adapter / "adapter_model.safetensors"))
    torch.testing.assert_close(soft.embeddings, saved["prompt_embeddings"], rtol=0, atol=0)
    assert soft.embeddings.dtype == torch.float32
    assert (soft.num_virtual_tokens, soft.hidden_size) == (8, 384)
    assert soft.peft_type == "PROMPT_TUNING"
    assert soft.task is Task.SEQUENCE_CLASSIFICATION
    assert soft.init_method == "RANDOM" and soft.init_text is None
    torch.testing.assert_close(
        soft.head_state["classifier.weight"], saved["base_model.classifier.weight"], rtol=0, atol=0
    )
    assert {p.name for p in soft.files} == {"adapter_config.json", "adapter_model.safetensors"}


def test_causal_adapter_task_type(tiny_gpt2_causal_adapter):
    soft = load_prompt(tiny_gpt2_causal_adapter)
    assert soft.task is Task.CAUSAL_LM
    assert soft.head_state == {}
    assert soft.embeddings.shape == (5, 32)


def test_prefix_tuning_adapter_is_refused(tiny_bert_prefix_adapter):
    with pytest.raises(PromptError) as info:
        load_prompt(tiny_bert_prefix_adapter)
    assert str(info.value) == PREFIX_TUNING_MESSAGE.format(source=str(tiny_bert_prefix_adapter))
    assert "PREFIX_TUNING" in str(info.value) and "\n" not in str(info.value)


def test_lora_adapter_is_refused(tiny_bert_lora_adapter):
    with pytest.raises(PromptError, match="peft_type 'LORA' is not a soft prompt"):
        load_prompt(tiny_bert_lora_adapter)


def test_directory_without_adapter_config(tmp_path):
    with pytest.raises(PromptError, match="no adapter_config.json"):
        load_prompt(tmp_path)


def test_adapter_without_weights(tmp_path, tiny_bert_seqcls_adapter):
    (tmp_path / "adapter_config.json").write_bytes(
        (tiny_bert_seqcls_adapter / "adapter_config.json").read_bytes()
    )
    with pytest.raises(PromptError, match="no weights file"):
        load_prompt(tmp_path)


# -------------------------------------------------------------- tensor files
def test_safetensors_file_with_one_tensor(tmp_path):
    tensor = torch.randn(6, 32)
    path = tmp_path / "prompt.safetensors"
    save_file({"anything": tensor}, str(path))
    soft = load_prompt(path, hidden_size=32)
    torch.testing.assert_close(soft.embeddings, tensor, rtol=0, atol=0)
    assert soft.peft_type is None and soft.task is None and soft.files == [path]


def test_pt_file_with_one_tensor(tmp_path):
    tensor = torch.randn(3, 32, dtype=torch.float64)
    path = tmp_path / "prompt.pt"
    torch.save(tensor, path)
    soft = load_prompt(str(path), hidden_size=32)
    assert soft.embeddings.dtype == torch.float32
    torch.testing.assert_close(soft.embeddings, tensor.float())
    named = tmp_path / "named.pt"
    torch.save({"prompt_embeddings": tensor, "other": torch.zeros(1)}, named)
    torch.testing.assert_close(load_prompt(named).embeddings, tensor.float())


@pytest.mark.parametrize(
    ("tensor", "hidden", "message"),
    [
        (torch.zeros(2, 3, 32), 32, r"shape \(2, 3, 32\); expected 2 dimensions"),
        (torch.zeros(32), 32, r"shape \(32,\); expected 2 dimensions"),
        (torch.zeros(4, 16), 32, "hidden size 16 does not match the model's hidden size 32"),
        (torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), None, "NaN or inf .* virtual token 1"),
        (torch.tensor([[float("inf"), 1.0]]), None, "NaN or inf .* virtual token 0"),
        (torch.zeros(2, 4, dtype=torch.int64), None, "expected floating point"),
    ],
    ids=["rank3", "rank1", "hidden", "nan", "inf", "int"],
)
def test_bad_tensor_is_refused(tmp_path, tensor, hidden, message):
    for suffix in (".safetensors", ".pt"):
        path = tmp_path / f"bad{suffix}"
        if suffix == ".pt":
            torch.save(tensor, path)
        else:
            save_file({"p": tensor}, str(path))
        with pytest.raises(PromptError, match=message) as info:
            load_prompt(path, hidden_size=hidden)
        assert str(path) in str(info.value)


def test_several_tensors_are_ambiguous(tmp_path):
    path = tmp_path / "two.safetensors"
    save_file({"a": torch.zeros(2, 4), "b": torch.zeros(2, 4)}, str(path))
    with pytest.raises(PromptError, match=r"holds 2 tensors \(a, b\)"):
        load_prompt(path)


def test_missing_file(tmp_path):
    with pytest.raises(PromptError, match="prompt not found"):
        load_prompt(tmp_path / "nope.safetensors")
    with pytest.raises(PromptError, match="prompt not found"):
        load_prompt("./not/here")


def test_unsupported_suffix_and_corrupt_safetensors(tmp_path):
    text = tmp_path / "prompt.txt"
    text.write_text("1 2 3")
    with pytest.raises(PromptError, match="unsupported prompt file type '.txt'"):
        load_prompt(text)
    corrupt = tmp_path / "prompt.safetensors"
    corrupt.write_bytes(b"\x00" * 20)
    with pytest.raises(PromptError, match="not a valid safetensors file"):
        load_prompt(corrupt)


def test_malicious_pickle_is_not_executed(malicious_pt):
    path, marker = malicious_pt
    with pytest.raises(PromptError, match="refused: the file is not plain tensors"):
        load_prompt(path)
    assert not marker.exists()
    # the file really is dangerous: an unrestricted load plants the marker
    loaded = torch.load(path, weights_only=False)
    assert marker.exists()
    loaded["prompt"].close()


def test_pickle_of_plain_python_objects_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(PromptError, match="holds a list, not a tensor"):
        load_prompt(path)


def test_check_prompt_tensor_accepts_a_good_one():
    check_prompt_tensor(torch.zeros(2, 8), source="x", hidden_size=8)
    with pytest.raises(PromptError, match="no virtual tokens"):
        check_prompt_tensor(torch.zeros(0, 8), source="x")


# ------------------------------------------------------------- text init ids
def test_text_init_ids_mirror_peft_including_special_tokens(tiny_bert_dir):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    ids = text_init_token_ids(tokenizer, "the movie was", 7)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", "the", "movie", "was", "[SEP]", "[CLS]", "the"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    config = PromptTuningConfig(
        task_type="SEQ_CLS",
        num_virtual_tokens=7,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text="the movie was",
        tokenizer_name_or_path=str(tiny_bert_dir),
    )
    peft_model = get_peft_model(base, config)
    peft_init = peft_model.prompt_encoder["default"].embedding.weight
    word = base.get_input_embeddings().weight
    torch.testing.assert_close(peft_init, word[ids], rtol=0, atol=0)


def test_adapter_config_that_is_not_json(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(PromptError, match="not valid JSON"):
        load_prompt(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(PromptError, match="expected a JSON object"):
        load_prompt(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("num_virtual_tokens", 20, "num_virtual_tokens is 20 but prompt_embeddings"),
        ("token_dim", 768, "token_dim is 768 but prompt_embeddings"),
        ("num_virtual_tokens", "8", "num_virtual_tokens is '8'"),
    ],
)
def test_adapter_config_contradicting_its_weights_is_refused(
    minilm_seqcls_adapter, tmp_path, field, value, fragment
):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(minilm_seqcls_adapter, adapter)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    assert (config["num_virtual_tokens"], config["token_dim"]) == (8, 384)  # the truth
    config[field] = value
    config_path.write_text(json.dumps(config))
    with pytest.raises(PromptError) as caught:
        load_prompt(adapter)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(config_path))
    assert fragment in message
    assert ("8 rows" if field == "num_virtual_tokens" else "384 columns") in message
