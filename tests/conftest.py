"""Shared fixtures: tiny models built from configs, plain-PEFT adapters, PEFT references.

Everything here is built once per test session (``tmp_path_factory``) and offline:
a tiny BERT (WordPiece vocabulary written here), a tiny GPT-2 (byte-level BPE
vocabulary and merges written here), and the bundled MiniLM (``builtin:minilm``).
Adapters are made with plain PEFT (``get_peft_model`` + ``save_pretrained``), never
with promptaudit, so the tests compare promptaudit against an independent reference.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

#: Words of the tiny vocabularies; sentences in the tests use only these.
WORDS = (
    "the a an movie film was is it this that i liked loved hated and but not very so "
    "good bad great awful fun boring plot acting story ending ok really positive negative"
).split()

#: Sentences of different lengths (padding matters) built from :data:`WORDS`.
SENTENCES = [
    "the movie was good",
    "a boring film",
    "i hated the plot and the acting was awful",
    "this story is really great",
    "ok",
    "i loved it but the ending was not very good",
    "the acting was bad",
    "fun",
]


# Hypothesis profiles for the property suites (gates, ratios, parsers, paths).
# "default": few examples, so the whole suite stays within its ten-minute budget on two cores.
# "nightly": many more; run with `python -m pytest --hypothesis-profile nightly -k property`
# (or HYPOTHESIS_PROFILE=nightly). Counterexamples found are kept as plain tests.
settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
settings.register_profile(
    "nightly",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


class _PlantMarker:
    """Unpickling this creates a marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _perturb_trainable(model: torch.nn.Module, *, scale: float, seed: int) -> None:
    """Add seeded noise to every trainable tensor so the adapter is not its init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * scale)


@pytest.fixture(scope="session", autouse=True)
def _quiet_libraries():
    """Keep transformers' load reports and progress bars out of the test output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("peft").setLevel(logging.ERROR)
    yield


@pytest.fixture
def malicious_pt(tmp_path) -> tuple[Path, Path]:
    """``(path, marker)``: a ``.pt`` file whose unrestricted unpickling creates ``marker``."""
    marker = tmp_path / "pwned-marker"
    path = tmp_path / "evil.pt"
    torch.save({"prompt": _PlantMarker(str(marker))}, path)
    assert not marker.exists()
    return path, marker


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """Directory of the bundled MiniLM (``builtin:minilm``)."""
    from promptaudit.models import builtin_minilm_dir

    return str(builtin_minilm_dir())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with a 37-word WordPiece vocabulary.

    Saved as ``BertForPreTraining`` so it loads as a sequence classifier (with its
    pooler; the classifier head is new) and as a masked LM (with its MLM head).
    """
    from transformers import BertConfig, BertForPreTraining, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "."]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=96,
        num_labels=2,
        pad_token_id=0,
    )
    BertForPreTraining(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide GPT-2 with a byte-level BPE vocabulary of 256 bytes plus
    whole words (``Ġgood``, ``Ġbad``, ...) so label words are one token each."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    path = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = {char: i for i, char in enumerate(_bytes_to_unicode().values())}
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        current = "Ġ"
        for char in word:
            if (current, char) not in merges:
                merges.append((current, char))
            current += char
            vocab.setdefault(current, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merges)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=96,
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _plain_peft_adapter(
    base_dir: str | Path,
    out: Path,
    *,
    task_type: str,
    peft_config,
    seed: int,
    num_labels: int = 2,
) -> Path:
    """Make an adapter with plain PEFT: get_peft_model, perturb, save_pretrained."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    if task_type == "SEQ_CLS":
        base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)
    else:
        base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = get_peft_model(base, peft_config)
    _perturb_trainable(model, scale=0.5, seed=seed)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def minilm_seqcls_adapter(tmp_path_factory, minilm_dir) -> Path:
    """A PROMPT_TUNING SEQ_CLS adapter on MiniLM (8 virtual tokens, trained head),
    made with plain PEFT and perturbed away from its initialisation."""
    from peft import PromptTuningConfig

    config = PromptTuningConfig(
        task_type="SEQ_CLS", num_virtual_tokens=8, prompt_tuning_init="RANDOM"
    )
    return _plain_peft_adapter(
        minilm_dir,
        tmp_path_factory.mktemp("minilm-seqcls"),
        task_type="SEQ_CLS",
        peft_config=config,
        seed=1,
    )


@pytest.fixture(scope="session")
def tiny_bert_seqcls_adapter(tmp_path_factory, tiny_bert_dir) -> Path:
    """A PROMPT_TUNING SEQ_CLS adapter on the tiny BERT (4 virtual tokens)."""
    from peft import PromptTuningConfig

    config = PromptTuningConfig(
        task_type="SEQ_CLS", num_virtual_tokens=4, prompt_tuning_init="RANDOM"
    )
    return _plain_peft_adapter(
        tiny_bert_dir,
        tmp_path_factory.mktemp("bert-seqcls"),
        task_type="SEQ_CLS",
        peft_config=config,
        seed=2,
    )


