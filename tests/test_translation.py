"""Tests of promptaudit.translation: a faithful, readable, round-trip-safe stand-in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from promptaudit.errors import InputError
from promptaudit.prompted_model import PromptedModel, load_prompted_model
from promptaudit.translation import (
    SEVERAL_READINGS_SENTENCE,
    TranslateSettings,
    _repair_round_trip,
    _uniqueness,
    readable_vocabulary,
    round_trip_ids,
    split_rows,
    translate_prompt,
    wilson_interval,
    word_overlap,
)

#: A WordPiece vocabulary with whole words, word pieces, an unused slot, a one-letter
#: word, digits and a capitalised word that an uncased tokenizer cannot give back.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]",
         "the", "movie", "was", "good", "bad", "great", "awful", "film", "plot", "fun",
         "boring", "loved", "hated", "it", "and", "##ing", "##s", "x", "42", "Good", "."]
WHOLE = {"the", "movie", "was", "good", "bad", "great", "awful", "film", "plot", "fun",
         "boring", "loved", "hated", "it", "and"}
FAST = dict(steps=6, restarts=2, eval_every=3, patience=2, top_k=2, sweeps=1, search_rows=8,
            batch_size=8)


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = sorted(WHOLE)
    return [" ".join(rng.choice(words, size=int(rng.integers(2, 7)))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny():
    """A 1-layer, 16-wide BERT classifier over :data:`VOCAB` (seeded random weights)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                        num_labels=2, pad_token_id=0)
    model = BertForSequenceClassification(config).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, tokenizer


def _prompted(tiny, words: list[str]) -> PromptedModel:
    model, tokenizer = tiny
    ids = tokenizer.convert_tokens_to_ids(words)
    prompt = model.get_input_embeddings().weight[ids].detach().clone()
    return PromptedModel(model, tokenizer, prompt, task="sequence-classification",
                         labels=["negative", "positive"], max_length=16)


# ------------------------------------------------------------------ vocabulary
def test_default_vocabulary_is_whole_round_trip_safe_words(tiny):
    _, tokenizer = tiny
    ids, info = readable_vocabulary(tokenizer, len(VOCAB))
    assert {VOCAB[i] for i in ids.tolist()} == WHOLE  # no ##pieces, specials, x, 42, Good
    assert info["size"] == len(WHOLE) and info["source"] == "words"


def test_word_list_restricts_the_vocabulary_and_names_what_it_drops(tiny, tmp_path):
    _, tokenizer = tiny
    path = tmp_path / "words.txt"
    path.write_text("good\nbad\ning\nnonexistentword\ngood\n", encoding="utf-8")
    ids, info = readable_vocabulary(tokenizer, len(VOCAB), word_list=path)
    assert [VOCAB[i] for i in ids.tolist()] == ["good", "bad"]
    assert "nonexistentword" in info["dropped"] and "ing" in info["dropped"]
    path.write_text("nonexistentword\n", encoding="utf-8")
    with pytest.raises(InputError, match="words.txt: only 0 usable whole word"):
        readable_vocabulary(tokenizer, len(VOCAB), word_list=path)
    with pytest.raises(InputError, match="missing.txt"):
        readable_vocabulary(tokenizer, len(VOCAB), word_list=tmp_path / "missing.txt")


def test_round_trip_check_and_repair(tiny):
    _, tokenizer = tiny
    good, capital, great = (VOCAB.index(w) for w in ("good", "Good", "great"))
    assert round_trip_ids(tokenizer, [good, great])
    assert not round_trip_ids(tokenizer, [good, capital])  # "Good" comes back as "good"
    repaired, replaced = _repair_round_trip(tokenizer, [good, capital],
                                            [[good], [capital, great]])
    assert repaired == [good, great] and replaced == 1
    assert round_trip_ids(tokenizer, repaired)


# ------------------------------------------------------------------ statistics
def test_wilson_interval_matches_the_formula():
    # 45 of 50: p = 0.9, z = 1.96 -> the textbook Wilson interval (0.7864, 0.9565)
    low, high = wilson_interval(45, 50)
    assert low == pytest.approx(0.78641, abs=1e-4) and high == pytest.approx(0.95652, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 0) is None


