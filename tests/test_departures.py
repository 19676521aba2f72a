"""Departures from plain language and position importance, checked against plain PEFT.

Independent references: PEFT's own ``PeftModel`` forward with its prompt-encoder
rows edited by hand (position importance), PEFT's own ``TEXT`` initialisation
(the init text of the demo prompt), and hand-built ``inputs_embeds`` forwards of
the bare transformers model (an instruction typed in front of the input).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import beta, binomtest

from promptaudit.attribution import IntegratedGradients
from promptaudit.departures import (
    EMPTY_INSTRUCTION_MESSAGE,
    TOKEN_IDS_MESSAGE,
    compare_instructions,
    explain_departures,
    find_departures,
    instruction_candidate,
    token_ids_candidate,
)
from promptaudit.errors import InputError
from promptaudit.position_importance import position_importance
from promptaudit.prompted_model import load_prompted_model
from promptaudit.stats import clopper_pearson_interval, wilson_interval

TEXTS = [
    "the movie was good", "a boring film", "i hated the plot and the acting was awful",
    "this story is really great", "ok", "i loved it but the ending was not very good",
    "the acting was bad", "fun", "a great film", "the plot was boring", "it was awful",
    "i liked the story", "not very good", "really fun and great", "the ending was bad",
    "an ok film but a boring plot",
]


@pytest.fixture(scope="module")
def tiny_prompted(tiny_bert_dir, tiny_bert_seqcls_adapter):
    prompted, soft, _ = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_seqcls_adapter),
                                            device="cpu", labels=["negative", "positive"])
    return prompted


def _peft_model(base_dir, adapter):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(999)
    base = AutoModelForSequenceClassification.from_pretrained(str(base_dir), num_labels=2)
    return PeftModel.from_pretrained(base, str(adapter)).eval()


def _peft_predictions(model, tokenizer, texts) -> np.ndarray:
    with torch.no_grad():
        return np.array([int(model(**tokenizer(t, return_tensors="pt")).logits[0].argmax())
                         for t in texts])


# ------------------------------------------------------------- intervals
def test_wilson_interval_matches_scipy():
    for k, n in [(0, 10), (3, 10), (10, 10), (57, 600)]:
        expected = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx([expected.low, expected.high], abs=1e-12)
    assert wilson_interval(0, 0) is None


def test_clopper_pearson_matches_scipy():
    for k, n in [(0, 12), (4, 12), (12, 12)]:
        expected = binomtest(k, n).proportion_ci(0.95, method="exact")
        assert clopper_pearson_interval(k, n) == pytest.approx([expected.low, expected.high])
    assert clopper_pearson_interval(3, 9)[0] == pytest.approx(beta.ppf(0.025, 3, 7))


# ------------------------------------------------------- position importance
def test_position_importance_equals_a_direct_peft_ablation(tiny_bert_dir,
                                                           tiny_bert_seqcls_adapter,
                                                           tiny_prompted):
    # a seeded prompt with one position that decides everything and three that do nothing
    custom = torch.randn(4, tiny_prompted.hidden_size,
                         generator=torch.Generator().manual_seed(0)) * 3
    result = position_importance(tiny_prompted.with_prompt(custom), TEXTS,
                                 max_examples=len(TEXTS))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    model = _peft_model(tiny_bert_dir, tiny_bert_seqcls_adapter)
    words = model.get_input_embeddings().weight.detach()
    special = set(tokenizer.all_special_ids)
    neutral = words[[i for i in range(len(tokenizer)) if i not in special]].double().mean(0)
    table = model.prompt_encoder["default"].embedding.weight
    original = custom.clone()
    with torch.no_grad():
        table.copy_(original)
    soft = _peft_predictions(model, tokenizer, TEXTS)
    expected = []
    for position in range(original.shape[0]):
        with torch.no_grad():
            table.copy_(original)
            table[position] = neutral.float()
        expected.append(int((_peft_predictions(model, tokenizer, TEXTS) != soft).sum()))
    assert [p["changed"] for p in result["positions"]] == expected
    assert any(expected) and not all(expected)  # not vacuous: one matters, others do not
    assert result["important"] and result["ignored"]
    n = len(TEXTS)
    for p, changed in zip(result["positions"], expected, strict=True):
        assert p["share"] == changed / n
        assert p["interval"] == pytest.approx(wilson_interval(changed, n))
        assert p["matters"] == (p["interval"][0] > result["floor"])
    assert result["neutral"] == "mean_word_embedding"
    assert sorted(result["important"] + result["ignored"]) == list(range(original.shape[0]))


def test_position_importance_uses_only_the_first_rows(tiny_prompted):
    capped = position_importance(tiny_prompted, TEXTS, max_examples=5)
    direct = position_importance(tiny_prompted, TEXTS[:5], max_examples=5)
    assert capped["n_examples"] == 5
    assert capped["positions"] == direct["positions"]


# ------------------------------------------------------------- instructions
def test_instruction_agreement_equals_a_hand_built_forward(tiny_bert_dir, tiny_prompted):
    from transformers import AutoModelForSequenceClassification

    instruction = "positive or negative"
    candidate = instruction_candidate(tiny_prompted, instruction)
    tokenizer = tiny_prompted.tokenizer
    assert list(candidate.token_ids) == tokenizer(instruction, add_special_tokens=False)[
        "input_ids"]
    soft = tiny_prompted.predict_proba(TEXTS).argmax(1)
    labels = np.array([1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0])
    ranked, predictions = compare_instructions(tiny_prompted, [candidate], TEXTS,
                                               soft_pred=soft, label_ids=labels)
    # independent: the bare model, its own head, the instruction's embeddings typed in front
    model = tiny_prompted.model
    words = model.get_input_embeddings()
    expected = []
    with torch.no_grad():
        for text in TEXTS:
            encoded = tokenizer(text, return_tensors="pt")
            embeds = torch.cat([words(torch.tensor([candidate.token_ids])),
                                words(encoded["input_ids"])], dim=1)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long)
            types = torch.zeros(embeds.shape[:2], dtype=torch.long)
            expected.append(int(model(inputs_embeds=embeds, attention_mask=mask,
                                      token_type_ids=types).logits[0].argmax()))
    expected = np.array(expected)
    assert predictions[0].tolist() == expected.tolist()
    entry = ranked[0]
    assert entry["agreement"] == float((expected == soft).mean())
    assert entry["disagreements"] == int((expected != soft).sum())
    assert entry["accuracy"] == float((expected == labels).mean())
    assert entry["agreement_interval"] == pytest.approx(
        wilson_interval(int((expected == soft).sum()), len(TEXTS)))
    del AutoModelForSequenceClassification


def test_candidates_are_ranked_by_agreement_and_translation_ids_plug_in(tiny_prompted):
    soft_probs = tiny_prompted.predict_proba(TEXTS)
    words = tiny_prompted.word_embeddings.detach()
    tokenizer = tiny_prompted.tokenizer
    # a "translation" given as token ids: the nearest words of the prompt rows
    ids = [int((words - row).norm(dim=1).argmin()) for row in tiny_prompted.prompt]
    candidates = [instruction_candidate(tiny_prompted, "the film"),
                  token_ids_candidate(tiny_prompted, ids, text="stand-in")]
    ranked, departures = explain_departures(tiny_prompted, TEXTS, soft_probs=soft_probs,
                                            candidates=candidates, positive=1,
                                            max_attributed=0)
    agreements = [r["agreement"] for r in ranked]
    assert agreements == sorted(agreements, reverse=True)
    assert {r["source"] for r in ranked} == {"instruction", "translation"}
    translation = next(r for r in ranked if r["source"] == "translation")
    assert translation["token_ids"] == ids and translation["text"] == "stand-in"
    direct = tiny_prompted.with_prompt(words[ids]).predict_proba(TEXTS).argmax(1)
    assert translation["agreement"] == float((direct == soft_probs.argmax(1)).mean())
    assert departures["instruction"]["text"] == ranked[0]["text"]
    assert departures["attribution"]["n_attributed"] == 0
    del tokenizer


def test_bad_candidates_are_one_line_errors(tiny_prompted):
    with pytest.raises(InputError) as info:
        instruction_candidate(tiny_prompted, "   ")
    assert str(info.value) == EMPTY_INSTRUCTION_MESSAGE.format(text="   ")
    rows = tiny_prompted.word_embeddings.shape[0]
    with pytest.raises(InputError) as info:
        token_ids_candidate(tiny_prompted, [1, rows])
    assert str(info.value) == TOKEN_IDS_MESSAGE.format(source="translation", ids=[1, rows],
                                                       max_id=rows - 1)
    with pytest.raises(InputError, match="instructions: .* tokens; at most"):
        instruction_candidate(tiny_prompted, " ".join(["good"] * 200))


# --------------------------------------------------------------- departures
def test_departures_by_direction_and_over_represented_groups():
    labels = ["reject", "accept"]
    soft = np.array([0] * 40 + [1] * 40)
    other = soft.copy()
    other[:12] = 1  # soft rejects where the instruction accepts: rows 0..11
    other[40:43] = 0  # soft accepts where the instruction rejects: rows 40..42
    gender = np.array(["f"] * 12 + ["m"] * 28 + ["m"] * 3 + ["f"] * 37)
    texts = [f"row {i}" for i in range(80)]
    out = find_departures(texts, soft, other, labels=labels, positive=1,
                          sensitive=pd.DataFrame({"gender": gender}), min_group_size=30)
    assert out["n_departures"] == 15
    first, second = out["directions"]
    assert first["description"] == ("the tuned prompt rejects ('reject') where the instruction "
                                    "accepts ('accept')")
    assert (first["count"], [r["row"] for r in first["rows"]]) == (12, list(range(12)))
    assert second["count"] == 3 and second["description"].startswith("the tuned prompt accepts")
    shares = {row["group"]: row for row in out["groups"]["gender"]}
    # 12 of 15 departures are f, against 49 of 80 rows overall
    assert shares["f"]["n_departures"] == 12 and shares["f"]["share_overall"] == 49 / 80
    assert shares["f"]["interval"] == pytest.approx(clopper_pearson_interval(12, 15))
    assert shares["f"]["over_represented"] is (clopper_pearson_interval(12, 15)[0] > 49 / 80)
    assert shares["m"]["over_represented"] is False


def test_demo_departures_from_the_init_text_equal_a_direct_peft_computation():
    """Demo acceptance: rows where the demo prompt and its init text disagree."""
    from peft import PeftModel, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from promptaudit.corpora import SCREENING_LABELS, SCREENING_POSITIVE_LABEL
    from promptaudit.data import load_table
    from promptaudit.demo import demo_prompt_dir
    from promptaudit.departures import init_text_candidate
    from promptaudit.models import builtin_minilm_dir

    frame = load_table("builtin:screening", seed=0).iloc[:120]
    texts = frame["text"].astype(str).tolist()
    prompted, soft, _ = load_prompted_model("builtin:minilm", str(demo_prompt_dir("clean")),
                                            device="cpu", labels=list(SCREENING_LABELS),
                                            max_length=64)
    positive = list(SCREENING_LABELS).index(SCREENING_POSITIVE_LABEL)
    probs = prompted.predict_proba(texts)
    candidate = init_text_candidate(prompted, soft.init_text, soft.num_virtual_tokens)
    _, departures = explain_departures(
        prompted, texts, soft_probs=probs, candidates=[candidate], positive=positive,
        sensitive=frame[["gender"]].reset_index(drop=True), max_attributed=2,
        method=IntegratedGradients(n_steps=8))
    # independent: PEFT's own TEXT init of the same text, in the demo adapter's model
    base_dir = builtin_minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    fresh = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2),
        PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=soft.num_virtual_tokens,
                           prompt_tuning_init="TEXT", prompt_tuning_init_text=soft.init_text,
                           tokenizer_name_or_path=base_dir))
    init_rows = fresh.prompt_encoder["default"].embedding.weight.detach().clone()
    model = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2),
        str(demo_prompt_dir("clean"))).eval()
    soft_direct = _peft_predictions(model, tokenizer, texts)
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.copy_(init_rows)
    init_direct = _peft_predictions(model, tokenizer, texts)
    differ = np.flatnonzero(soft_direct != init_direct)
    assert departures["n_departures"] == len(differ) > 0
    listed = sorted(r["row"] for d in departures["directions"] for r in d["rows"])
    assert listed == differ.tolist()
    for direction in departures["directions"]:
        for row in direction["rows"]:
            assert row["soft_label"] == SCREENING_LABELS[soft_direct[row["row"]]]
            assert row["instruction_label"] == SCREENING_LABELS[init_direct[row["row"]]]
    attributed = [r for d in departures["directions"] for r in d["rows"] if r["attributed"]]
    assert len(attributed) == departures["attribution"]["n_attributed"] == min(2, len(differ))
    assert all(len(r["tokens"]) == len(r["token_attributions"]) for r in attributed)
    assert "gender" in departures["groups"]


# ------------------------------------------------------------- spec and CLI
def test_spec_fields_defaults_and_bad_values():
    from promptaudit.errors import SpecError
    from promptaudit.spec import parse_spec

    base = {"name": "x", "prompt": {"path": "p"}, "data": {"path": "d.csv", "text_column": "t"}}
    spec = parse_spec(base, source="s.yaml")
    assert spec.projection.instructions == [] and spec.projection.departures is True
    assert spec.projection.position_importance is True
    assert spec.projection.position_importance_max_examples == 50
    assert spec.projection.departures_max_attributed == 2
    assert spec.attribution.group_condition == "predicted_label"
    with pytest.raises(SpecError, match=r"instructions\[1\] is blank"):
        parse_spec({**base, "projection": {"instructions": ["ok", "  "]}}, source="s.yaml")
    with pytest.raises(SpecError, match="group_condition: 'true_label' needs true labels"):
        parse_spec({**base, "attribution": {"group_condition": "true_label"}}, source="s.yaml")
    with pytest.raises(SpecError, match="position_importance_max_examples"):
        parse_spec({**base, "projection": {"position_importance_max_examples": 0}},
                   source="s.yaml")


def test_cli_instruction_needs_data(tiny_bert_dir, tiny_bert_seqcls_adapter):
    from typer.testing import CliRunner

    from promptaudit.cli import app

    result = CliRunner().invoke(app, ["project", "--model", str(tiny_bert_dir), "--prompt",
                                      str(tiny_bert_seqcls_adapter), "--instruction", "good"])
    assert result.exit_code == 2
    assert "--instruction: needs --data" in result.output


def test_cli_project_with_instruction_ranks_it(tmp_path, tiny_bert_dir,
                                               tiny_bert_seqcls_adapter, tiny_prompted):
    from typer.testing import CliRunner

    from promptaudit.cli import app

    data = tmp_path / "d.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(data, index=False)
    result = CliRunner().invoke(app, [
        "project", "--model", str(tiny_bert_dir), "--prompt", str(tiny_bert_seqcls_adapter),
        "--data", str(data), "--labels", "negative,positive", "--instruction", "the film",
        "--max-attributed", "0", "--position-importance", "--json"])
    assert result.exit_code == 0, result.output
    import json

    projection = json.loads(result.output)
    (entry,) = projection["instructions"]
    soft = tiny_prompted.predict_proba(TEXTS).argmax(1)
    ids = tiny_prompted.tokenizer("the film", add_special_tokens=False)["input_ids"]
    direct = tiny_prompted.with_prompt(tiny_prompted.word_embeddings.detach()[ids]
                                       ).predict_proba(TEXTS).argmax(1)
    assert entry["agreement"] == float((direct == soft).mean())
    assert projection["departures"]["n_departures"] == int((direct != soft).sum())
    assert len(projection["position_importance"]["positions"]) == 4


def test_a_translation_in_the_projection_is_ranked_as_a_candidate(tiny_prompted):
    from promptaudit.departures import translation_candidate

    assert translation_candidate(tiny_prompted, {"translation": None}) is None
    candidate = translation_candidate(
        tiny_prompted, {"translation": {"text": "good film", "token_ids": [27, 9]}})
    assert (candidate.source, candidate.text, candidate.token_ids) == (
        "translation", "good film", (27, 9))
