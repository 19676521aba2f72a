"""Mixed-length batches read every text as PEFT reads it alone (no padding).

The reference is PEFT's own forward (``PeftModel.from_pretrained``) run on one
text at a time, so nothing is padded and every model pools or reads where it
should. promptaudit batches right-padded texts of different lengths; every task
and architecture must give the same probabilities to 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptaudit.prompted_model import load_prompted_model

TOLERANCE = 1e-4
#: Texts of very different lengths: in a batch most of them are padded.
MIXED = [
    "good",
    "a bad movie .",
    "the film was good and the acting was good but the plot was bad .",
    "ok .",
    "bad bad bad bad bad bad bad bad bad bad bad bad bad bad bad bad bad bad .",
    "the movie",
]


def _adapter(base_dir, out, *, auto_class, task_type, n_virtual, seed, num_labels=None):
    from peft import PromptTuningConfig, get_peft_model

    torch.manual_seed(seed)
    kwargs = {} if num_labels is None else {"num_labels": num_labels}
    base = auto_class.from_pretrained(base_dir, **kwargs)
    if getattr(base.config, "pad_token_id", None) is None:
        base.config.pad_token_id = base.config.eos_token_id
    model = get_peft_model(
        base, PromptTuningConfig(task_type=task_type, num_virtual_tokens=n_virtual)
    )
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.8)
    model.save_pretrained(out)
    return out


def _peft_one_at_a_time(base_dir, adapter, texts, *, auto_class, read, num_labels=None):
    """PEFT's forward on each text alone; ``read(tokenizer, encoded, output)`` -> logits."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    torch.manual_seed(999)
    kwargs = {} if num_labels is None else {"num_labels": num_labels}
    model = PeftModel.from_pretrained(auto_class.from_pretrained(base_dir, **kwargs), str(adapter))
    model.eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            rows.append(read(tokenizer, model, text))
    return torch.softmax(torch.stack(rows).double(), dim=-1).numpy()


def _classifier_logits(tokenizer, model, text):
    """A sequence classifier's logits for one text alone (no padding)."""
    return model(**tokenizer(text, return_tensors="pt")).logits[0]


def _ours(base_dir, adapter, texts, **options):
    prompted, _, _ = load_prompted_model(str(base_dir), str(adapter), batch_size=len(texts),
                                         **options)
    batch = prompted.encode(texts)
    assert (batch.attention_mask == 0).any()  # the batch really is padded
    return prompted.predict_proba(texts)