def test_word_overlap_and_the_several_readings_sentence():
    assert word_overlap(["a", "b", "c"], ["c", "b", "d"]) == {"jaccard": 0.5,
                                                              "positional": 1 / 3}
    runs = [{"seed": 0, "words": ["a", "b"], "token_ids": [1, 2], "interval": [0.8, 0.95]},
            {"seed": 1, "words": ["a", "c"], "token_ids": [1, 3], "interval": [0.85, 0.97]}]
    result = _uniqueness(runs)
    assert result["equally_good"] and result["sentence"] == SEVERAL_READINGS_SENTENCE
    runs[1]["interval"] = [0.4, 0.6]  # clearly worse: not equally good
    assert not _uniqueness(runs)["equally_good"]


def test_split_rows_is_a_seeded_partition():
    settings = TranslateSettings(seed=3)
    opt, val, held = split_rows(50, settings)
    assert sorted([*opt, *val, *held]) == list(range(50))
    assert len(held) == 15 and len(val) == 10
    again = split_rows(50, TranslateSettings(seed=3))
    assert all((a == b).all() for a, b in zip((opt, val, held), again, strict=True))


# ------------------------------------------------------- independent reference
def test_a_prompt_made_of_allowed_words_is_translated_back_to_those_words(tiny):
    """By construction the best hard prompt is the soft prompt itself (KL 0): the
    translation must find those words and agree on every held-out row."""
    target = ["great", "movie", "hated", "plot"]
    prompted = _prompted(tiny, target)
    texts = _texts(40)
    translation = translate_prompt(prompted, texts, settings=TranslateSettings(**FAST))
    assert translation["words"] == target
    assert translation["text"] == "great movie hated plot"
    assert translation["fidelity"]["agreement"] == 1.0
    assert translation["fidelity"]["n_heldout"] == 12
    assert translation["round_trip_exact"] and translation["whole_words"]
    assert translation["seeds"] == [0, 1] and len(translation["runs"]) == 2


def test_translation_improves_on_a_prompt_off_the_vocabulary(tiny):
    """A soft prompt between words: the search must reach at least the nearest words'
    agreement on held-out rows (its validation selection never does worse there by much)."""
    model, tokenizer = tiny
    generator = torch.Generator().manual_seed(5)
    prompt = torch.randn(3, 16, generator=generator)
    prompted = PromptedModel(model, tokenizer, prompt, task="sequence-classification",
                             labels=["negative", "positive"], max_length=16)
    translation = translate_prompt(prompted, _texts(60, seed=1),
                                   settings=TranslateSettings(**FAST))
    assert set(translation["words"]) <= WHOLE
    assert translation["fidelity"]["agreement"] >= translation["nearest_words"]["agreement"] - 0.1


