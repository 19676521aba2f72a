"""PromptedModel: the forward every stage uses must equal PEFT's own forward."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from promptaudit.errors import InputError
from promptaudit.models import Task, load_base_model
from promptaudit.prompted_model import (
    PromptedModel,
    load_prompted_model,
    predictions_frame,
    verbalizer_token_ids,
)
from promptaudit.soft_prompts import load_prompt

TOLERANCE = 1e-4


# ------------------------------------------------------------ PEFT equivalence
def test_seqcls_adapter_on_minilm_matches_peft(
    minilm_dir, minilm_seqcls_adapter, sentences, minilm_seqcls_reference
):
    prompted, soft, _ = load_prompted_model("builtin:minilm", str(minilm_seqcls_adapter))
    probs = prompted.predict_proba(sentences)
    assert probs.shape == (len(sentences), 2)
    assert np.abs(probs - minilm_seqcls_reference).max() <= TOLERANCE
    # not trivial: the perturbed head and prompt move the probabilities off 0.5
    assert np.abs(probs - 0.5).max() > 0.05
    assert soft.task is Task.SEQUENCE_CLASSIFICATION
    assert prompted.num_virtual_tokens == 8


def test_causal_lm_adapter_on_tiny_gpt2_matches_peft(
    tiny_gpt2_dir, tiny_gpt2_causal_adapter, sentences, gpt2_causal_reference
):
    prompted, soft, _ = load_prompted_model(
        str(tiny_gpt2_dir), str(tiny_gpt2_causal_adapter), labels=["good", "bad"], batch_size=3
    )
    assert soft.task is Task.CAUSAL_LM
    probs = prompted.predict_proba(sentences)
    assert np.abs(probs - gpt2_causal_reference).max() <= TOLERANCE
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)


def test_ptuning_adapter_loads_saved_embeddings_and_matches_peft(
    tiny_bert_dir, tiny_bert_ptuning_adapter, sentences, peft_probs
):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    soft = load_prompt(tiny_bert_ptuning_adapter)
    assert soft.peft_type == "P_TUNING"
    saved = load_file(str(tiny_bert_ptuning_adapter / "adapter_model.safetensors"))
    torch.testing.assert_close(soft.embeddings, saved["prompt_embeddings"], rtol=0, atol=0)
    # PEFT's loaded P-tuning adapter uses exactly those embeddings as its prompt
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    peft_model = PeftModel.from_pretrained(base, str(tiny_bert_ptuning_adapter)).eval()
    torch.testing.assert_close(peft_model.get_prompt(batch_size=1)[0], soft.embeddings)

    prompted, _, _ = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_ptuning_adapter))
    reference = peft_probs(
        tiny_bert_dir, tiny_bert_ptuning_adapter, sentences, task="sequence-classification"
    )
    assert np.abs(prompted.predict_proba(sentences) - reference).max() <= TOLERANCE


def test_masked_lm_reads_the_verbalizer_at_the_mask(tiny_bert_dir, tmp_path, sentences):
    torch.manual_seed(5)
    prompt = torch.randn(3, 32)
    path = tmp_path / "prompt.safetensors"
    save_file({"prompt": prompt}, str(path))
    prompted, soft, loaded = load_prompted_model(
        str(tiny_bert_dir), str(path), task="masked-lm", labels=["good", "bad", "ok"]
    )
    probs = prompted.predict_proba(sentences)
    assert probs.shape == (len(sentences), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)

    tokenizer = loaded.tokenizer
    batch = prompted.encode(sentences[:3])
    rows = torch.arange(3)
    assert (batch.input_ids[rows, batch.readout_index] == tokenizer.mask_token_id).all()
    # by hand: [prompt ; embeddings], the MLM logits at the mask over the label words
    model = loaded.model
    embeds = model.get_input_embeddings()(batch.input_ids)
    full = torch.cat([prompt.unsqueeze(0).expand(3, -1, -1), embeds], dim=1)
    mask = torch.cat([torch.ones(3, 3, dtype=torch.long), batch.attention_mask], dim=1)
    types = torch.cat([torch.zeros(3, 3, dtype=torch.long), batch.token_type_ids], dim=1)
    with torch.no_grad():
        logits = model(inputs_embeds=full, attention_mask=mask, token_type_ids=types).logits
    label_ids = tokenizer.convert_tokens_to_ids(["good", "bad", "ok"])
    expected = torch.softmax(logits[rows, batch.readout_index + 3][:, label_ids].double(), dim=-1)
    assert np.abs(probs[:3] - expected.numpy()).max() <= TOLERANCE


# ---------------------------------------------------------- loading behaviour
def test_classifier_head_from_modules_to_save_is_used(
    minilm_seqcls_adapter, sentences, minilm_seqcls_reference
):
    soft = load_prompt(minilm_seqcls_adapter)
    assert set(soft.head_state) == {"classifier.weight", "classifier.bias"}
    torch.manual_seed(0)
    loaded = load_base_model("builtin:minilm", task="sequence-classification", num_labels=2)
    random_head = PromptedModel(
        loaded.model,
        loaded.tokenizer,
        soft.embeddings,
        task="sequence-classification",
        labels=["a", "b"],
    )
    without = random_head.predict_proba(sentences)
    assert np.abs(without - minilm_seqcls_reference).max() > 0.05
    prompted, _, _ = load_prompted_model("builtin:minilm", str(minilm_seqcls_adapter))
    torch.testing.assert_close(
        prompted.model.classifier.weight, soft.head_state["classifier.weight"]
    )
    torch.testing.assert_close(prompted.model.classifier.bias, soft.head_state["classifier.bias"])


def test_task_is_inferred_from_the_adapter_and_checked(
    tiny_bert_dir, tiny_bert_seqcls_adapter, tiny_gpt2_dir, tiny_gpt2_causal_adapter
):
    prompted, _, _ = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_seqcls_adapter))
    assert prompted.task is Task.SEQUENCE_CLASSIFICATION
    assert prompted.labels == ["LABEL_0", "LABEL_1"]
    with pytest.raises(InputError, match="needs label words"):
        load_prompted_model(str(tiny_gpt2_dir), str(tiny_gpt2_causal_adapter))
    with pytest.raises(InputError, match="trained for 'sequence-classification'"):
        load_prompted_model(
            str(tiny_bert_dir),
            str(tiny_bert_seqcls_adapter),
            task="masked-lm",
            labels=["good", "bad"],
        )


def test_tensor_file_without_task_is_an_error(tiny_bert_dir, tmp_path):
    path = tmp_path / "p.pt"
    torch.save(torch.zeros(2, 32), path)
    with pytest.raises(InputError, match="task: not given"):
        load_prompted_model(str(tiny_bert_dir), str(path))


def test_model_argument_overrides_the_adapter_base_model(
    tiny_bert_dir, tiny_bert_seqcls_adapter, tmp_path, sentences, caplog
):
    moved = tmp_path / "adapter"
    shutil.copytree(tiny_bert_seqcls_adapter, moved)
    config_path = moved / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "some-org/some-other-model"  # never fetched
    config_path.write_text(json.dumps(config))

    with caplog.at_level(logging.WARNING, logger="promptaudit"):
        prompted, soft, loaded = load_prompted_model(str(tiny_bert_dir), str(moved))
    assert loaded.resolved == str(tiny_bert_dir)
    assert soft.base_model == "some-org/some-other-model"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("some-org/some-other-model" in m and str(tiny_bert_dir) in m for m in warnings)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="promptaudit"):
        same, _, _ = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_seqcls_adapter))
    assert not [r for r in caplog.records if "was trained on base model" in r.getMessage()]
    np.testing.assert_allclose(
        prompted.predict_proba(sentences), same.predict_proba(sentences), atol=1e-6
    )


def test_label_count_must_match_the_head(tiny_bert_dir, tiny_bert_seqcls_adapter):
    with pytest.raises(InputError, match="3 labels given"):
        load_prompted_model(
            str(tiny_bert_dir), str(tiny_bert_seqcls_adapter), labels=["a", "b", "c"]
        )


# ------------------------------------------------------------------- forward
def test_predict_proba_keeps_input_order_across_batch_sizes(
    tiny_bert_dir, tiny_bert_seqcls_adapter, sentences
):
    prompted, _, _ = load_prompted_model(
        str(tiny_bert_dir), str(tiny_bert_seqcls_adapter), batch_size=1
    )
    one_by_one = prompted.predict_proba(sentences)
    prompted.batch_size = 3
    batched = prompted.predict_proba(sentences)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    single = prompted.predict_proba([sentences[2]])
    np.testing.assert_allclose(single[0], one_by_one[2], atol=1e-5)
    assert prompted.predict_proba([]).shape == (0, 2)


def test_label_logits_is_differentiable_in_the_prompt(
    tiny_bert_dir, tiny_bert_seqcls_adapter, sentences
):
    prompted, soft, _ = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_seqcls_adapter))
    batch = prompted.encode(sentences[:2])
    prompt = soft.embeddings.clone().requires_grad_(True)
    inputs = prompted.embed(batch.input_ids).detach().requires_grad_(True)
    logits = prompted.label_logits(prompt, inputs, batch.attention_mask, batch.token_type_ids)
    assert logits.shape == (2, 2)
    logits[:, 1].sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert inputs.grad is not None and inputs.grad.abs().sum() > 0
    # the tensor forward and predict_proba agree
    np.testing.assert_allclose(
        torch.softmax(logits.detach(), -1).numpy(), prompted.predict_proba(sentences[:2]), atol=1e-5
    )


def test_with_prompt_none_is_the_bare_model(tiny_bert_dir, tiny_bert_seqcls_adapter, sentences):
    prompted, _, loaded = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_seqcls_adapter))
    bare = prompted.with_prompt(None)
    assert bare.num_virtual_tokens == 0
    encoded = loaded.tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(loaded.model(**encoded).logits.double(), -1).numpy()
    np.testing.assert_allclose(bare.predict_proba(sentences), expected, atol=1e-5)
    assert np.abs(bare.predict_proba(sentences) - prompted.predict_proba(sentences)).max() > 1e-3


def test_verbalizer_tokens_and_shared_first_token(tiny_gpt2_dir):
    loaded = load_base_model(str(tiny_gpt2_dir), task="causal-lm")
    tokenizer = loaded.tokenizer
    assert verbalizer_token_ids(tokenizer, ["good", "bad"]) == tokenizer.convert_tokens_to_ids(
        ["Ġgood", "Ġbad"]
    )
    with pytest.raises(InputError, match="share a first token"):
        verbalizer_token_ids(tokenizer, ["xylophone", "xenon"])


def test_predictions_frame_columns():
    probs = np.array([[0.2, 0.8], [0.9, 0.1]])
    table = predictions_frame(["a", "b"], probs, ["neg", "pos"], text_column="sentence")
    assert list(table.columns) == ["sentence", "p_neg", "p_pos", "prediction"]
    assert table["prediction"].tolist() == ["pos", "neg"]