def test_gpt2_sequence_classifier_reads_the_last_real_token(tiny_gpt2_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification as Auto

    adapter = _adapter(tiny_gpt2_dir, tmp_path / "a", auto_class=Auto, task_type="SEQ_CLS",
                       n_virtual=4, seed=11, num_labels=2)

    reference = _peft_one_at_a_time(tiny_gpt2_dir, adapter, MIXED, auto_class=Auto,
                                    read=_classifier_logits, num_labels=2)
    ours = _ours(tiny_gpt2_dir, adapter, MIXED)
    assert np.abs(ours - reference).max() <= TOLERANCE
    # not trivial: the texts get different probabilities
    assert np.ptp(reference[:, 0]) > 0.01


def test_bert_sequence_classifier_matches_peft_alone(tiny_bert_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification as Auto

    adapter = _adapter(tiny_bert_dir, tmp_path / "a", auto_class=Auto, task_type="SEQ_CLS",
                       n_virtual=3, seed=12, num_labels=2)

    reference = _peft_one_at_a_time(tiny_bert_dir, adapter, MIXED, auto_class=Auto,
                                    read=_classifier_logits, num_labels=2)
    assert np.abs(_ours(tiny_bert_dir, adapter, MIXED) - reference).max() <= TOLERANCE
    assert np.ptp(reference[:, 0]) > 1e-3


def test_gpt2_causal_lm_reads_next_token_at_the_last_real_token(tiny_gpt2_dir, tmp_path):
    from transformers import AutoModelForCausalLM as Auto

    adapter = _adapter(tiny_gpt2_dir, tmp_path / "a", auto_class=Auto, task_type="CAUSAL_LM",
                       n_virtual=5, seed=13)
    labels = ["good", "bad", "ok"]

    def read(tokenizer, model, text):
        ids = [tokenizer.encode(" " + w)[0] for w in labels]
        encoded = tokenizer(text, return_tensors="pt")
        return model(**encoded).logits[0, -1, ids]  # the final position: no padding

    reference = _peft_one_at_a_time(tiny_gpt2_dir, adapter, MIXED, auto_class=Auto, read=read)
    ours = _ours(tiny_gpt2_dir, adapter, MIXED, labels=labels)
    assert np.abs(ours - reference).max() <= TOLERANCE
    assert np.ptp(reference[:, 0]) > 0.01


def test_bert_masked_lm_matches_peft_alone(tiny_bert_dir, tmp_path):
    from transformers import AutoModelForMaskedLM as Auto

    adapter = _adapter(tiny_bert_dir, tmp_path / "a", auto_class=Auto,
                       task_type="FEATURE_EXTRACTION", n_virtual=3, seed=14)
    labels = ["good", "bad", "ok"]

    def read(tokenizer, model, text):
        # PEFT has no masked-LM task and its FEATURE_EXTRACTION forward drops token types,
        # so the forward is done by hand from PEFT's prompt, one text alone: [prompt ;
        # embed([CLS] text [SEP] [MASK] [SEP])], token types zero over the virtual tokens
        # (PEFT's SEQ_CLS convention), MLM logits at the appended mask.
        encoded = tokenizer(text, tokenizer.mask_token, return_tensors="pt")
        base = model.get_base_model()
        embeds = torch.cat([model.get_prompt(batch_size=1),
                            base.get_input_embeddings()(encoded["input_ids"])], dim=1)
        types = torch.cat([torch.zeros(1, 3, dtype=torch.long), encoded["token_type_ids"]], 1)
        logits = base(inputs_embeds=embeds, token_type_ids=types).logits[0, 3:]
        at_mask = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()[-1, 0])
        return logits[at_mask, tokenizer.convert_tokens_to_ids(labels)]

    reference = _peft_one_at_a_time(tiny_bert_dir, adapter, MIXED, auto_class=Auto, read=read)
    ours = _ours(tiny_bert_dir, adapter, MIXED, task="masked-lm", labels=labels)
    assert np.abs(ours - reference).max() <= TOLERANCE
    assert np.ptp(reference[:, 0]) > 0.01


@pytest.mark.parametrize("batch_size", [1, 2, 6])
def test_gpt2_classifier_batch_size_does_not_change_probabilities(
    tiny_gpt2_dir, tmp_path, batch_size
):
    from transformers import AutoModelForSequenceClassification as Auto

    adapter = _adapter(tiny_gpt2_dir, tmp_path / "a", auto_class=Auto, task_type="SEQ_CLS",
                       n_virtual=4, seed=15, num_labels=2)
    alone, _, _ = load_prompted_model(str(tiny_gpt2_dir), str(adapter), batch_size=1)
    batched, _, _ = load_prompted_model(str(tiny_gpt2_dir), str(adapter), batch_size=batch_size)
    assert np.abs(alone.predict_proba(MIXED) - batched.predict_proba(MIXED)).max() <= 1e-5


def test_masked_lm_reads_the_appended_mask_when_the_text_holds_one(tiny_bert_dir, tmp_path):
    from transformers import AutoModelForMaskedLM as Auto

    adapter = _adapter(tiny_bert_dir, tmp_path / "a", auto_class=Auto,
                       task_type="FEATURE_EXTRACTION", n_virtual=3, seed=16)
    labels = ["good", "bad", "ok"]
    prompted, _, loaded = load_prompted_model(str(tiny_bert_dir), str(adapter),
                                              task="masked-lm", labels=labels)
    tokenizer = loaded.tokenizer
    texts = ["the [MASK] was good .", "[MASK] [MASK] movie", "a fun film ."]
    batch = prompted.encode(texts)
    for row, text in enumerate(texts):
        # by hand: [CLS] text [SEP] [MASK] [SEP]; the appended mask sits two before the end
        ids = tokenizer(text, tokenizer.mask_token)["input_ids"]
        assert ids.count(tokenizer.mask_token_id) == text.count("[MASK]") + 1
        assert int(batch.readout_index[row]) == len(ids) - 2
    # and the probabilities are those at the appended mask, not at the text's own
    mask_in_text = prompted.predict_proba(texts[:1])
    with torch.no_grad():
        encoded = tokenizer(texts[0], tokenizer.mask_token, return_tensors="pt")
        embeds = torch.cat([prompted.prompt[None], loaded.model.get_input_embeddings()(
            encoded["input_ids"])], dim=1)
        types = torch.cat([torch.zeros(1, 3, dtype=torch.long), encoded["token_type_ids"]], 1)
        logits = loaded.model(inputs_embeds=embeds, token_type_ids=types).logits[0, 3:]
    label_ids = tokenizer.convert_tokens_to_ids(labels)
    n = encoded["input_ids"].shape[1]
    at_appended = torch.softmax(logits[n - 2, label_ids].double(), -1).numpy()
    at_text_mask = torch.softmax(logits[2, label_ids].double(), -1).numpy()
    assert np.abs(mask_in_text[0] - at_appended).max() <= TOLERANCE
    assert np.abs(at_appended - at_text_mask).max() > 1e-3  # the two readings differ


def test_every_variant_reads_the_same_input_tokens(tiny_bert_dir, tiny_bert_seqcls_adapter):
    """Soft prompt, projected hard prompt, init text and no prompt cut texts alike."""
    from transformers import AutoTokenizer

    prompted, _, loaded = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_seqcls_adapter),
                                              max_length=8)
    long_texts = [" ".join(["good movie"] * 12), "bad " * 20, "ok ."]
    hard = prompted.word_embeddings[torch.tensor([5, 6, 7, 8])].detach()
    variants = {"soft": prompted, "projected": prompted.with_prompt(hard),
                "none": prompted.with_prompt(None)}
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    by_hand = tokenizer(long_texts, truncation=True, max_length=8, padding=True,
                        return_tensors="pt")["input_ids"]
    assert by_hand.shape[1] == 8
    for name, variant in variants.items():
        assert variant.max_length == 8, name
        assert torch.equal(variant.encode(long_texts).input_ids, by_hand), name
        assert variant.count_truncated(long_texts) == 2, name
    # no prompt: the bare classifier on exactly those 8 tokens, one text at a time
    with torch.no_grad():
        expected = torch.cat([
            torch.softmax(loaded.model(input_ids=row[row != 0][None]).logits.double(), -1)
            for row in by_hand
        ]).numpy()
    assert np.abs(variants["none"].predict_proba(long_texts) - expected).max() <= TOLERANCE


