"""Mitigation by counterfactual logit pairing: the loss, the sweep, the adapter, the CLI.

The loss is checked against the formula by hand; the plumbing on the tiny BERT
(with a two-word user suite made of its vocabulary); the planted-bias check on the
shipped biased demo prompt with MiniLM is the one slow test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from promptaudit.errors import InputError
from promptaudit.mitigation import (
    MitigationSettings,
    PairingLoss,
    build_variants,
    clp_loss,
    logit_margin,
    mitigate_prompt,
    select_weight,
)

#: A user suite on the tiny BERT vocabulary: "movie" and "film" play two identity groups.
TOY_SUITE = {"features": {"kind": {"groups": {"m": ["movie"], "f": ["film"]}}}}

TOY_TEXTS = [
    "the movie was good",
    "the film was bad",
    "this movie is really great",
    "a boring film",
    "i loved the movie",
    "i hated the film",
    "the movie was awful",
    "the film was fun",
    "it was ok",
    "the acting was bad",
    "the story is great",
    "a very good movie",
    "a very bad film",
    "this film is not good",
    "this movie is not bad",
    "the ending was great",
    "the plot was boring",
    "the film was great",
    "the movie was bad",
    "fun",
] * 2
TOY_LABELS = [1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1] * 2


@pytest.fixture(scope="module")
def toy_suite(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "toy.json"
    path.write_text(json.dumps(TOY_SUITE))
    return path


# ------------------------------------------------------------------- the loss
def test_logit_margin_two_and_three_labels():
    logits = torch.tensor([[0.5, 2.0], [1.0, -1.0]])
    assert torch.allclose(logit_margin(logits, 1), torch.tensor([1.5, -2.0]))
    three = torch.tensor([[1.0, 2.0, 3.0]])
    expected = 3.0 - np.log(np.exp(1.0) + np.exp(2.0))
    assert logit_margin(three, 2).item() == pytest.approx(expected, abs=1e-6)


def test_clp_loss_equals_the_formula_on_a_hand_built_pair():
    # margins: original 2-0.5=1.5 and -1-1=-2; variants 0.2-0.3=-0.1 and 0-0=0
    original = torch.tensor([[0.5, 2.0], [1.0, -1.0]], requires_grad=True)
    variant = torch.tensor([[0.3, 0.2], [0.0, 0.0]])
    loss = clp_loss(original, variant, positive=1, weight=3.0)
    assert loss.item() == pytest.approx(3.0 * (abs(1.5 - -0.1) + abs(-2.0 - 0.0)) / 2)
    loss.backward()
    # d/d logit_pos of row 0 = 3 * sign(1.6) / 2
    assert original.grad[0, 1].item() == pytest.approx(1.5)
    assert original.grad[0, 0].item() == pytest.approx(-1.5)


def test_clp_loss_without_pairs_is_zero():
    empty = torch.zeros(0, 2, requires_grad=True)
    assert clp_loss(empty, empty, positive=1, weight=5.0).item() == 0.0


def test_pairing_loss_pairs_batch_texts_with_their_variants():
    variants = {"a he": ["a she"], "b he": ["b she"]}
    table = {"a he": [0.0, 1.0], "b he": [0.0, -1.0], "a she": [0.0, 0.0], "b she": [0.0, 3.0]}
    asked: list[list[str]] = []

    def logits_of(texts):
        asked.append(list(texts))
        return torch.tensor([table[t] for t in texts])

    loss = PairingLoss(variants, positive=1, weight=2.0, max_pairs=8)
    batch = ["a he", "no pair", "b he"]
    batch_logits = torch.tensor([table["a he"], [5.0, 0.0], table["b he"]])
    value = loss(logits_of, batch, batch_logits)
    assert asked == [["a she", "b she"]]  # only the variants cost a forward pass
    assert value.item() == pytest.approx(2.0 * (abs(1 - 0) + abs(-1 - 3)) / 2)
    assert loss.n_pairs == 2


def test_pairing_loss_caps_pairs_and_adds_unlabelled_pairs():
    variants = {f"t{i} he": [f"t{i} she"] for i in range(10)}
    unlabelled = {"u he": ["u she"]}
    seen = []

    def logits_of(texts):
        seen.extend(texts)
        return torch.zeros(len(texts), 2)

    batch = [f"t{i} he" for i in range(10)]
    loss = PairingLoss(variants, positive=1, weight=1.0, max_pairs=4)
    loss(logits_of, batch, torch.zeros(10, 2))
    assert loss.n_pairs == 4 and len(seen) == 4  # the cap
    # Every batch text has a variant, yet a quarter of the cap (at least one) is kept for
    # unlabelled pairs: 3 batch pairs + 1 unlabelled pair = 4.
    seen.clear()
    loss = PairingLoss(variants, positive=1, weight=1.0, max_pairs=4, unlabelled=unlabelled)
    loss(logits_of, batch, torch.zeros(10, 2))
    assert loss.n_pairs == 4 and loss.n_unlabelled_pairs == 1
    assert seen[0] == "u he" and seen[-1] == "u she" and len(seen) == 5  # 1 + 3 + 1 texts
    seen.clear()
    loss = PairingLoss(variants, positive=1, weight=1.0, max_pairs=12, unlabelled=unlabelled)
    loss(logits_of, batch, torch.zeros(10, 2))
    assert loss.n_pairs == 11 and loss.n_unlabelled_pairs == 1  # one unlabelled text
    many = {f"u{i} he": [f"u{i} she"] for i in range(8)}
    loss = PairingLoss(variants, positive=1, weight=1.0, max_pairs=12, unlabelled=many)
    loss(logits_of, batch, torch.zeros(10, 2))
    assert loss.n_pairs == 12 and loss.n_unlabelled_pairs == 3  # 12 // 4


def test_unlabelled_pairs_enter_the_loss_with_the_formula():
    """One batch pair (margins 1 vs 0) and one unlabelled pair (margins 2 vs -2)."""
    table = {"a he": [0.0, 1.0], "a she": [0.0, 0.0], "u he": [1.0, 3.0], "u she": [1.0, -1.0]}

    def logits_of(texts):
        return torch.tensor([table[t] for t in texts])

    loss = PairingLoss({"a he": ["a she"]}, positive=1, weight=3.0, max_pairs=2,
                       unlabelled={"u he": ["u she"]})
    value = loss(logits_of, ["a he"], torch.tensor([table["a he"]]))
    assert value.item() == pytest.approx(3.0 * (abs(1 - 0) + abs(2 - (-2))) / 2)


def test_group_penalty_uses_fairret_positive_rate_parity():
    from fairret.loss import NormLoss
    from fairret.statistic import PositiveRate

    groups = {"a": "x", "b": "x", "c": "y", "d": "y"}
    loss = PairingLoss({}, positive=1, weight=0.0, max_pairs=4, groups=groups, group_weight=2.0)
    logits = torch.tensor([[0.0, 2.0], [0.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    value = loss(lambda texts: torch.zeros(len(texts), 2), list("abcd"), logits)
    sens = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    expected = 2.0 * NormLoss(PositiveRate())(torch.tensor([[2.0], [0.0], [-1.0], [1.0]]), sens)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    # independently: positive rates sigmoid-mean per group against the overall rate
    p = torch.sigmoid(torch.tensor([2.0, 0.0, -1.0, 1.0]))
    rates = torch.stack([p[:2].mean(), p[2:].mean()])
    by_hand = 2.0 * (rates / p.mean() - 1).abs().sum()
    assert value.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_build_variants_from_the_builtin_suite_and_from_pairs():
    variants = build_variants(["He said his plan works.", "No one."], suite="builtin:identity",
                              features=["gender"])
    assert variants == {
        "He said his plan works.": ["She said her plan works.", "They said their plan works."]
    }
    paired = build_variants(["a", "b", "c", "d"], pair_ids=[1, 1, 2, None])
    assert paired == {"a": ["b"], "b": ["a"]}


# ----------------------------------------------------------------- selection
def _row(weight, accuracy, dp, flip, delta=None):
    delta = 1 - dp if delta is None else delta
    return {"weight": weight, "accuracy": accuracy, "dp_ratio": dp, "flip_rate": flip,
            "mean_abs_delta": delta}


def test_select_weight_keeps_the_strongest_within_budget():
    before = _row(None, 0.80, 0.60, 0.20)
    table = [_row(1.0, 0.80, 0.70, 0.10), _row(3.0, 0.79, 0.85, 0.05), _row(10.0, 0.70, 0.95, 0.0)]
    chosen = select_weight(table, before=before, max_accuracy_drop=0.02)
    assert chosen == 1
    assert [r["within_budget"] for r in table] == [True, True, False]
    assert table[1]["accuracy_change"] == pytest.approx(-0.01)
    assert [r["pareto"] for r in table] == [True, True, True]


def test_select_weight_none_when_nothing_meets_the_budget():
    before = _row(None, 0.80, 0.60, 0.20)
    table = [_row(3.0, 0.75, 0.85, 0.05), _row(10.0, 0.70, 0.95, 0.0)]
    assert select_weight(table, before=before, max_accuracy_drop=0.02) is None
    dominated = [_row(1.0, 0.79, 0.55, 0.3)]
    select_weight(dominated, before=before, max_accuracy_drop=0.02)
    assert dominated[0]["pareto"] is False  # the original is better on both axes


@pytest.mark.parametrize(
    "values, message",
    [
        ({"weights": ()}, "at least one"),
        ({"weights": (-1.0,)}, "must be >= 0"),
        ({"weights": (float("nan"),)}, "must be >= 0"),
        ({"weights": (1.0, 1.0)}, "twice"),
        ({"max_accuracy_drop": 2.0}, "max_accuracy_drop: 2.0; must be <= 1"),
        ({"validation_fraction": 0.0}, "validation_fraction: 0.0; must be > 0"),
        ({"max_pairs_per_batch": 0}, "max_pairs_per_batch: 0; must be >= 1"),
    ],
)
def test_bad_settings_are_named(values, message):
    with pytest.raises(InputError, match=message):
        MitigationSettings(**values)


# ------------------------------------------------------- the sweep (tiny BERT)
#: Planted bias: every "movie" text is positive and every "film" text negative.
PLANTED_LABELS = [int("movie" in t) if ("movie" in t or "film" in t) else y
                  for t, y in zip(TOY_TEXTS, TOY_LABELS, strict=True)]


@pytest.fixture(scope="module")
def sensitive_bert_dir(tmp_path_factory) -> Path:
    """The conftest tiny BERT but initialised wide (std 0.5), so single words move its output
    (at std 0.02 its output hardly depends on the input)."""
    from conftest import WORDS
    from transformers import BertConfig, BertForPreTraining, BertTokenizerFast

    path = tmp_path_factory.mktemp("sensitive-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "."]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True
                      ).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=96,
                        num_labels=2, pad_token_id=0, initializer_range=0.5)
    BertForPreTraining(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def planted_prompt(tmp_path_factory, sensitive_bert_dir) -> Path:
    """A tiny-BERT prompt trained on the planted labels: it learnt movie -> positive."""
    from promptaudit.training import InitMethod, TrainingConfig, train_prompt

    out = tmp_path_factory.mktemp("planted")
    config = TrainingConfig(num_virtual_tokens=4, init=InitMethod.RANDOM, epochs=8,
                            learning_rate=0.05, batch_size=8, max_length=16,
                            validation_fraction=0.0)
    train_prompt(str(sensitive_bert_dir), TOY_TEXTS, PLANTED_LABELS,
                 labels=["negative", "positive"], out_dir=out, config=config, progress=False)
    return out


@pytest.fixture(scope="module")
def toy_mitigation(tmp_path_factory, sensitive_bert_dir, planted_prompt, toy_suite):
    out = tmp_path_factory.mktemp("mitigated")
    settings = MitigationSettings(
        weights=(0.0, 20.0), max_accuracy_drop=1.0, epochs=8, learning_rate=0.05,
        batch_size=8, max_length=16, suite=str(toy_suite), validation_fraction=0.25,
    )
    result = mitigate_prompt(
        str(sensitive_bert_dir), planted_prompt, TOY_TEXTS, PLANTED_LABELS,
        labels=["negative", "positive"], out_dir=out, settings=settings, progress=False,
    )
    return result, out


def test_sweep_writes_adapter_record_and_tradeoff(toy_mitigation):
    result, out = toy_mitigation
    assert result.mitigated and result.adapter_dir == out
    for name in ("adapter_config.json", "adapter_model.safetensors", "training_info.json",
                 "mitigation.json", "mitigation_tradeoff.csv", "mitigation_tradeoff.md",
                 "mitigation_pareto.png"):
        assert (out / name).is_file(), name
    record = json.loads((out / "mitigation.json").read_text())
    assert record["method"] == "clp" and record["weights"] == [0.0, 20.0]
    assert record["chosen_weight"] == 20.0  # the budget of 1.0 admits every weight
    assert record["n_pairs"] > 0 and len(record["data"]["content_sha256"]) == 64
    assert [row["weight"] for row in record["table"]] == [None, 0.0, 20.0]
    info = json.loads((out / "training_info.json").read_text())
    assert info["mitigation"]["weight"] == 20.0 and info["mitigation"]["n_pairs"] > 0
    assert (out / "mitigation_pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_pairing_shrinks_the_counterfactual_gap(toy_mitigation):
    result, _ = toy_mitigation
    before, plain, paired = result.table
    assert paired["mean_abs_delta"] < plain["mean_abs_delta"]
    assert paired["mean_abs_delta"] < before["mean_abs_delta"]


def test_mitigated_adapter_reloads_in_plain_peft(toy_mitigation, sensitive_bert_dir, peft_probs):
    from promptaudit.prompted_model import load_prompted_model

    _, out = toy_mitigation
    texts = TOY_TEXTS[:8]
    reference = peft_probs(sensitive_bert_dir, out, texts, task="sequence-classification")
    prompted, _, _ = load_prompted_model(str(sensitive_bert_dir), str(out), max_length=16)
    np.testing.assert_allclose(prompted.predict_proba(texts), reference, atol=1e-5)


def test_warm_start_is_the_audited_prompt(tiny_bert_dir, tiny_bert_seqcls_adapter, tmp_path):
    """With weight 0 and a vanishing learning rate the re-tuned prompt equals the original."""
    from promptaudit.prompted_model import load_prompted_model

    settings = MitigationSettings(
        weights=(0.0,), epochs=1, learning_rate=1e-12, batch_size=8, max_length=16,
        suite=None, max_accuracy_drop=1.0,
    )
    result = mitigate_prompt(
        str(tiny_bert_dir), tiny_bert_seqcls_adapter, TOY_TEXTS, TOY_LABELS,
        labels=["negative", "positive"], out_dir=tmp_path, settings=settings,
        pair_ids=[i // 2 for i in range(len(TOY_TEXTS))], progress=False,
    )
    assert result.mitigated
    original, _, _ = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_seqcls_adapter),
                                         max_length=16)
    again, _, _ = load_prompted_model(str(tiny_bert_dir), str(tmp_path), max_length=16)
    np.testing.assert_allclose(again.predict_proba(TOY_TEXTS[:6]),
                               original.predict_proba(TOY_TEXTS[:6]), atol=1e-6)


def test_retuning_switches_dropout_off_so_paired_passes_are_deterministic(sensitive_bert_dir):
    """With dropout on, two training-mode passes over one text differ, so CLP would
    penalise dropout noise; the base given to training has every dropout at p = 0."""
    from promptaudit.mitigation import _base_without_dropout
    from promptaudit.models import load_base_model

    enc = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]]), "attention_mask": torch.ones(1, 5)}
    plain = load_base_model(str(sensitive_bert_dir), task="sequence-classification",
                            num_labels=2).model.train()
    torch.manual_seed(0)
    assert not torch.equal(plain(**enc).logits, plain(**enc).logits)  # dropout is on
    base = _base_without_dropout(str(sensitive_bert_dir), "sequence-classification", 2, "cpu")
    dropouts = [m for m in base.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.0 for m in dropouts)
    base.model.train()
    first, second = base.model(**enc).logits, base.model(**enc).logits
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    base.model.eval()
    torch.testing.assert_close(base.model(**enc).logits, first)


def test_switch_off_dropout_covers_modules_and_rate_attributes():
    from promptaudit.mitigation import switch_off_dropout

    class Attention(torch.nn.Module):  # LLaMA-style: the rate is a float attribute
        def __init__(self) -> None:
            super().__init__()
            self.attention_dropout = 0.1
            self.is_causal = True

    model = torch.nn.Sequential(torch.nn.Dropout(0.1), Attention(), torch.nn.Dropout(0.0),
                                torch.nn.AlphaDropout(0.2))
    assert switch_off_dropout(model) == 3
    assert [model[0].p, model[1].attention_dropout, model[2].p, model[3].p] == [0.0] * 4
    assert model[1].is_causal is True
    assert switch_off_dropout(model) == 0


@pytest.mark.parametrize("keep_dropout", [False, True])
def test_mitigation_trains_on_a_dropout_free_base_unless_asked(
    tiny_bert_dir, tiny_bert_seqcls_adapter, tmp_path, monkeypatch, keep_dropout
):
    import promptaudit.training as training

    seen = []
    real = training.train_prompt

    def spy(*args, **kwargs):
        seen.append(kwargs.get("loaded"))
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_prompt", spy)
    settings = MitigationSettings(weights=(1.0,), epochs=1, learning_rate=1e-3, batch_size=8,
                                  max_length=16, suite=None, max_accuracy_drop=1.0,
                                  keep_dropout=keep_dropout)
    result = mitigate_prompt(
        str(tiny_bert_dir), tiny_bert_seqcls_adapter, TOY_TEXTS, TOY_LABELS,
        labels=["negative", "positive"], out_dir=tmp_path, settings=settings,
        pair_ids=[i // 2 for i in range(len(TOY_TEXTS))], progress=False,
    )
    assert result.mitigated and len(seen) == 1
    if keep_dropout:
        assert seen[0] is None  # train_prompt loads the base as usual, dropout on
    else:
        ps = [m.p for m in seen[0].model.modules() if isinstance(m, torch.nn.Dropout)]
        assert ps and set(ps) == {0.0}
    assert result.record["settings"]["keep_dropout"] is keep_dropout


def test_retuning_trains_the_classifier_head_too(toy_mitigation, planted_prompt):
    """SEQ_CLS: the head the prompt came with is warm-started and trained with it."""
    from safetensors.torch import load_file

    _, out = toy_mitigation
    before = load_file(str(planted_prompt / "adapter_model.safetensors"))
    after = load_file(str(out / "adapter_model.safetensors"))
    heads = [k for k in before if k.startswith("base_model.classifier")]
    assert heads and set(before) == set(after)
    for key in [*heads, "prompt_embeddings"]:
        assert before[key].shape == after[key].shape
        assert not torch.equal(before[key], after[key]), key


def test_no_variant_is_a_clear_error(tiny_bert_dir, tiny_bert_seqcls_adapter, tmp_path):
    settings = MitigationSettings(weights=(1.0,), suite="builtin:identity")
    with pytest.raises(InputError, match="no training text has an identity-swapped variant"):
        mitigate_prompt(
            str(tiny_bert_dir), tiny_bert_seqcls_adapter, TOY_TEXTS, TOY_LABELS,
            labels=["negative", "positive"], out_dir=tmp_path, settings=settings,
            progress=False,
        )
    assert not any(tmp_path.iterdir())  # nothing written


# ------------------------------------------------------------------ the CLI
def test_cli_mitigate_exits_1_when_no_weight_meets_the_budget(
    tiny_bert_dir, tiny_bert_seqcls_adapter, toy_suite, tmp_path, monkeypatch
):
    """Every candidate scores 0.5 below the original: nothing is claimed, exit 1."""
    import pandas as pd
    from typer.testing import CliRunner

    import promptaudit.mitigation as mitigation
    from promptaudit.cli import app

    real = mitigation.evaluate_prompt
    calls = []

    def worse_after_the_first(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out["accuracy"])
        if len(calls) > 1:
            out["accuracy"] = calls[0] - 0.5
        return out

    monkeypatch.setattr(mitigation, "evaluate_prompt", worse_after_the_first)
    data = tmp_path / "train.csv"
    pd.DataFrame({"sentence": TOY_TEXTS, "label": TOY_LABELS}).to_csv(data, index=False)
    out = tmp_path / "out"
    args = ["mitigate", "--model", str(tiny_bert_dir), "--prompt", str(tiny_bert_seqcls_adapter),
            "--data", str(data), "--text-column", "sentence", "--label-column", "label",
            "--counterfactuals", str(toy_suite), "--weights", "1", "--epochs", "1",
            "--batch-size", "8", "--max-length", "16", "--out", str(out)]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 1, outcome.output
    assert "nothing is claimed as mitigated" in outcome.output
    record = json.loads((out / "mitigation.json").read_text())
    assert record["mitigated"] is False and record["chosen_weight"] is None
    assert not (out / "adapter_model.safetensors").exists()
    assert (out / "mitigation_tradeoff.md").exists()


def test_cli_mitigate_bad_weights_is_exit_2(tmp_path):
    from typer.testing import CliRunner

    from promptaudit.cli import app

    data = tmp_path / "d.csv"
    data.write_text("sentence,label\nthe movie,1\n")
    outcome = CliRunner().invoke(app, [
        "mitigate", "--model", "x", "--prompt", "y", "--data", str(data), "--text-column",
        "sentence", "--label-column", "label", "--labels", "0,1", "--weights", "1,abc",
        "--out", str(tmp_path / "o"),
    ])
    assert outcome.exit_code == 2 and "--weights" in outcome.output


# --------------------------------------------------- planted bias (MiniLM, slow)
@pytest.mark.slow
def test_biased_demo_prompt_gap_shrinks(tmp_path):
    from promptaudit.corpora import SCREENING_LABELS, load_builtin_table
    from promptaudit.data import encode_labels
    from promptaudit.demo import demo_prompt_dir

    frame = load_builtin_table("screening-train-biased", seed=0).iloc[:120]
    ids = encode_labels(frame["label"], list(SCREENING_LABELS), source="t", column="label")
    settings = MitigationSettings(weights=(10.0,), epochs=2, learning_rate=0.003, max_length=64,
                                  features=("gender",), max_accuracy_drop=1.0,
                                  validation_fraction=0.25)
    result = mitigate_prompt(
        "builtin:minilm", demo_prompt_dir("biased"), frame["text"].tolist(), ids,
        labels=list(SCREENING_LABELS), positive_label="accept", out_dir=tmp_path,
        settings=settings, progress=False,
    )
    before, after = result.table
    assert after["mean_abs_delta"] < before["mean_abs_delta"]


# --------------------------------------------- `run` with a mitigation section
def _toy_mitigated_spec(tmp_path, sensitive_bert_dir, planted_prompt, toy_suite,
                        out: str | None) -> Path:
    """A spec file: the planted prompt on the toy texts, with a one-weight mitigation."""
    import pandas as pd
    import yaml

    kinds = ["movie" if "movie" in t else "film" if "film" in t else "other" for t in TOY_TEXTS]
    data = tmp_path / "data.csv"
    pd.DataFrame({"sentence": TOY_TEXTS, "label": PLANTED_LABELS, "kind": kinds}).to_csv(
        data, index=False)
    spec = {
        "name": "toy-mitigated", "seed": 0,
        "model": {"base": str(sensitive_bert_dir), "task": "sequence-classification",
                  "labels": ["negative", "positive"], "positive_label": "positive",
                  "max_length": 16},
        "prompt": {"path": str(planted_prompt)},
        "data": {"path": str(data), "text_column": "sentence", "label_column": "label",
                 "sensitive_features": ["kind"]},
        "counterfactuals": {"suite": str(toy_suite)},
        "projection": {"enabled": False}, "attribution": {"enabled": False},
        "fairness": {"bootstrap": 0, "min_group_size": 1},
        "gates": [{"metric": "counterfactual_flip_rate", "max": 0.5}],
        "mitigation": {"data": {"path": str(data), "text_column": "sentence",
                                "label_column": "label"},
                       "weights": [20.0], "epochs": 2, "learning_rate": 0.05, "batch_size": 8,
                       "max_accuracy_drop": 1.0, **({"out": out} if out else {})},
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    return spec_path


def test_run_with_mitigation_section_reports_before_and_after(
    sensitive_bert_dir, planted_prompt, toy_suite, tmp_path, monkeypatch
):
    monkeypatch.setenv("PROMPTAUDIT_SIGNING_KEY", "team-secret")  # the result is signed too
    from typer.testing import CliRunner

    from promptaudit.cli import app
    from promptaudit.result import read_result_json

    spec_path = _toy_mitigated_spec(tmp_path, sensitive_bert_dir, planted_prompt, toy_suite,
                                    str(tmp_path / "adapter"))
    outcome = CliRunner().invoke(app, ["run", str(spec_path), "--out", str(tmp_path / "r")])
    assert outcome.exit_code == 0, outcome.output
    result = read_result_json(tmp_path / "r" / "toy-mitigated.json")  # integrity holds
    assert len(result["integrity"]["hmac_sha256"]) == 64  # checked by read_result_json
    block = result["mitigation"]
    assert block["mitigated"] and block["adapter"] == str(tmp_path / "adapter")
    assert result["audit"]["spec"]["prompt"]["path"] == str(tmp_path / "adapter")
    assert block["before"]["fairness"]["counterfactual"]["mean_abs_delta"] == pytest.approx(
        next(r for r in block["comparison"]["metrics"]
             if r["metric"] == "counterfactual_mean_abs_delta")["before"])
    assert block["comparison"]["after"]["prompt"] == str(tmp_path / "adapter")
    page = (tmp_path / "r" / "toy-mitigated.html").read_text()
    summary = (tmp_path / "r" / "toy-mitigated.md").read_text()
    assert "Mitigation (counterfactual logit pairing)" in page
    assert "Before and after" in page and "counterfactual_mean_abs_delta" in summary
    assert f"mitigated prompt: {tmp_path / 'adapter'}" in outcome.output
    assert f"Mitigated adapter: <code>{tmp_path / 'adapter'}</code>" in page


def test_mitigated_adapter_without_out_goes_to_a_new_private_folder(
    sensitive_bert_dir, planted_prompt, toy_suite, tmp_path, monkeypatch
):
    """Not a fixed path in the shared temp directory that someone could plant an adapter in."""
    import stat
    import tempfile

    from typer.testing import CliRunner

    from promptaudit.cli import app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "shared-tmp"))
    (tmp_path / "shared-tmp").mkdir()
    planted = tmp_path / "shared-tmp" / "promptaudit-mitigated" / "toy-mitigated"
    planted.mkdir(parents=True)  # where the adapter used to go, reused on a re-run
    (planted / "mitigation.json").write_text("{}")
    spec_path = _toy_mitigated_spec(tmp_path, sensitive_bert_dir, planted_prompt, toy_suite,
                                    None)
    runs = []
    for name in ("r1", "r2"):
        outcome = CliRunner().invoke(app, ["run", str(spec_path), "--out", str(tmp_path / name)])
        assert outcome.exit_code == 0, outcome.output
        runs.append(json.loads((tmp_path / name / "toy-mitigated.json").read_text()))
        adapter = Path(runs[-1]["mitigation"]["adapter"])
        assert adapter.parent == tmp_path / "shared-tmp"
        assert adapter.name.startswith("promptaudit-mitigated-toy-mitigated-")
        assert stat.S_IMODE(adapter.stat().st_mode) == 0o700
        assert (adapter / "adapter_model.safetensors").is_file()
        assert f"mitigated prompt: {adapter}" in outcome.output
    assert runs[0]["mitigation"]["adapter"] != runs[1]["mitigation"]["adapter"]
    assert sorted(p.name for p in planted.iterdir()) == ["mitigation.json"]  # untouched


# ------------------------------------------------------------------ the spec
def _spec_with(mitigation: dict) -> dict:
    return {
        "name": "s", "prompt": {"path": "p"},
        "data": {"path": "d.csv", "text_column": "t", "label_column": "l"},
        "mitigation": mitigation,
    }


def test_mitigation_spec_defaults_and_errors():
    from promptaudit.errors import SpecError
    from promptaudit.spec import parse_spec

    spec = parse_spec(_spec_with({"data": {"path": "train.csv", "label_column": "label"}}))
    assert spec.mitigation.method == "clp" and spec.mitigation.weights == [10.0, 30.0, 100.0]
    assert spec.mitigation.max_accuracy_drop == 0.02 and spec.mitigation.epochs == 2
    with pytest.raises(SpecError, match="weigths"):
        parse_spec(_spec_with({"data": {"path": "t.csv", "label_column": "l"}, "weigths": [1]}))
    with pytest.raises(SpecError, match="must be >= 0"):
        parse_spec(_spec_with({"data": {"path": "t.csv", "label_column": "l"}, "weights": [-1]}))
    with pytest.raises(SpecError, match="label_column"):
        parse_spec(_spec_with({"data": {"path": "t.csv"}}))
    with pytest.raises(SpecError, match="method"):
        parse_spec(_spec_with({"data": {"path": "t.csv", "label_column": "l"}, "method": "x"}))


def test_mitigation_refuses_a_bare_tensor_prompt(tiny_bert_dir, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "prompt.safetensors"
    save_file({"prompt_embeddings": torch.zeros(4, 32)}, str(path))
    with pytest.raises(InputError, match="prompt-tuning adapters"):
        mitigate_prompt(str(tiny_bert_dir), path, TOY_TEXTS, TOY_LABELS,
                        labels=["negative", "positive"], out_dir=tmp_path / "o",
                        settings=MitigationSettings(suite=None), pair_ids=list(range(40)),
                        progress=False)


def test_mitigated_adapter_keeps_the_originals_init_text(tiny_bert_dir, tmp_path):
    """The re-tuned adapter records the original's TEXT init, so its audit measures the same
    init_text baseline (a RANDOM init made it no_prompt and accuracy_over_baseline unlike)."""
    from promptaudit.soft_prompts import load_prompt
    from promptaudit.training import InitMethod, TrainingConfig, train_prompt

    original = tmp_path / "original"
    config = TrainingConfig(num_virtual_tokens=4, init=InitMethod.TEXT,
                            init_text="the movie was good", epochs=1, learning_rate=0.01,
                            batch_size=8, max_length=16, validation_fraction=0.0)
    train_prompt(str(tiny_bert_dir), TOY_TEXTS, TOY_LABELS, labels=["negative", "positive"],
                 out_dir=original, config=config, progress=False)
    settings = MitigationSettings(
        weights=(0.0,), epochs=1, learning_rate=1e-3, batch_size=8, max_length=16,
        suite=None, max_accuracy_drop=1.0,
    )
    out = tmp_path / "mitigated"
    result = mitigate_prompt(
        str(tiny_bert_dir), original, TOY_TEXTS, TOY_LABELS,
        labels=["negative", "positive"], out_dir=out, settings=settings,
        pair_ids=[i // 2 for i in range(len(TOY_TEXTS))], progress=False,
    )
    assert result.mitigated
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["prompt_tuning_init"] == "TEXT"
    assert saved["prompt_tuning_init_text"] == "the movie was good"
    reloaded = load_prompt(out)
    assert (reloaded.init_method, reloaded.init_text) == ("TEXT", "the movie was good")
