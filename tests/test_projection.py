"""Tests of promptaudit.projection: nearest words, typicality, drift and fidelity."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import transformers

from promptaudit.errors import InputError
from promptaudit.models import builtin_minilm_dir, load_base_model
from promptaudit.projection import (
    LABEL_IDS_LENGTH_MESSAGE,
    NO_PROMPT_MESSAGE,
    NO_TEXTS_MESSAGE,
    PROJECTED_IDS_LENGTH_MESSAGE,
    PROMPT_SHAPE_MESSAGE,
    SOFT_PROBS_SHAPE_MESSAGE,
    TOP_K_MESSAGE,
    UNKNOWN_METRIC_MESSAGE,
    decoded_token,
    format_projection_table,
    nearest_words,
    project_prompt,
    projection_fidelity,
    projection_trust,
    vocabulary_mask,
)
from promptaudit.prompted_model import PromptedModel, load_prompted_model
from promptaudit.soft_prompts import SoftPrompt, text_init_token_ids

LABELS = ["negative", "positive"]
TEXTS = [
    "a wonderful, moving film",
    "dull and far too long",
    "the cast is great",
    "i hated every minute",
    "an instant classic",
    "boring",
    "not bad at all",
    "a mess from start to finish",
]
LABEL_IDS = [1, 0, 1, 0, 1, 0, 1, 0]
SMALL_SAMPLE = 300  # reference sample in tests where its exact size does not matter

TINY_WORDS = [
    "[PAD]",
    "[unused0]",
    "[unused1]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "movie",
    "was",
    "good",
    "bad",
    "##ing",
    "film",
    "great",
    "a",
    ",",
    ".",
]
TINY_KEPT = list(range(7, len(TINY_WORDS)))
TINY_PADDED_ROWS = 6


# ------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def minilm():
    torch.manual_seed(0)  # the classifier head is freshly initialised
    return load_base_model(
        "builtin:minilm", task="sequence-classification", num_labels=2, device="cpu"
    )


@pytest.fixture(scope="module")
def minilm_kept(minilm):
    """Filtered MiniLM vocabulary computed independently of the module under test."""
    tokenizer = minilm.tokenizer
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.array(
        [
            i
            for i, tok in enumerate(tokens)
            if i not in special and not re.fullmatch(r"\[unused\d+\]", tok)
        ]
    )


def prompted_with(loaded, prompt: torch.Tensor) -> PromptedModel:
    return PromptedModel(
        loaded.model, loaded.tokenizer, prompt, task="sequence-classification", labels=LABELS
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 1-layer BERT with an 18-word WordPiece vocabulary and 6 padded embedding rows."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    (folder / "vocab.txt").write_text("\n".join(TINY_WORDS) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer.from_pretrained(str(folder))
    config = transformers.BertConfig(
        vocab_size=len(TINY_WORDS) + TINY_PADDED_ROWS,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    model.requires_grad_(False)
    return model, tokenizer


def brute_force(prompt: np.ndarray, embeddings: np.ndarray, kept: np.ndarray, metric: str, k: int):
    """Top-k ids and scores per position with a plain loop (ties to the lower id)."""
    ids, scores = [], []
    words = embeddings[kept].astype(np.float64)
    for row in prompt.astype(np.float64):
        if metric == "cosine":
            score = words @ row / (np.linalg.norm(words, axis=1) * np.linalg.norm(row))
        elif metric == "dot":
            score = words @ row
        else:
            score = -np.linalg.norm(words - row, axis=1)
        order = np.lexsort((kept, -score))[:k]
        ids.append(kept[order].tolist())
        scores.append(score[order])
    return ids, np.array(scores)


# ------------------------------------------------------------- nearest words
def test_exact_token_rows_project_back_with_cosine_one(minilm):
    tokenizer = minilm.tokenizer
    embeddings = minilm.model.get_input_embeddings().weight
    ids = tokenizer("the movie was wonderful", add_special_tokens=False)["input_ids"]
    neighbors = nearest_words(embeddings[ids], embeddings, tokenizer=tokenizer, top_k=3)
    assert [row[0]["token_id"] for row in neighbors] == ids
    assert [row[0]["token"] for row in neighbors] == ["the", "movie", "was", "wonderful"]
    for row in neighbors:
        assert row[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert row[0]["score"] > row[1]["score"] >= row[2]["score"]
        assert set(row[0]) == {"token", "token_id", "score", "display", "word", "piece"}
        assert row[0]["word"] == row[0]["token"] and row[0]["piece"] is False


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_top_k_equals_brute_force(minilm, minilm_kept, metric):
    embeddings = minilm.model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randn(6, embeddings.shape[1], generator=generator) * 0.06
    prompt[0] = embeddings[3185] + 0.01 * torch.randn(embeddings.shape[1], generator=generator)
    neighbors = nearest_words(
        prompt, embeddings, tokenizer=minilm.tokenizer, top_k=7, metric=metric
    )
    want_ids, want_scores = brute_force(prompt.numpy(), embeddings.numpy(), minilm_kept, metric, 7)
    assert [[nb["token_id"] for nb in row] for row in neighbors] == want_ids
    got_scores = np.array([[nb["score"] for nb in row] for row in neighbors])
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-9)
    assert all(isinstance(nb["score"], float) for row in neighbors for nb in row)


def test_minilm_mask_is_the_independent_filter(minilm, minilm_kept):
    rows = minilm.model.get_input_embeddings().weight.shape[0]
    mask = vocabulary_mask(minilm.tokenizer, rows)
    assert mask.dtype == torch.bool and mask.shape == (rows,)
    assert mask.nonzero().squeeze(1).tolist() == minilm_kept.tolist()


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_special_and_unused_tokens_never_appear(minilm, metric):
    tokenizer = minilm.tokenizer
    embeddings = minilm.model.get_input_embeddings().weight
    rows = tokenizer.convert_tokens_to_ids(
        ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[unused5]", "[unused500]"]
    )
    neighbors = nearest_words(
        embeddings[rows], embeddings, tokenizer=tokenizer, top_k=20, metric=metric
    )
    shown = {nb["token"] for row in neighbors for nb in row}
    assert not shown & {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"}
    assert not any(tok.startswith("[unused") for tok in shown)


def test_tiny_mask_drops_special_unused_and_padded_rows(tiny):
    model, tokenizer = tiny
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == len(tokenizer) + TINY_PADDED_ROWS
    assert vocabulary_mask(tokenizer, rows).nonzero().squeeze(1).tolist() == TINY_KEPT
    assert vocabulary_mask(tokenizer, 10).tolist() == [False] * 7 + [True] * 3


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_padded_rows_never_appear_even_when_closest(tiny, metric):
    model, tokenizer = tiny
    embeddings = model.get_input_embeddings().weight.detach().clone()
    target = torch.full((embeddings.shape[1],), 10.0)
    embeddings[len(TINY_WORDS) :] = target  # padded rows: exact matches with a huge norm
    embeddings[4] = -target  # [CLS] is the exact match of the second row
    prompt = torch.stack([target, -target])
    neighbors = nearest_words(
        prompt, embeddings, tokenizer=tokenizer, top_k=len(TINY_KEPT), metric=metric
    )
    for row in neighbors:
        assert sorted(nb["token_id"] for nb in row) == TINY_KEPT


# ------------------------------------------------------------------- display
def test_display_keeps_wordpiece_continuations(minilm):
    tokenizer = minilm.tokenizer
    assert decoded_token(tokenizer, "##ing") == "##ing"
    assert decoded_token(tokenizer, "movie") == "movie"


def test_display_of_byte_level_and_sentencepiece_tokens():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {
        "<|endoftext|>": 0,
        "Ġ": 1,
        "Ġmovie": 2,
        "ing": 3,
        "Ċ": 4,
        "Ã": 5,
        "<|reserved_special_token_0|>": 6,
        "▁film": 7,
    }
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>"
    )
    assert decoded_token(tokenizer, "Ġmovie") == " movie"
    assert decoded_token(tokenizer, "ing") == "ing"
    assert decoded_token(tokenizer, "Ċ") == "\n"
    assert decoded_token(tokenizer, "Ã") == "<0xC3>"
    assert decoded_token(tokenizer, "▁film") == " film"
    assert vocabulary_mask(tokenizer, 10).tolist() == (
        [False] + [True] * 5 + [False] + [True] + [False] * 2
    )


# ---------------------------------------------------------------- typicality
def test_typicality_against_brute_force(tiny):
    model, tokenizer = tiny
    embeddings = model.get_input_embeddings().weight.detach()
    prompt = torch.stack([embeddings[8], embeddings[9] * 40.0, torch.randn(8) * 0.01])
    projection = project_prompt(
        prompted_with_tiny(model, tokenizer, prompt), top_k=3, reference_sample_size=1000
    )
    words = embeddings[TINY_KEPT].double().numpy()
    norms = np.linalg.norm(words, axis=1)
    unit = words / norms[:, None]
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nn = similarity.max(axis=1)
    reference = projection["reference"]
    assert reference["vocab_size"] == len(TINY_KEPT) == reference["sample_size"]
    assert reference["vocab_rows"] == len(TINY_WORDS) + TINY_PADDED_ROWS
    assert reference["median_norm"] == pytest.approx(np.median(norms), rel=1e-6)
    for q in (5, 25, 50, 75, 95):
        assert reference["nn_similarity_quantiles"][f"p{q}"] == pytest.approx(
            np.percentile(nn, q), abs=1e-6
        )
    # the chance reference: best cosine of random vectors with the words' mean and spread,
    # estimated here independently (numpy, another seed, 20x the sample)
    rng = np.random.default_rng(123)
    random_rows = words.mean(axis=0) + words.std(axis=0, ddof=1) * rng.standard_normal(
        (20000, words.shape[1]))
    random_best = ((random_rows / np.linalg.norm(random_rows, axis=1)[:, None]) @ unit.T).max(1)
    threshold = reference["chance_threshold"]
    assert threshold == pytest.approx(np.percentile(random_best, 99), abs=0.03)
    assert reference["chance_sample_size"] == 1000
    for position, row in zip(projection["positions"], prompt.double().numpy(), strict=True):
        norm = np.linalg.norm(row)
        best = float((unit @ row / norm).max())
        assert position["norm"] == pytest.approx(norm, rel=1e-9)
        assert position["norm_ratio"] == pytest.approx(norm / np.median(norms), rel=1e-6)
        pct = position["norm_percentile"]  # a row equal to a word may count itself or not
        assert 100 * np.mean(norms < norm - 1e-6) <= pct <= 100 * np.mean(norms < norm + 1e-6)
        assert position["best_similarity"] == pytest.approx(best, abs=1e-9)
        assert position["similarity_percentile"] == pytest.approx(100 * np.mean(nn < best))
        assert position["off_manifold"] == (best <= threshold)
        assert position["unusual_norm"] == (not 1 <= pct <= 99)
        assert position["chance_percentile"] == pytest.approx(
            100 * np.mean(np.sort(random_best) < best), abs=3.0)
    word, huge, _ = projection["positions"]
    assert word["best_similarity"] == pytest.approx(1.0) and word["similarity_percentile"] == 100
    # a word scaled 40x still points at that word: readable, but its norm is unusual
    assert not huge["off_manifold"] and huge["unusual_norm"]
    assert huge["norm_percentile"] == 100.0


def prompted_with_tiny(model, tokenizer, prompt: torch.Tensor) -> PromptedModel:
    return PromptedModel(model, tokenizer, prompt, task="sequence-classification", labels=LABELS)


# --------------------------------------------------------------------- drift
INIT_TEXT = "classify the sentiment of this movie review"


def text_init_soft_prompt(embeddings: torch.Tensor, ids: list[int]) -> SoftPrompt:
    return SoftPrompt(
        embeddings=embeddings[ids].detach().clone(),
        source="test-adapter",
        peft_type="PROMPT_TUNING",
        init_method="TEXT",
        init_text=INIT_TEXT,
        config={"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": INIT_TEXT},
    )


def test_untrained_text_init_is_still_init_everywhere(minilm):
    embeddings = minilm.model.get_input_embeddings().weight
    ids = text_init_token_ids(minilm.tokenizer, INIT_TEXT, 12)
    assert ids[0] == minilm.tokenizer.cls_token_id  # PEFT copies [CLS]/[SEP] too
    soft = text_init_soft_prompt(embeddings, ids)
    projection = project_prompt(
        prompted_with(minilm, soft.embeddings),
        soft_prompt=soft,
        top_k=2,
        reference_sample_size=SMALL_SAMPLE,
    )
    assert projection["init"] == {"method": "TEXT", "text": INIT_TEXT}
    tokens = minilm.tokenizer.convert_ids_to_tokens(ids)
    special = set(minilm.tokenizer.all_special_ids)
    for position, token_id, token in zip(projection["positions"], ids, tokens, strict=True):
        assert position["init_token_id"] == token_id and position["init_token"] == token
        assert position["init_similarity"] == pytest.approx(1.0, abs=1e-6)
        # drift reads the same vocabulary as the nearest words: [CLS]/[SEP] are not in it
        assert position["init_in_vocabulary"] is (token_id not in special)
        assert position["still_init"] is (True if token_id not in special else None)
        if token_id in special:
            assert position["neighbors"][0]["token_id"] not in special


def test_noise_moves_the_prompt_away_from_its_init(minilm):
    embeddings = minilm.model.get_input_embeddings().weight
    ids = text_init_token_ids(minilm.tokenizer, INIT_TEXT, 12)
    soft = text_init_soft_prompt(embeddings, ids)
    generator = torch.Generator().manual_seed(3)
    noisy = soft.embeddings + 0.08 * torch.randn(soft.embeddings.shape, generator=generator)
    terrible = embeddings[minilm.tokenizer.convert_tokens_to_ids("terrible")].detach()
    noisy[6:] = 0.3 * soft.embeddings[6:] + 0.7 * terrible  # pulled towards another word
    projection = project_prompt(
        prompted_with(minilm, noisy), soft_prompt=soft, top_k=2, reference_sample_size=SMALL_SAMPLE
    )
    positions = projection["positions"]
    similarity = [p["init_similarity"] for p in positions]
    assert max(similarity) < 0.999
    assert np.mean(similarity) < 0.8
    for position in positions[6:]:
        assert position["still_init"] is (False if position["init_in_vocabulary"] else None)
        assert position["neighbors"][0]["token"] == "terrible"
    assert [p["init_in_vocabulary"] for p in positions].count(False) == 3  # [CLS] [SEP] [CLS]
    for position, row, token_id in zip(projection["positions"], noisy, ids, strict=True):
        want = torch.nn.functional.cosine_similarity(
            row.double(), embeddings[token_id].double(), dim=0
        )
        assert position["init_similarity"] == pytest.approx(float(want), abs=1e-9)


def test_plain_peft_text_init_adapter_reads_as_its_init_text(tmp_path):
    from peft import PromptTuningConfig, get_peft_model

    base_dir = str(builtin_minilm_dir())
    torch.manual_seed(0)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    config = PromptTuningConfig(
        task_type="SEQ_CLS", num_virtual_tokens=6, prompt_tuning_init="TEXT",
        prompt_tuning_init_text="great movie", tokenizer_name_or_path=base_dir,
    )
    get_peft_model(base, config).save_pretrained(tmp_path)
    prompted, soft, _ = load_prompted_model(base_dir, str(tmp_path), task="sequence-classification")
    projection = project_prompt(prompted, soft_prompt=soft, top_k=1,
                                reference_sample_size=SMALL_SAMPLE)
    assert projection["init"] == {"method": "TEXT", "text": "great movie"}
    positions = projection["positions"]
    assert [p["init_token"] for p in positions] == [
        "[CLS]", "great", "movie", "[SEP]", "[CLS]", "great"]
    assert [p["still_init"] for p in positions] == [None, True, True, None, None, True]
    assert all(p["init_similarity"] == pytest.approx(1.0, abs=1e-6) for p in positions)
    assert [p["neighbors"][0]["token"] for p in positions[1:3]] == ["great", "movie"]


@pytest.mark.parametrize("init_method", [None, "RANDOM"])
def test_drift_fields_are_null_without_text_init(tiny, init_method):
    model, tokenizer = tiny
    prompt = model.get_input_embeddings().weight.detach()[[7, 8]].clone()
    soft = SoftPrompt(embeddings=prompt, source="t", init_method=init_method)
    projection = project_prompt(
        prompted_with_tiny(model, tokenizer, prompt), soft_prompt=soft, top_k=2
    )
    assert projection["init"] is None
    for position in projection["positions"]:
        assert [
            position[k] for k in ("init_token", "init_token_id", "init_similarity", "still_init")
        ] == [None] * 4


# ------------------------------------------------------------------ fidelity
def test_fidelity_equals_direct_computation(minilm):
    embeddings = minilm.model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(5)
    ids = minilm.tokenizer("rate this review", add_special_tokens=False)["input_ids"]
    prompt = embeddings[ids].detach() + 0.05 * torch.randn(len(ids), 384, generator=generator)
    prompted = prompted_with(minilm, prompt)
    projection = project_prompt(
        prompted, top_k=3, texts=TEXTS, label_ids=LABEL_IDS, reference_sample_size=SMALL_SAMPLE
    )
    top1 = [p["neighbors"][0]["token_id"] for p in projection["positions"]]
    soft = prompted.predict_proba(TEXTS)
    hard = prompted.with_prompt(embeddings[top1]).predict_proba(TEXTS)
    soft_pred, hard_pred, labels = soft.argmax(1), hard.argmax(1), np.array(LABEL_IDS)
    fidelity = projection["fidelity"]
    assert fidelity["projected_token_ids"] == top1
    assert (
        fidelity["projected_text"] == minilm.tokenizer.decode(top1) == projection["projected_text"]
    )
    assert fidelity["n_examples"] == len(TEXTS)
    assert fidelity["agreement"] == pytest.approx(np.mean(soft_pred == hard_pred))
    assert fidelity["soft_accuracy"] == pytest.approx(np.mean(soft_pred == labels))
    assert fidelity["projected_accuracy"] == pytest.approx(np.mean(hard_pred == labels))
    assert fidelity["mean_prob_shift"] == pytest.approx(0.5 * np.abs(soft - hard).sum(1).mean())
    direct = projection_fidelity(prompted, TEXTS, soft_probs=soft, projected_ids=top1)
    assert direct["agreement"] == fidelity["agreement"]
    assert direct["soft_accuracy"] is None and direct["projected_accuracy"] is None


class FixedPrompted:
    """A stand-in PromptedModel whose projected predictions are set by the test."""

    labels = LABELS
    num_virtual_tokens = 2
    word_embeddings = torch.zeros(5, 4)

    class tokenizer:  # mimics PromptedModel.tokenizer
        @staticmethod
        def decode(ids):
            return " ".join(f"w{i}" for i in ids)

    def __init__(self, projected: np.ndarray):
        self.projected = projected

    def with_prompt(self, prompt):
        assert prompt.shape == (2, 4)
        return self

    def predict_proba(self, texts):
        return self.projected


@pytest.mark.parametrize(
    ("changed", "level", "reading"),
    [
        (0, "high", "High fidelity: the nearest words behave like the soft prompt"),
        (1, "high", "High fidelity: the nearest words behave like the soft prompt"),
        (2, "moderate", "Moderate fidelity: the nearest words are a partial explanation"),
        (3, "moderate", "Moderate fidelity: the nearest words are a partial explanation"),
        (4, "low", "Low fidelity: the nearest words are a weak explanation"),
    ],
)
def test_verdict_levels_and_sentence(changed, level, reading):
    soft = np.tile([0.2, 0.8], (10, 1))
    projected = soft.copy()
    projected[:changed] = [0.9, 0.1]
    fidelity = projection_fidelity(
        FixedPrompted(projected),
        ["x"] * 10,
        soft_probs=soft,
        projected_ids=[1, 2],
        label_ids=[1] * 10,
    )
    assert fidelity["level"] == level
    assert fidelity["verdict"] == (
        f"{reading}: replacing the prompt by them changes {10 * changed:.1f}% of predictions "
        f"({changed} of 10). Accuracy is 100.0% with the soft prompt and "
        f"{100 - 10 * changed:.1f}% with the words."
    )
    assert fidelity["projected_text"] == "w1 w2"


# ------------------------------------------------------- result and its table
def test_projection_is_json_deterministic_and_tabulates(tiny):
    model, tokenizer = tiny
    generator = torch.Generator().manual_seed(7)
    prompt = torch.randn(3, 8, generator=generator)
    prompted = prompted_with_tiny(model, tokenizer, prompt)
    first = project_prompt(prompted, top_k=4, metric="l2", texts=TEXTS[:4], label_ids=LABEL_IDS[:4])
    second = project_prompt(
        prompted, top_k=4, metric="l2", texts=TEXTS[:4], label_ids=LABEL_IDS[:4]
    )
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert json.loads(json.dumps(first)) == first
    assert {
        "metric",
        "top_k",
        "num_virtual_tokens",
        "positions",
        "reference",
        "fidelity",
        "summary",
    } <= set(first)
    assert (first["metric"], first["top_k"], first["num_virtual_tokens"]) == ("l2", 4, 3)
    assert all(nb["score"] <= 0 for p in first["positions"] for nb in p["neighbors"])
    assert first["fidelity"]["verdict"] in first["summary"]
    table = format_projection_table(first)
    lines = table.splitlines()
    assert lines[1].split()[:3] == ["pos", "nearest", "words"]
    assert [line.split()[0] for line in lines[3:6]] == ["0", "1", "2"]
    assert lines[-2] == first["fidelity"]["verdict"]
    assert lines[-1].startswith(f"Trust in this reading: {first['trust']['level']}.")
    assert repr(first["positions"][0]["neighbors"][0]["display"]) in lines[3]


def test_table_without_fidelity_says_so(tiny):
    model, tokenizer = tiny
    prompt = model.get_input_embeddings().weight.detach()[[8, 12]].clone()
    projection = project_prompt(prompted_with_tiny(model, tokenizer, prompt), top_k=1)
    assert projection["fidelity"] is None
    assert projection["projected_text"] == tokenizer.decode([8, 12])
    table = format_projection_table(projection)
    assert "\nFidelity: not measured (no texts given).\n" in table
    # two exact words, but never high trust without a fidelity check
    assert table.endswith("Trust in this reading: moderate. 2 of 2 virtual tokens are closer to "
                          "a word than chance; the words were not checked against predictions.")
    # a word piece is marked, never glued to its neighbour ("movieing")
    assert "'…ing' 1.000" in table
    assert projection["projected_words"] == "movie …ing"
    assert 'Projected words: "movie …ing" (… marks a piece of a word)' in table


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("metric", ["cos", "euclidean", ""])
def test_unknown_metric(tiny, metric):
    model, tokenizer = tiny
    embeddings = model.get_input_embeddings().weight
    want = UNKNOWN_METRIC_MESSAGE.format(metric=metric, allowed="cosine, dot, l2")
    with pytest.raises(InputError) as info:
        nearest_words(embeddings[[7]], embeddings, tokenizer=tokenizer, metric=metric)
    assert str(info.value) == want
    with pytest.raises(InputError) as info:
        project_prompt(prompted_with_tiny(model, tokenizer, embeddings[[7]]), metric=metric)
    assert str(info.value) == want


@pytest.mark.parametrize("top_k", [0, -1, len(TINY_KEPT) + 1, 2.0, True])
def test_top_k_out_of_range(tiny, top_k):
    model, tokenizer = tiny
    embeddings = model.get_input_embeddings().weight
    want = TOP_K_MESSAGE.format(top_k=top_k, vocab_size=len(TINY_KEPT))
    with pytest.raises(InputError) as info:
        nearest_words(embeddings[[7]], embeddings, tokenizer=tokenizer, top_k=top_k)
    assert str(info.value) == want
    with pytest.raises(InputError) as info:
        project_prompt(prompted_with_tiny(model, tokenizer, embeddings[[7]]), top_k=top_k)
    assert str(info.value) == want


def test_top_k_may_equal_the_filtered_vocabulary(tiny):
    model, tokenizer = tiny
    embeddings = model.get_input_embeddings().weight
    rows = nearest_words(embeddings[[7]], embeddings, tokenizer=tokenizer, top_k=len(TINY_KEPT))
    assert len(rows[0]) == len(TINY_KEPT)


def test_other_bad_inputs(tiny):
    model, tokenizer = tiny
    embeddings = model.get_input_embeddings().weight
    with pytest.raises(InputError) as info:
        nearest_words(torch.zeros(2, 5), embeddings, tokenizer=tokenizer)
    assert str(info.value) == PROMPT_SHAPE_MESSAGE.format(shape=(2, 5), hidden=8)
    with pytest.raises(InputError) as info:
        project_prompt(prompted_with_tiny(model, tokenizer, None))
    assert str(info.value) == NO_PROMPT_MESSAGE
    prompted = prompted_with_tiny(model, tokenizer, embeddings[[7, 8]])
    with pytest.raises(InputError) as info:
        projection_fidelity(prompted, [], projected_ids=[7, 8])
    assert str(info.value) == NO_TEXTS_MESSAGE
    with pytest.raises(InputError) as info:
        projection_fidelity(prompted, ["a", "b"], projected_ids=[7])
    assert str(info.value) == PROJECTED_IDS_LENGTH_MESSAGE.format(got=1, n=2)
    with pytest.raises(InputError) as info:
        projection_fidelity(prompted, ["a", "b"], projected_ids=[7, 8], label_ids=[1])
    assert str(info.value) == LABEL_IDS_LENGTH_MESSAGE.format(got=1, n=2)
    with pytest.raises(InputError) as info:
        projection_fidelity(
            prompted, ["a", "b"], projected_ids=[7, 8], soft_probs=np.ones((3, 2)) / 2
        )
    assert str(info.value) == SOFT_PROBS_SHAPE_MESSAGE.format(shape=(3, 2), n=2, n_labels=2)


# --------------------------------------------------------------------- trust
KNOWN_TEXT = "an honest review of the film"


def _trust_case(minilm_seqcls_adapter, prompt_for):
    """Project ``prompt_for(embeddings, init_ids)`` with a trained head and fidelity texts."""
    prompted, _, loaded = load_prompted_model("builtin:minilm", str(minilm_seqcls_adapter),
                                              device="cpu")
    embeddings = prompted.word_embeddings.detach()
    ids = text_init_token_ids(loaded.tokenizer, KNOWN_TEXT, 8)
    soft = text_init_soft_prompt(embeddings, ids)
    soft = SoftPrompt(embeddings=prompt_for(embeddings, ids), source="test", peft_type=
                      "PROMPT_TUNING", init_method="TEXT", init_text=KNOWN_TEXT,
                      config=soft.config | {"prompt_tuning_init_text": KNOWN_TEXT})
    projection = project_prompt(prompted.with_prompt(soft.embeddings), soft_prompt=soft,
                                top_k=1, texts=TEXTS, reference_sample_size=SMALL_SAMPLE)
    return projection, loaded.tokenizer, ids


def test_barely_trained_text_prompt_reads_as_its_text_with_high_trust(minilm_seqcls_adapter):
    generator = torch.Generator().manual_seed(0)

    def barely_trained(embeddings, ids):  # a few small steps away from the init text
        rows = embeddings[ids].clone()
        return rows + 0.02 * rows.norm(dim=1, keepdim=True) / rows.shape[1] ** 0.5 * torch.randn(
            rows.shape, generator=generator)

    projection, tokenizer, ids = _trust_case(minilm_seqcls_adapter, barely_trained)
    special = set(tokenizer.all_special_ids)
    words = [p["neighbors"][0]["token_id"] for p, i in zip(projection["positions"], ids,
                                                          strict=True) if i not in special]
    assert tokenizer.decode(words) == KNOWN_TEXT  # it reads as the text it started from
    assert all(p["still_init"] for p in projection["positions"] if p["init_in_vocabulary"])
    assert not any(p["off_manifold"] for p in projection["positions"])
    assert projection["fidelity"]["agreement"] >= 0.9
    assert projection["trust"]["level"] == "high"
    assert "Trust in this reading: high." in projection["summary"]


def test_random_prompt_reads_with_low_trust(minilm_seqcls_adapter):
    generator = torch.Generator().manual_seed(1)

    def random_prompt(embeddings, ids):  # word-sized random vectors: no meaning at all
        scale = float(embeddings.norm(dim=1).median()) / embeddings.shape[1] ** 0.5
        return scale * torch.randn(len(ids), embeddings.shape[1], generator=generator)

    projection, _, _ = _trust_case(minilm_seqcls_adapter, random_prompt)
    positions = projection["positions"]
    assert sum(p["off_manifold"] for p in positions) >= 7  # at chance: readings mean nothing
    assert all(p["off_manifold_reasons"] == ["at chance"] for p in positions if p["off_manifold"])
    assert projection["trust"]["level"] == "low"
    assert projection["trust"]["readable"] <= 1
    assert "Trust in this reading: low." in projection["summary"]


def test_trust_rule_by_hand():
    def case(off: list[bool], agreement: float | None) -> str:
        projection = {"positions": [{"off_manifold": o} for o in off],
                      "fidelity": None if agreement is None else {"agreement": agreement}}
        return projection_trust(projection)["level"]

    assert case([False] * 5, 0.95) == "high"
    assert case([False] * 4 + [True], 0.9) == "high"  # 80% readable, agreement 0.9
    assert case([False] * 3 + [True] * 2, 0.95) == "moderate"  # 60% readable
    assert case([False] * 5, 0.8) == "moderate"
    assert case([False] * 5, 0.69) == "low"
    assert case([False] * 2 + [True] * 3, 1.0) == "low"  # 40% readable
    assert case([False] * 5, None) == "moderate"  # never high unchecked
    assert case([True] * 5, None) == "low"