@pytest.fixture(scope="session")
def tiny_gpt2_causal_adapter(tmp_path_factory, tiny_gpt2_dir) -> Path:
    """A PROMPT_TUNING CAUSAL_LM adapter on the tiny GPT-2 (5 virtual tokens)."""
    from peft import PromptTuningConfig

    config = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=5, prompt_tuning_init="RANDOM"
    )
    return _plain_peft_adapter(
        tiny_gpt2_dir,
        tmp_path_factory.mktemp("gpt2-causal"),
        task_type="CAUSAL_LM",
        peft_config=config,
        seed=3,
    )


@pytest.fixture(scope="session")
def tiny_bert_ptuning_adapter(tmp_path_factory, tiny_bert_dir) -> Path:
    """A P_TUNING (PromptEncoderConfig, MLP encoder) SEQ_CLS adapter on the tiny BERT."""
    from peft import PromptEncoderConfig

    config = PromptEncoderConfig(task_type="SEQ_CLS", num_virtual_tokens=4, encoder_hidden_size=16)
    return _plain_peft_adapter(
        tiny_bert_dir,
        tmp_path_factory.mktemp("bert-ptuning"),
        task_type="SEQ_CLS",
        peft_config=config,
        seed=4,
    )


@pytest.fixture(scope="session")
def tiny_bert_prefix_adapter(tmp_path_factory, tiny_bert_dir) -> Path:
    """A PREFIX_TUNING SEQ_CLS adapter (per-layer key/value prefixes) on the tiny BERT."""
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("bert-prefix")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    get_peft_model(
        base, PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4)
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_lora_adapter(tmp_path_factory, tiny_bert_dir) -> Path:
    """A LoRA SEQ_CLS adapter on the tiny BERT (not a soft prompt)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("bert-lora")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    config = LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"])
    get_peft_model(base, config).save_pretrained(out)
    return out


def peft_reference_probabilities(
    base_dir: str | Path,
    adapter_dir: str | Path,
    texts: Sequence[str],
    *,
    task: str,
    labels: Sequence[str] = (),
    num_labels: int = 2,
) -> np.ndarray:
    """Label probabilities from PEFT's own forward (``PeftModel.from_pretrained``).

    ``sequence-classification``: softmax of the classifier logits.
    ``causal-lm``: softmax over the logits of the label words' tokens (`` word``)
    at the last real input token, read from the PeftModel's full logits (which
    cover the virtual tokens too, hence the offset).
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    torch.manual_seed(12345)  # any random head must be replaced by the adapter's
    if task == "sequence-classification":
        base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)
    else:
        base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    n_virtual = PeftConfig.from_pretrained(str(adapter_dir)).num_virtual_tokens
    encoded = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        if task == "sequence-classification":
            logits = model(**encoded).logits
        else:
            encoded.pop("token_type_ids", None)
            full = model(**encoded).logits  # (batch, n_virtual + seq, vocab)
            assert full.shape[1] == n_virtual + encoded["input_ids"].shape[1]
            last = encoded["attention_mask"].sum(dim=1) - 1 + n_virtual
            ids = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(" " + w))[0] for w in labels]
            logits = full[torch.arange(len(texts)), last][:, ids]
    return torch.softmax(logits.double(), dim=-1).numpy()


@pytest.fixture(scope="session")
def peft_probs() -> Callable[..., np.ndarray]:
    """:func:`peft_reference_probabilities`, the independent reference forward."""
    return peft_reference_probabilities


@pytest.fixture(scope="session")
def minilm_seqcls_reference(minilm_dir, minilm_seqcls_adapter, sentences) -> np.ndarray:
    """PEFT's probabilities of :data:`SENTENCES` for the MiniLM adapter, ``(8, 2)``."""
    return peft_reference_probabilities(
        minilm_dir, minilm_seqcls_adapter, sentences, task="sequence-classification"
    )


@pytest.fixture(scope="session")
def gpt2_causal_reference(tiny_gpt2_dir, tiny_gpt2_causal_adapter, sentences) -> np.ndarray:
    """PEFT's probabilities of :data:`SENTENCES` over the verbalizer ``good, bad``."""
    return peft_reference_probabilities(
        tiny_gpt2_dir, tiny_gpt2_causal_adapter, sentences, task="causal-lm", labels=["good", "bad"]
    )


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """The CLI reconfigures the root logger onto the (captured) stderr; undo that."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_configure(config):
    """One torch thread per pytest-xdist worker: two workers on two cores, no oversubscription."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