# ------------------------------------------------------------ PEFT reference
def test_fidelity_equals_a_direct_peft_computation(tiny_bert_dir, tiny_bert_seqcls_adapter):
    """Put the translation's word embeddings into PEFT's own prompt encoder and predict."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompted, _, _ = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_seqcls_adapter),
                                         device="cpu")
    from tests.conftest import WORDS  # noqa: PLC0415

    rng = np.random.default_rng(2)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 8)))) for _ in range(40)]
    labels = rng.integers(0, 2, size=40)
    settings = TranslateSettings(**FAST)
    translation = translate_prompt(prompted, texts, label_ids=labels, settings=settings)
    _, _, held = split_rows(len(texts), settings)
    held_texts = [texts[i] for i in held]

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    peft_model = PeftModel.from_pretrained(base, str(tiny_bert_seqcls_adapter)).eval()
    encoded = tokenizer(held_texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        soft_pred = peft_model(**encoded).logits.argmax(-1).numpy()
        weights = base.get_input_embeddings().weight
        encoder = peft_model.prompt_encoder["default"].embedding
        encoder.weight.copy_(weights[torch.tensor(translation["token_ids"])])
        hard_pred = peft_model(**encoded).logits.argmax(-1).numpy()
    agree = int((soft_pred == hard_pred).sum())
    assert translation["fidelity"]["agreement"] == pytest.approx(agree / len(held))
    assert translation["fidelity"]["interval"] == pytest.approx(wilson_interval(agree, len(held)))
    assert translation["accuracy"]["translation"] == pytest.approx(
        float((hard_pred == labels[held]).mean()))
    assert translation["accuracy"]["soft_prompt"] == pytest.approx(
        float((soft_pred == labels[held]).mean()))
    assert tokenizer(translation["text"], add_special_tokens=False)["input_ids"] == \
        translation["token_ids"]


def test_same_seed_same_translation(tiny):
    model, tokenizer = tiny
    prompt = torch.randn(3, 16, generator=torch.Generator().manual_seed(9))
    prompted = PromptedModel(model, tokenizer, prompt, task="sequence-classification",
                             labels=["negative", "positive"], max_length=16)
    texts = _texts(30, seed=4)
    first = translate_prompt(prompted, texts, settings=TranslateSettings(**FAST, seed=7))
    second = translate_prompt(prompted, texts, settings=TranslateSettings(**FAST, seed=7))
    assert first["token_ids"] == second["token_ids"]
    assert first["fidelity"] == second["fidelity"]
    assert [r["token_ids"] for r in first["runs"]] == [r["token_ids"] for r in second["runs"]]
    assert first["seeds"] == [7, 8]


def test_bad_settings_are_named():
    with pytest.raises(InputError, match="translate.restarts: 1; must be >= 2"):
        TranslateSettings(restarts=1)
    with pytest.raises(InputError, match="translate.steps: 0"):
        TranslateSettings(steps=0)


def test_too_few_texts_are_refused(tiny):
    with pytest.raises(InputError, match="texts: 3 given"):
        translate_prompt(_prompted(tiny, ["good"]), ["a", "b", "c"])


# ------------------------------------------------------------------ surfaces
def test_spec_section_validates_and_rejects_unknown_keys():
    from promptaudit.errors import SpecError
    from promptaudit.spec import ProjectionSpec, TranslateSpec

    spec = ProjectionSpec.model_validate({"translate": {"steps": 50, "seed": 3}})
    assert spec.translate.settings() == TranslateSettings(steps=50, seed=3)
    with pytest.raises(Exception, match="stepz"):
        ProjectionSpec.model_validate({"translate": {"stepz": 5}})
    with pytest.raises(Exception, match="restarts"):
        ProjectionSpec.model_validate({"translate": {"restarts": 1}})
    with pytest.raises(SpecError, match="--translate-restarts 1"):
        TranslateSpec.from_options(restarts=1)
    # the spec's defaults are the settings' defaults
    assert TranslateSpec().settings() == TranslateSettings()


def test_cli_translate_json_and_bad_values(tiny_bert_dir, tiny_bert_seqcls_adapter, tmp_path):
    from typer.testing import CliRunner

    from promptaudit.cli import app
    from tests.conftest import WORDS  # noqa: PLC0415

    rng = np.random.default_rng(3)
    data = tmp_path / "rows.csv"
    data.write_text("text\n" + "\n".join(" ".join(rng.choice(WORDS, size=4))
                                         for _ in range(24)) + "\n", encoding="utf-8")
    runner = CliRunner()
    base = ["project", "-m", str(tiny_bert_dir), "-p", str(tiny_bert_seqcls_adapter),
            "--data", str(data), "--text-column", "text"]
    result = runner.invoke(app, [*base, "--translate", "--translate-steps", "4",
                                 "--translate-seed", "2", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    translation = json.loads(result.stdout)["translation"]
    assert translation["seeds"] == [2, 3] and translation["steps"] == 4
    assert translation["fidelity"]["n_heldout"] == 7 and translation["round_trip_exact"]
    from promptaudit.result_sections import TranslationResult

    assert TranslationResult.from_dict(translation).to_dict() == translation
    result = runner.invoke(app, [*base, "--translate", "--translate-restarts", "1"])
    assert result.exit_code == 2 and "--translate-restarts 1" in result.output
    result = runner.invoke(app, [*base[:5], "--translate"])
    assert result.exit_code == 2 and "--translate: needs --data" in result.output
    result = runner.invoke(app, [*base, "--translate-steps", "3"])
    assert result.exit_code == 2 and "add --translate" in result.output


# ------------------------------------------------------------------ reports
def _hand_translation(text: str) -> dict:
    run = {"seed": 0, "text": text, "token_ids": [5, 6], "words": text.split(),
           "round_trip_exact": True, "repaired_positions": 0, "agreement": 0.9,
           "interval": [0.8, 0.95], "accuracy": 0.8, "validation_agreement": 0.9, "steps": 10,
           "sweeps": 1, "seconds": 1.0}
    other = {**run, "seed": 1, "text": "great plot", "words": ["great", "plot"],
             "token_ids": [7, 8], "agreement": 0.88, "interval": [0.78, 0.94]}
    translation = {
        "text": text, "token_ids": [5, 6], "words": text.split(), "seed": 0,
        "fidelity": {"agreement": 0.9, "interval": [0.8, 0.95], "interval_method": "wilson",
                     "n_heldout": 100, "level": "high"},
        "accuracy": {"translation": 0.8, "soft_prompt": 0.82}, "round_trip_exact": True,
        "whole_words": True, "seeds": [0, 1], "steps": 10, "seconds": 2.0,
        "runs": [run, other], "uniqueness": _uniqueness([run, other]),
    }
    from promptaudit.translation import stand_in_sentence, translation_summary

    translation["stand_in"] = stand_in_sentence(translation)
    translation["summary"] = translation_summary(translation)
    return translation


def test_report_panel_shows_the_translation_first_escaped_with_its_cautions():
    import html as html_lib
    import re
    from pathlib import Path

    from promptaudit.report import render_html, render_markdown

    result = json.loads((Path(__file__).parent / "fixtures" / "sample_result.json").read_text())
    payload = "<script>alert(1)</script> **bold**"
    result["projection"]["translation"] = _hand_translation(payload)
    page = render_html(result)
    assert "<script>alert(1)</script>" not in page
    text = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    panel = text[text.index("What the prompt reads as"):]
    stand_in = ("These words are a plain-text stand-in that reproduces 90% (80\u201395%, 95% "
                "interval) of the soft prompt's decisions on 100 held-out rows \u2014 not the "
                "prompt's meaning.")
    assert stand_in in panel
    assert panel.index(payload) < panel.index("Read as its nearest vocabulary words")
    assert SEVERAL_READINGS_SENTENCE in panel
    assert "Accuracy on those rows: 80% with these words, 82% with the soft prompt." in panel
    markdown = render_markdown(result)
    assert "**Plain-text stand-in:**" in markdown and "\\*\\*bold\\*\\*" in markdown
    assert "&lt;script&gt;" in markdown
    assert markdown.index("Plain-text stand-in") < markdown.index("**Reads as:**")
    from promptaudit.result_sections import ProjectionResult

    section = ProjectionResult.from_dict(result["projection"])
    assert section.to_dict() == result["projection"]


def test_spec_file_translate_section(tmp_path):
    from promptaudit.errors import SpecError
    from promptaudit.spec import load_spec

    base = ("name: t\nmodel: {base: builtin:minilm}\nprompt: {path: p}\n"
            "data: {path: d.csv, label_column: label}\n")
    path = tmp_path / "audit.yaml"
    path.write_text(base + "projection: {translate: {steps: 7, vocabulary: words.txt}}\n",
                    encoding="utf-8")
    spec = load_spec(path)
    assert spec.projection.translate.steps == 7
    assert spec.projection.translate.vocabulary == str((tmp_path / "words.txt").resolve())
    path.write_text(base + "projection: {translate: {stepz: 7}}\n", encoding="utf-8")
    with pytest.raises(SpecError, match="unknown key 'projection.translate.stepz'.*'steps'"):
        load_spec(path)
    path.write_text(base + "projection: {translate: {restarts: 1}}\n", encoding="utf-8")
    with pytest.raises(SpecError, match="projection.translate.restarts"):
        load_spec(path)


def test_audit_spec_runs_the_translation_into_the_result(tmp_path, tiny_bert_dir):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import audit_helpers as helpers

    from promptaudit.pipeline import run_audit
    from promptaudit.result_sections import TranslationResult
    from promptaudit.spec import load_spec

    prompt = helpers.write_prompt(tmp_path / "prompt.safetensors")
    frame = helpers.eval_frame()
    helpers.make_seqcls_model(tiny_bert_dir, tmp_path / "model", prompt=prompt,
                              texts=frame["sentence"].tolist())
    helpers.write_csv(tmp_path / "eval.csv", frame)
    spec = helpers.base_spec(model="model", prompt="prompt.safetensors", data="eval.csv")
    spec["projection"]["translate"] = {"steps": 4, "eval_every": 2, "top_k": 2,
                                       "search_rows": 8, "seed": 5}
    spec["attribution"]["enabled"] = False
    spec["counterfactuals"] = None
    spec.pop("counterfactuals")
    spec["gates"] = [g for g in spec["gates"] if g["metric"] != "counterfactual_flip_rate"]
    result = run_audit(load_spec(helpers.write_spec(tmp_path / "audit.yaml", spec)),
                       command="pytest")
    translation = result["projection"]["translation"]
    assert translation["seeds"] == [5, 6] and translation["rows"]["heldout"] == 7
    assert translation["round_trip_exact"] and translation["whole_words"]
    assert TranslationResult.from_dict(translation).to_dict() == translation