def test_attribution_reads_decoder_classifiers_like_peft(tiny_gpt2_dir, tmp_path):
    """The attribution forward (PromptedModel.label_logits under Captum) pools right too."""
    from transformers import AutoModelForSequenceClassification as Auto

    from promptaudit.attribution import IntegratedGradients, PromptAttributor

    adapter = _adapter(tiny_gpt2_dir, tmp_path / "a", auto_class=Auto, task_type="SEQ_CLS",
                       n_virtual=4, seed=11, num_labels=2)

    reference = _peft_one_at_a_time(tiny_gpt2_dir, adapter, MIXED, auto_class=Auto,
                                    read=_classifier_logits, num_labels=2)
    prompted, _, _ = load_prompted_model(str(tiny_gpt2_dir), str(adapter), batch_size=6)
    attributor = PromptAttributor(prompted, IntegratedGradients(n_steps=4), batch_size=6)
    result = attributor.attribute(MIXED)
    for example, row in zip(result["examples"], reference, strict=True):
        assert example["target_probability"] == pytest.approx(row[example["target"]], abs=1e-4)


def test_training_loss_reads_decoder_classifiers_at_the_last_real_token(tiny_gpt2_dir):
    """Training's batched logits (what the loss sees) equal PEFT's one-at-a-time forward."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from promptaudit.models import Task
    from promptaudit.training import _label_logits

    torch.manual_seed(21)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_gpt2_dir, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tokenizer.pad_token = tokenizer.eos_token
    base.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(base, PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.8)
    model.eval()
    with torch.no_grad():
        batched = _label_logits(model, tokenizer, MIXED, task=Task.SEQUENCE_CLASSIFICATION,
                                verbalizer=None, max_length=64, n_virtual=3)
        alone = torch.stack([model(**tokenizer(t, return_tensors="pt")).logits[0] for t in MIXED])
    assert (batched - alone).abs().max() <= TOLERANCE
