"""Attribution to prompt positions and input tokens (promptaudit.attribution).

The hand-checkable model: a two-label classifier whose logits are ``[0, z]`` with
``z = w . sum_i e_i`` over the attended positions (prompt and input). The target
probability is ``sigmoid(z)`` (label 1) or ``1 - sigmoid(z)`` (label 0), and the
gradient w.r.t. every position is ``sigmoid'(z) w``, so on the straight path from
the baseline the integrated-gradients integral has a closed form:

    IG_i = w . (e_i - b) * (sigmoid(z) - sigmoid(z')) / (z - z')

(``z'`` is ``z`` at the baseline); feature ablation is
``sigmoid(z) - sigmoid(z - w . (e_i - b))``. Both can be worked out on paper.
"""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from promptaudit.attribution import (
    BATCH_SIZE_MESSAGE,
    DELTA_TOLERANCE_MESSAGE,
    INTERNAL_BATCH_SIZE_MESSAGE,
    MAX_EXAMPLES_MESSAGE,
    MAX_GRADIENT_EVALS_MESSAGE,
    MIN_GROUP_SIZE_MESSAGE,
    N_SAMPLES_MESSAGE,
    N_STEPS_AUTO_MESSAGE,
    N_STEPS_MESSAGE,
    NO_PROMPT_MESSAGE,
    NO_TEXTS_MESSAGE,
    POSITION_TOLERANCE_FACTOR,
    POSITION_TOLERANCE_MESSAGE,
    SENSITIVE_ROWS_MESSAGE,
    TARGET_LABEL_MESSAGE,
    TARGET_RANGE_MESSAGE,
    UNKNOWN_BASELINE_MESSAGE,
    UNKNOWN_METHOD_MESSAGE,
    UNKNOWN_SHAPLEY_INPUT_MESSAGE,
    Baseline,
    FeatureAblation,
    IntegratedGradients,
    PromptAttributor,
    ShapleySampling,
    adaptive_path_integral,
    attribution_method,
    baseline_vector,
    format_attribution_summary,
    group_attribution,
    summarise_groups,
)
from promptaudit.errors import InputError
from promptaudit.models import load_base_model
from promptaudit.prompted_model import PromptedModel

LABELS = ["negative", "positive"]


# ------------------------------------------------------- hand-weighted toy model
TOY_VOCAB = {"[PAD]": 0, "[UNK]": 1, "good": 2, "bad": 3, "film": 4, "very": 5}
TOY_EMBEDDINGS = [  # hidden = 2
    [0.2, 0.1],  # [PAD]   w . e = 0.5
    [0.0, 0.0],  # [UNK]
    [1.0, 0.0],  # good    w . e = 2
    [-1.0, 0.0],  # bad    w . e = -2
    [0.0, 1.0],  # film    w . e = 1
    [0.5, 0.5],  # very    w . e = 1.5
]
TOY_W = [2.0, 1.0]
TOY_PROMPT = [[0.5, 0.0], [0.0, -1.0]]  # w . p = 1, -1
TOY_SCORES = {"good": 2.0, "bad": -2.0, "film": 1.0, "very": 1.5}
TOY_PROMPT_SCORES = [1.0, -1.0]
PAD_SCORE = 0.5


class SummedEmbeddingClassifier(torch.nn.Module):
    """Logits ``[0, w . sum of attended embeddings]``: linear in the embeddings."""

    def __init__(self):
        super().__init__()
        self.embeddings = torch.nn.Embedding.from_pretrained(torch.tensor(TOY_EMBEDDINGS))
        self.register_buffer("w", torch.tensor(TOY_W))
        self.config = SimpleNamespace(num_labels=2, max_position_embeddings=64)

    def get_input_embeddings(self):
        return self.embeddings

    def forward(self, inputs_embeds, attention_mask, token_type_ids=None):
        z = ((inputs_embeds * attention_mask.unsqueeze(-1)) @ self.w).sum(dim=1)
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(z), z], dim=-1))


@pytest.fixture(scope="module")
def toy() -> PromptedModel:
    return make_toy(SummedEmbeddingClassifier().eval(), TOY_PROMPT)


def make_toy(classifier: torch.nn.Module, prompt) -> PromptedModel:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(TOY_VOCAB, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.padding_side = "right"
    return PromptedModel(
        classifier,
        tokenizer,
        torch.tensor(prompt),
        task="sequence-classification",
        labels=LABELS,
    )


def attribute(prompted, texts, *, batch_size=8, seed=0, target=None, max_examples=None,
              **method_options) -> dict:
    """Attribute with the method built from flat options (the audit spec's form)."""
    attributor = PromptAttributor(prompted, attribution_method(**method_options),
                                  batch_size=batch_size, seed=seed)
    return attributor.attribute(texts, target=target, max_examples=max_examples)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def toy_scores(text: str) -> list[float]:
    """``w . e_i`` for every position: the two virtual tokens, then the words."""
    return TOY_PROMPT_SCORES + [TOY_SCORES[word] for word in text.split()]


def test_toy_integrated_gradients_match_the_closed_form_by_hand(toy):
    # "good film": z = 1 - 1 + 2 + 1 = 3; zero baseline: z' = 0; label 1 predicted.
    # IG_i = (w . e_i) * (sigmoid(3) - sigmoid(0)) / 3 = (w . e_i) * 0.150858
    result = attribute(toy, ["good film"], baseline="zero", n_steps=50)
    example = result["examples"][0]
    ratio = (sigmoid(3.0) - 0.5) / 3.0
    assert ratio == pytest.approx(0.150858, abs=1e-6)
    assert example["target"] == 1 and example["target_label"] == "positive"
    assert example["tokens"] == ["good", "film"]
    np.testing.assert_allclose(example["prompt_attributions"], [ratio, -ratio], atol=1e-6)
    np.testing.assert_allclose(example["token_attributions"], [2 * ratio, ratio], atol=1e-6)
    assert example["target_probability"] == pytest.approx(sigmoid(3.0), abs=1e-6)
    assert abs(example["convergence_delta"]) < 1e-5
    assert example["top_tokens"][0] == {
        "token": "good",
        "attribution": pytest.approx(2 * ratio, abs=1e-6),
    }


@pytest.mark.parametrize("baseline", ["pad", "zero"])
@pytest.mark.parametrize("target", [None, "negative"])
def test_toy_integrated_gradients_in_a_padded_batch(toy, baseline, target):
    texts = ["good film", "very bad very good film", "bad", "film very"]
    result = attribute(
        toy, texts, baseline=baseline, target=target, n_steps=50, batch_size=4
    )
    base = PAD_SCORE if baseline == "pad" else 0.0
    for text, example in zip(texts, result["examples"], strict=True):
        scores = toy_scores(text)
        z, z0 = sum(scores), base * len(scores)
        sign = 1.0 if (target is None and z > 0) else -1.0
        ratio = sign * (sigmoid(z) - sigmoid(z0)) / (z - z0)
        expected = [(s - base) * ratio for s in scores]
        assert example["text"] == text
        assert len(example["token_attributions"]) == len(text.split())  # padding trimmed
        got = example["prompt_attributions"] + example["token_attributions"]
        np.testing.assert_allclose(got, expected, atol=2e-6)
        assert example["target"] == (1 if sign > 0 else 0)
    assert result["target_policy"] == ("predicted" if target is None else "fixed")
    assert result["max_convergence_delta"] < 1e-5


def test_a_coarse_integral_is_reported_and_logged(toy, caplog):
    # "good good good film": z = 7, zero baseline; one Gauss-Legendre step is the
    # midpoint rule: sigmoid'(3.5) * 7 = 0.1997 against sigmoid(7) - 0.5 = 0.4991
    with caplog.at_level("WARNING", logger="promptaudit.attribution"):
        result = attribute(toy, ["good good good film"], baseline="zero", n_steps=1)
    z = 7.0
    midpoint = sigmoid(z / 2) * (1 - sigmoid(z / 2)) * z
    delta = result["examples"][0]["convergence_delta"]
    assert delta == pytest.approx(midpoint - (sigmoid(z) - 0.5), abs=1e-5)
    assert result["max_convergence_delta"] == pytest.approx(abs(delta))
    assert "raise n_steps" in caplog.text


def test_toy_feature_ablation_matches_the_closed_form(toy):
    texts = ["good film", "very bad very good film"]
    result = attribute(
        toy, texts, method="feature_ablation", baseline="pad", batch_size=2, internal_batch_size=5
    )
    for text, example in zip(texts, result["examples"], strict=True):
        scores = toy_scores(text)
        z = sum(scores)
        expected = [sigmoid(z) - sigmoid(z - (s - PAD_SCORE)) for s in scores]
        got = example["prompt_attributions"] + example["token_attributions"]
        np.testing.assert_allclose(got, expected, atol=2e-6)
        assert example["convergence_delta"] is None
    assert result["max_convergence_delta"] is None and result["n_steps"] is None


@pytest.mark.parametrize("shapley_input", ["whole", "tokens"])
def test_toy_shapley_sampling_is_efficient_and_seeded(toy, shapley_input):
    texts = ["good film", "very bad very good film", "bad"]
    kwargs = dict(
        method="shapley_sampling",
        baseline="zero",
        n_samples=6,
        batch_size=2,
        shapley_input=shapley_input,
    )
    result = attribute(toy, texts, seed=3, **kwargs)
    for text, example in zip(texts, result["examples"], strict=True):
        z = sum(toy_scores(text))
        total = sum(example["prompt_attributions"]) + example["input_attribution"]
        f = sigmoid(z) if example["target"] == 1 else 1 - sigmoid(z)
        assert total == pytest.approx(f - 0.5, abs=2e-6)  # f(baseline) = sigmoid(0)
        if shapley_input == "whole":
            assert example["token_attributions"] is None and example["top_tokens"] == []
        else:
            assert sum(example["token_attributions"]) == pytest.approx(
                example["input_attribution"], abs=1e-9
            )
    assert attribute(toy, texts, seed=3, **kwargs) == result
    assert result["n_samples"] == 6 and result["shapley_input"] == shapley_input


def test_results_do_not_depend_on_batching(toy):
    texts = ["good film", "very bad very good film", "bad", "film very good"]
    one = attribute(toy, texts, n_steps=20, batch_size=1)
    many = attribute(toy, texts, n_steps=20, batch_size=3, internal_batch_size=7)
    for a, b in zip(one["examples"], many["examples"], strict=True):
        np.testing.assert_allclose(
            a["prompt_attributions"] + a["token_attributions"],
            b["prompt_attributions"] + b["token_attributions"],
            atol=1e-6,
        )


# ------------------------------------------------------------------ tiny BERT
@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_dir) -> PromptedModel:
    torch.manual_seed(7)
    loaded = load_base_model(
        str(tiny_bert_dir), task="sequence-classification", num_labels=3, device="cpu"
    )
    with torch.no_grad():  # a sharper head than the 0.02-scale init: probabilities move
        loaded.model.classifier.weight.mul_(50)
    prompt = torch.randn(4, 32, generator=torch.Generator().manual_seed(11))
    return PromptedModel(
        loaded.model,
        loaded.tokenizer,
        prompt,
        task="sequence-classification",
        labels=["a", "b", "c"],
    )


def direct_probability(prompted, text, target, *, prompt=None, fill=None) -> float:
    """``f`` of one unpadded example; ``fill`` replaces every embedding (the baseline)."""
    encoded = prompted.encode([text])
    embeds = prompted.embed(encoded.input_ids)
    prompt = prompted.prompt if prompt is None else prompt
    if fill is not None:
        prompt = fill.expand_as(prompted.prompt)
        embeds = fill.expand_as(embeds)
    with torch.no_grad():
        probs = prompted.label_probabilities(
            prompt, embeds, encoded.attention_mask, encoded.token_type_ids, encoded.readout_index
        )
    return float(probs[0, target])


@pytest.mark.parametrize("baseline", ["zero", "pad", "mean"])
def test_integrated_gradients_completeness_on_tiny_bert(tiny_bert, sentences, baseline):
    result = attribute(tiny_bert, sentences, baseline=baseline, n_steps=32, batch_size=3)
    fill = baseline_vector(tiny_bert, baseline)
    deltas = []
    for text, example in zip(sentences, result["examples"], strict=True):
        total = sum(example["prompt_attributions"]) + sum(example["token_attributions"])
        f_input = direct_probability(tiny_bert, text, example["target"])
        f_base = direct_probability(tiny_bert, text, example["target"], fill=fill)
        assert example["target_probability"] == pytest.approx(f_input, abs=1e-5)
        gap = abs(total - (f_input - f_base))
        assert gap <= abs(example["convergence_delta"]) + 1e-5
        assert example["tokens"][0] == "[CLS]" and example["tokens"][-1] == "[SEP]"
        assert len(example["tokens"]) == len(example["token_attributions"])
        deltas.append(abs(example["convergence_delta"]))
    assert result["max_convergence_delta"] == pytest.approx(max(deltas))
    assert result["max_convergence_delta"] < 0.02
    assert len(result["per_position"]) == 4 and result["num_virtual_tokens"] == 4
    json.dumps(result)


def test_feature_ablation_equals_direct_replacement(tiny_bert, sentences):
    texts = sentences[:4]
    result = attribute(
        tiny_bert, texts, method="feature_ablation", baseline="mean", batch_size=4
    )
    fill = baseline_vector(tiny_bert, "mean")
    for text, example in zip(texts, result["examples"], strict=True):
        target = example["target"]
        f_input = direct_probability(tiny_bert, text, target)
        for j in range(tiny_bert.num_virtual_tokens):
            ablated = tiny_bert.prompt.clone()
            ablated[j] = fill
            expected = f_input - direct_probability(tiny_bert, text, target, prompt=ablated)
            assert example["prompt_attributions"][j] == pytest.approx(expected, abs=1e-5)


def test_per_group_attribution_equals_a_groupby_mean(tiny_bert, sentences):
    features = pd.DataFrame(
        {
            "gender": ["f", "m", "f", "m", "f", None, "m", "f"],
            "age": ["young", "old", "old", "young", "old", "old", "young", "old"],
        }
    )
    result = attribute(tiny_bert, sentences, n_steps=8)
    result["by_group"] = summarise_groups(result, features, min_group_size=1)
    frame = pd.DataFrame([e["prompt_attributions"] for e in result["examples"]])
    for feature in ["gender", "age"]:
        keys = features[feature].fillna("(missing)")  # data.MISSING_GROUP
        expected = frame.groupby(keys.values).mean()
        info = result["by_group"][feature]
        assert set(info["groups"]) == set(expected.index)
        for group, row in expected.iterrows():
            np.testing.assert_allclose(info["groups"][group], row.values, atol=1e-12)
        assert info["counts"] == keys.value_counts().to_dict()
        spread = (expected.max() - expected.min()).values
        np.testing.assert_allclose(info["max_difference"], spread, atol=1e-12)
        assert info["top_positions"] == list(np.argsort(-spread, kind="stable")[:5])
    np.testing.assert_allclose(result["per_position"], frame.mean().values, atol=1e-12)
    np.testing.assert_allclose(result["per_position_abs"], frame.abs().mean().values, atol=1e-12)


def test_summary_and_prompt_share(tiny_bert, sentences):
    result = attribute(tiny_bert, sentences, n_steps=8, max_examples=3, target="b")
    assert [e["text"] for e in result["examples"]] == sentences[:3]  # the first K
    assert {e["target_label"] for e in result["examples"]} == {"b"}
    shares = []
    for e in result["examples"]:
        p = np.abs(e["prompt_attributions"]).sum()
        shares.append(p / (p + np.abs(e["token_attributions"]).sum()))
    assert result["prompt_share"] == pytest.approx(np.mean(shares))
    assert result["n_examples"] == 3
    text = format_attribution_summary(result)
    assert text.startswith(
        "Attribution: integrated_gradients (n_steps=8, baseline=pad), "
        "3 examples, target: probability of the label 'b'"
    )
    assert f"{100 * result['prompt_share']:.1f}%" in text
    assert "v3" in text
    assert attribute(tiny_bert, sentences, n_steps=8, max_examples=3, target="b") == result


@pytest.mark.parametrize(("task", "labels"), [("causal-lm", ["good", "bad"]),
                                            ("masked-lm", ["good", "bad", "ok"])])
def test_language_model_tasks_satisfy_completeness(tiny_gpt2_dir, tiny_bert_dir, sentences,
                                                   task, labels):
    model_dir = tiny_gpt2_dir if task == "causal-lm" else tiny_bert_dir
    loaded = load_base_model(str(model_dir), task=task, device="cpu")
    prompt = torch.randn(3, 32, generator=torch.Generator().manual_seed(5))
    prompted = PromptedModel(loaded.model, loaded.tokenizer, prompt, task=task, labels=labels)
    texts = sentences[:4]
    result = attribute(prompted, texts, n_steps=16, batch_size=4)
    fill = baseline_vector(prompted, "pad")
    for text, example in zip(texts, result["examples"], strict=True):
        # padding trimmed: one attribution per real token (the masked-lm [MASK] included)
        assert len(example["token_attributions"]) == len(prompted.encode([text]).input_ids[0])
        total = sum(example["prompt_attributions"]) + sum(example["token_attributions"])
        diff = (direct_probability(prompted, text, example["target"])
                - direct_probability(prompted, text, example["target"], fill=fill))
        assert abs(total - diff) <= abs(example["convergence_delta"]) + 1e-5


# ---------------------------------------------------------- MiniLM vs Captum
def test_minilm_matches_a_direct_captum_call(minilm_seqcls_adapter, sentences):
    from captum.attr import IntegratedGradients

    from promptaudit.prompted_model import load_prompted_model

    prompted, _, _ = load_prompted_model("builtin:minilm", str(minilm_seqcls_adapter), device="cpu")
    texts = sentences[:3]
    ours = attribute(prompted, texts, n_steps=16, baseline="pad", batch_size=3)
    pad = prompted.word_embeddings[prompted.tokenizer.pad_token_id].detach()
    got, expected = [], []
    for text, example in zip(texts, ours["examples"], strict=True):
        encoded = prompted.encode([text])

        def forward(prompt_embeds, input_embeds, attention_mask, token_type_ids):
            return prompted.label_probabilities(
                prompt_embeds, input_embeds, attention_mask, token_type_ids
            )

        embeds = prompted.embed(encoded.input_ids).detach()
        prompt = prompted.prompt.unsqueeze(0)
        prompt_attr, input_attr = IntegratedGradients(forward).attribute(
            (prompt, embeds),
            baselines=(pad.expand_as(prompt), pad.expand_as(embeds)),
            target=example["target"],
            n_steps=16,
            additional_forward_args=(encoded.attention_mask, encoded.token_type_ids),
        )
        expected += prompt_attr.sum(-1)[0].tolist() + input_attr.sum(-1)[0].tolist()
        got += example["prompt_attributions"] + example["token_attributions"]
    assert len(got) == len(expected)
    assert np.corrcoef(got, expected)[0, 1] >= 0.99
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(got).max() > 1e-4  # not trivially zero


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "saliency"}, UNKNOWN_METHOD_MESSAGE.format(value="saliency")),
        ({"baseline": "blur"}, UNKNOWN_BASELINE_MESSAGE.format(value="blur")),
        ({"method": "shapley_sampling", "shapley_input": "pairs"},
         UNKNOWN_SHAPLEY_INPUT_MESSAGE.format(value="pairs")),
        ({"n_steps": 0}, N_STEPS_MESSAGE.format(value=0)),
        ({"n_steps": 2.5}, N_STEPS_MESSAGE.format(value=2.5)),
        ({"n_steps": "many"}, N_STEPS_AUTO_MESSAGE.format(value="many")),
        ({"delta_tolerance": 0}, DELTA_TOLERANCE_MESSAGE.format(value=0)),
        ({"delta_tolerance": 1.5}, DELTA_TOLERANCE_MESSAGE.format(value=1.5)),
        ({"delta_tolerance": float("nan")}, DELTA_TOLERANCE_MESSAGE.format(value=float("nan"))),
        ({"max_gradient_evals": 4}, MAX_GRADIENT_EVALS_MESSAGE.format(value=4)),
        ({"position_tolerance": 0}, POSITION_TOLERANCE_MESSAGE.format(value=0)),
        ({"position_tolerance": "loose"}, POSITION_TOLERANCE_MESSAGE.format(value="loose")),
        ({"method": "shapley_sampling", "n_samples": 0}, N_SAMPLES_MESSAGE.format(value=0)),
        ({"max_examples": 0}, MAX_EXAMPLES_MESSAGE.format(value=0)),
        ({"batch_size": -1}, BATCH_SIZE_MESSAGE.format(value=-1)),
        ({"internal_batch_size": 0}, INTERNAL_BATCH_SIZE_MESSAGE.format(value=0)),
        ({"method": "feature_ablation", "internal_batch_size": 0},
         INTERNAL_BATCH_SIZE_MESSAGE.format(value=0)),
        ({"target": 2}, TARGET_RANGE_MESSAGE.format(value=2, last=1)),
        ({"target": -1}, TARGET_RANGE_MESSAGE.format(value=-1, last=1)),
        (
            {"target": "neutral"},
            TARGET_LABEL_MESSAGE.format(value="neutral", allowed="negative, positive", last=1),
        ),
    ],
)
def test_bad_input_raises_one_line_messages(toy, kwargs, message):
    with pytest.raises(InputError) as caught:
        attribute(toy, ["good film", "bad"], **kwargs)
    assert str(caught.value) == message
    assert "\n" not in message


def test_bad_group_summary_input_raises_one_line_messages(toy):
    result = attribute(toy, ["good film", "bad"], n_steps=4)
    with pytest.raises(InputError) as caught:
        summarise_groups(result, pd.DataFrame({"g": ["a"]}))
    assert str(caught.value) == SENSITIVE_ROWS_MESSAGE.format(rows=1, texts=2)
    with pytest.raises(InputError) as caught:
        summarise_groups(result, pd.DataFrame({"g": ["a", "b"]}), min_group_size=0)
    assert str(caught.value) == MIN_GROUP_SIZE_MESSAGE.format(value=0)


def test_method_objects_hold_their_options_and_ignore_the_others():
    method = attribution_method("integrated_gradients", n_steps="auto", n_samples=3,
                                delta_tolerance=0.01)
    assert method == IntegratedGradients(n_steps="auto", delta_tolerance=0.01)
    assert method.adaptive and method.resolved_position_tolerance == 0.025
    assert attribution_method("shapley_sampling", n_samples=3, n_steps="auto") == \
        ShapleySampling(n_samples=3)
    assert attribution_method("feature_ablation", baseline="zero").header() == {
        "method": "feature_ablation", "n_steps": None, "position_tolerance": None,
        "n_samples": None, "shapley_input": None, "baseline": "zero"}
    assert FeatureAblation(baseline="zero").baseline is Baseline.ZERO


def test_no_texts_and_no_prompt_are_refused(toy):
    with pytest.raises(InputError) as caught:
        attribute(toy, [])
    assert str(caught.value) == NO_TEXTS_MESSAGE
    with pytest.raises(InputError) as caught:
        attribute(toy.with_prompt(None), ["good"])
    assert str(caught.value) == NO_PROMPT_MESSAGE


# ------------------------------------------------- adaptive integrated gradients
SHARP_BIAS = -20.0
SHARP_PROMPT = [[100.0, 0.0], [0.0, 200.0]]  # w . p = 200, 200: far outside the vocabulary


class SharpTransitionClassifier(SummedEmbeddingClassifier):
    """Logits ``[0, w . sum e_i - 20]``: with the large prompt and the zero baseline,
    ``z(alpha) = -20 + alpha * Z`` (``Z`` about 400), so the probability jumps from
    ``sigmoid(-20)`` to 1 within ``alpha`` in about [0.04, 0.06]."""

    def forward(self, inputs_embeds, attention_mask, token_type_ids=None):
        z = ((inputs_embeds * attention_mask.unsqueeze(-1)) @ self.w).sum(dim=1) + SHARP_BIAS
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(z), z], dim=-1))


@pytest.fixture(scope="module")
def sharp() -> PromptedModel:
    return make_toy(SharpTransitionClassifier().eval(), SHARP_PROMPT)


SHARP_TEXTS = ["good film", "bad film", "very good film"]


def sharp_closed_form(text: str) -> list[float]:
    """Exact IG (zero baseline, label 1): ``w . e_i * (sigmoid(z) - sigmoid(z')) / (z - z')``."""
    scores = [200.0, 200.0] + [TOY_SCORES[w] for w in text.split()]
    total = sum(scores)
    z, z0 = SHARP_BIAS + total, SHARP_BIAS
    return [v * (sigmoid(z) - sigmoid(z0)) / (z - z0) for v in scores]


def test_adaptive_meets_the_tolerance_on_a_sharp_transition_where_fixed_steps_miss(sharp):
    tolerance = 0.02
    for n_steps in (16, 32, 64):  # Gauss-Legendre steps miss the narrow transition
        fixed = attribute(sharp, SHARP_TEXTS, n_steps=n_steps, baseline="zero",
                                 delta_tolerance=tolerance)
        assert fixed["max_convergence_delta"] > tolerance
        assert fixed["n_not_converged"] == len(SHARP_TEXTS)
        assert all(e["converged"] is False and e["n_steps"] == n_steps
                   for e in fixed["examples"])
    result = attribute(sharp, SHARP_TEXTS, n_steps="auto", baseline="zero",
                              delta_tolerance=tolerance)
    assert result["n_steps"] == "auto" and result["delta_tolerance"] == tolerance
    assert result["n_not_converged"] == 0 and result["max_gradient_evals"] == 512
    assert result["max_convergence_delta"] <= tolerance
    assert result["n_gradient_evals"] == sum(e["n_steps"] for e in result["examples"])
    for text, example in zip(SHARP_TEXTS, result["examples"], strict=True):
        assert example["target"] == 1 and example["converged"] is True
        # fewer evaluations than 64 fixed steps, which still miss
        assert example["n_steps"] < 64
        got = example["prompt_attributions"] + example["token_attributions"]
        expected = sharp_closed_form(text)
        # every position's integrand is w . e_i * sigmoid'(z): one shared error factor
        z_span = sum(abs(v) for v in [200.0, 200.0] + [TOY_SCORES[w] for w in text.split()])
        for value, exact, score in zip(got, expected, [200.0, 200.0]
                                       + [TOY_SCORES[w] for w in text.split()], strict=True):
            assert abs(value - exact) <= abs(score) / z_span * tolerance + 1e-6
        assert abs(example["convergence_delta"]) <= tolerance


def _logged_evaluate(calls, *, centre=0.06, width=0.004):
    """``f(alpha) = sigmoid((alpha - centre) / width)``; ``g`` splits ``f'`` 30/70 over two
    features. Logs every (path, alpha) it is asked for."""

    def evaluate(paths, alphas):
        calls.extend(zip(paths.tolist(), alphas.tolist(), strict=True))
        shift = 0.01 * paths.double()  # each path its own transition
        u = (alphas - centre - shift) / width
        f = torch.sigmoid(u)
        df = f * (1 - f) / width
        return f, torch.stack([0.3 * df, 0.7 * df], dim=1)

    return evaluate


def exact_change(path: int, centre=0.06, width=0.004) -> float:
    c = centre + 0.01 * path
    return sigmoid((1 - c) / width) - sigmoid(-c / width)


def test_refinement_reuses_every_evaluation_and_meets_the_tolerance():
    calls: list = []
    out = adaptive_path_integral(_logged_evaluate(calls), 3, tolerance=1e-3, max_evals=1000)
    assert len(calls) == len(set(calls))  # no point evaluated twice
    assert len(calls) == int(out.n_evals.sum())
    for path in range(3):
        points = sorted(a for p, a in calls if p == path)
        assert len(points) == int(out.n_evals[path])
        # nested bisection: 5 starting points, then 2 per bisected interval
        assert len(points) % 2 == 1 and len(points) > 5
        assert points[0] == 0.0 and points[-1] == 1.0
        assert bool(out.converged[path])
        assert float(out.error_bound[path]) <= 1e-3
        assert float(out.position_error[path]) <= POSITION_TOLERANCE_FACTOR * 1e-3
        assert abs(float(out.delta[path])) <= float(out.error_bound[path]) + 1e-12
        total = float(out.integral[path].sum())
        assert total == pytest.approx(exact_change(path), abs=1e-3)
        # the two features keep their 30/70 split of the integral
        assert float(out.integral[path][0]) == pytest.approx(0.3 * total, rel=1e-9)
    # far fewer points than a uniform grid fine enough for the transition (1/512)
    assert int(out.n_evals.max()) < 100


BUMP_CENTRE, BUMP_WIDTH = 0.3, 0.1


def _cancelling_evaluate(calls):
    """``f(alpha) = alpha`` and ``g = [1/2 + s, 1/2 - s]`` with a bump ``s(alpha) =
    exp(-((alpha - 0.3) / 0.1) ** 2)``: ``sum(g) = f'`` exactly, so every interval's
    completeness error is 0, while each component carries the bump with opposite signs."""

    def evaluate(paths, alphas):
        calls.extend(zip(paths.tolist(), alphas.tolist(), strict=True))
        bump = torch.exp(-(((alphas - BUMP_CENTRE) / BUMP_WIDTH) ** 2))
        return alphas.clone(), torch.stack([0.5 + bump, 0.5 - bump], dim=1)

    return evaluate


def _bump_integral() -> float:
    """``int_0^1 s`` in closed form (erf)."""
    return (BUMP_WIDTH * math.sqrt(math.pi) / 2
            * (math.erf((1 - BUMP_CENTRE) / BUMP_WIDTH) + math.erf(BUMP_CENTRE / BUMP_WIDTH)))


def test_positions_converge_where_the_sum_alone_would_let_their_errors_cancel():
    exact = np.array([0.5 + _bump_integral(), 0.5 - _bump_integral()])
    tolerance = 0.01
    # completeness only (the former rule): the sum is exact at the first 5 points, the
    # components are off by about 0.085 each
    old_calls: list = []
    old = adaptive_path_integral(_cancelling_evaluate(old_calls), 1, tolerance=tolerance,
                                 max_evals=512, position_tolerance=math.inf)
    assert old.n_evals.tolist() == [5] and bool(old.converged[0])
    assert abs(float(old.delta[0])) < 1e-12
    old_error = np.abs(old.integral[0].numpy() - exact)
    assert old_error.min() > 0.05
    # per-position rule: refines the bump until the components are right
    calls: list = []
    new = adaptive_path_integral(_cancelling_evaluate(calls), 1, tolerance=tolerance,
                                 max_evals=512)
    assert bool(new.converged[0])
    position_tolerance = POSITION_TOLERANCE_FACTOR * tolerance
    assert float(new.position_error[0]) <= position_tolerance
    new_error = np.abs(new.integral[0].numpy() - exact)
    assert new_error.sum() <= position_tolerance  # the estimate held: L1 error within it
    assert new_error.sum() < old_error.sum() / 10
    # still nested: every point once, the old rule's 5 among them
    assert len(calls) == len(set(calls)) == int(new.n_evals[0]) < 100
    assert set(old_calls) <= set(calls)


def test_audits_batch_more_examples_for_adaptive_steps():
    assert IntegratedGradients(n_steps="auto").audit_batch_size == 32
    assert IntegratedGradients(n_steps=16).audit_batch_size == 8
    assert FeatureAblation().audit_batch_size == 8


def test_a_path_that_hits_the_cap_is_not_converged():
    calls: list = []
    out = adaptive_path_integral(_logged_evaluate(calls, width=0.0005), 2, tolerance=1e-4,
                                 max_evals=9)
    assert out.n_evals.tolist() == [9, 9]
    assert out.converged.tolist() == [False, False]
    assert (out.error_bound > 1e-4).all()
    assert len(calls) == 18


def test_a_batch_equals_its_examples_one_at_a_time(tiny_bert, sentences):
    texts = sentences[:5]
    one = attribute(tiny_bert, texts, n_steps="auto", batch_size=1, delta_tolerance=0.01)
    many = attribute(tiny_bert, texts, n_steps="auto", batch_size=5,
                            internal_batch_size=7, delta_tolerance=0.01)
    for a, b in zip(one["examples"], many["examples"], strict=True):
        assert a["n_steps"] == b["n_steps"] and a["converged"] == b["converged"]
        np.testing.assert_allclose(a["prompt_attributions"], b["prompt_attributions"],
                                   atol=1e-5)
        np.testing.assert_allclose(a["token_attributions"], b["token_attributions"], atol=1e-5)
        assert a["convergence_delta"] == pytest.approx(b["convergence_delta"], abs=1e-5)
    assert one["n_gradient_evals"] == many["n_gradient_evals"]


def test_adaptive_passes_carry_no_padding_their_rows_do_not_need(tiny_bert, sentences,
                                                                  monkeypatch):
    """Rows go by length; each pass keeps only the columns of its longest example."""
    import captum._utils.gradient as gradient

    texts = [sentences[0], f"{sentences[1]} {sentences[2]} {sentences[3]}", sentences[4]]
    lengths = tiny_bert.encode(texts).attention_mask.sum(dim=1)
    passes: list[tuple[int, int]] = []
    real = gradient.compute_gradients

    def spy(forward_fn, inputs, *, additional_forward_args=None, **kwargs):
        mask = additional_forward_args[0]
        passes.append((inputs[1].shape[1], int(mask.sum(dim=1).max())))
        return real(forward_fn, inputs, additional_forward_args=additional_forward_args,
                    **kwargs)

    monkeypatch.setattr(gradient, "compute_gradients", spy)
    out = attribute(tiny_bert, texts, n_steps="auto", batch_size=3,
                           internal_batch_size=4, delta_tolerance=0.01)
    assert passes and all(width == longest for width, longest in passes)
    assert min(width for width, _ in passes) < int(lengths.max())  # short rows went alone
    monkeypatch.undo()
    alone = [attribute(tiny_bert, [t], n_steps="auto", delta_tolerance=0.01)
             for t in texts]
    for a, b in zip(out["examples"], alone, strict=True):
        np.testing.assert_allclose(a["token_attributions"],
                                   b["examples"][0]["token_attributions"], atol=1e-5)


def test_adaptive_completeness_for_every_example_on_minilm(minilm_seqcls_adapter, sentences):
    from promptaudit.prompted_model import load_prompted_model

    prompted, _, _ = load_prompted_model("builtin:minilm", str(minilm_seqcls_adapter), device="cpu")
    texts = sentences[:4]
    tolerance = 0.01
    result = attribute(prompted, texts, n_steps="auto", baseline="zero",
                              delta_tolerance=tolerance, batch_size=4)
    fill = baseline_vector(prompted, "zero")
    assert result["n_not_converged"] == 0
    for text, example in zip(texts, result["examples"], strict=True):
        total = sum(example["prompt_attributions"]) + sum(example["token_attributions"])
        diff = (direct_probability(prompted, text, example["target"])
                - direct_probability(prompted, text, example["target"], fill=fill))
        assert example["converged"] is True
        assert abs(total - diff) <= tolerance + 1e-5
        assert abs(total - diff - example["convergence_delta"]) <= 1e-5
    json.dumps(result)
    text = format_attribution_summary(result)
    assert "Completeness tolerance 0.01 (per-position 0.025): every example within both" in text
    assert result["position_tolerance"] == pytest.approx(POSITION_TOLERANCE_FACTOR * tolerance)
    assert all(0 <= e["position_error"] <= result["position_tolerance"]
               for e in result["examples"])


def test_fixed_steps_report_convergence_against_the_tolerance(tiny_bert, sentences):
    result = attribute(tiny_bert, sentences[:3], n_steps=4, delta_tolerance=1e-6)
    deltas = [abs(e["convergence_delta"]) for e in result["examples"]]
    assert [e["converged"] for e in result["examples"]] == [d <= 1e-6 for d in deltas]
    assert result["n_not_converged"] == sum(d > 1e-6 for d in deltas)
    assert result["n_gradient_evals"] == 12 and result["max_gradient_evals"] is None
    assert result["position_tolerance"] is None
    assert all(e["position_error"] is None for e in result["examples"])
    ablation = attribute(tiny_bert, sentences[:2], method="feature_ablation")
    assert ablation["delta_tolerance"] is None and ablation["n_not_converged"] is None
    assert "converged" not in ablation["examples"][0]


# ------------------------------------------------------ per-group small groups
def test_group_attribution_leaves_small_groups_out_of_gaps():
    prompt_attr = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0], [9.0, 9.0]])
    groups = pd.DataFrame({"g": ["a", "a", "b", "b", "c"]})
    out = group_attribution(prompt_attr, groups, min_group_size=2, error_scale=1.5)["g"]
    assert out["small_groups"] == ["c"] and out["min_group_size"] == 2
    assert out["counts"] == {"a": 2, "b": 2, "c": 1}
    assert out["groups"]["c"] == [9.0, 9.0]  # listed, never dropped
    # a = [2, 0], b = [0, 3]: the gap ignores c
    assert out["max_difference"] == [2.0, 3.0]
    assert out["top_positions"] == [1, 0]
    assert out["within_error"] == [False, False]
    assert group_attribution(prompt_attr, groups, min_group_size=1)["g"]["max_difference"] \
        == [9.0, 9.0]
    tight = group_attribution(prompt_attr, groups, min_group_size=2, error_scale=2.5)["g"]
    assert tight["within_error"] == [True, False]
    alone = group_attribution(prompt_attr, groups, min_group_size=3)["g"]
    assert alone["max_difference"] is None and alone["top_positions"] == []
    assert alone["small_groups"] == ["a", "b", "c"]


def test_group_summaries_apply_min_group_size(tiny_bert, sentences):
    features = pd.DataFrame({"g": ["x"] * 5 + ["y"] * 3})
    result = attribute(tiny_bert, sentences, n_steps=4)
    result["by_group"] = summarise_groups(result, features, min_group_size=4)
    info = result["by_group"]["g"]
    assert info["small_groups"] == ["y"] and info["max_difference"] is None
    assert "small groups (n < 4, left out of gaps): y" in format_attribution_summary(result)
    default = summarise_groups(result, features)
    assert default["g"]["small_groups"] == ["x", "y"]  # default 30, as fairness


def test_cli_attribute_defaults_to_adaptive_steps(tmp_path, tiny_bert_dir, tiny_bert_seqcls_adapter,
                                                  sentences):
    from typer.testing import CliRunner

    from promptaudit.cli import app

    data = tmp_path / "data.csv"
    pd.DataFrame({"sentence": sentences[:3]}).to_csv(data, index=False)
    common = ["attribute", "--model", str(tiny_bert_dir), "--prompt",
              str(tiny_bert_seqcls_adapter), "--data", str(data), "--text-column", "sentence",
              "--device", "cpu"]
    runner = CliRunner()
    out = runner.invoke(app, [*common, "--delta-tolerance", "0.005", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["n_steps"] == "auto" and result["delta_tolerance"] == 0.005
    assert result["n_not_converged"] == 0
    assert all(abs(e["convergence_delta"]) <= 0.005 for e in result["examples"])
    fixed = runner.invoke(app, [*common, "--n-steps", "8", "--json"])
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["n_steps"] == 8
    bad = runner.invoke(app, [*common, "--n-steps", "lots"])
    assert bad.exit_code == 2
    assert N_STEPS_AUTO_MESSAGE.format(value="lots") in bad.output


def test_html_report_shows_convergence_and_small_groups_honestly():
    import html as html_lib
    from pathlib import Path

    from promptaudit.report import render_html

    fixture = Path(__file__).parent / "fixtures" / "sample_result.json"
    result = json.loads(fixture.read_text())
    attribution = result["attribution"]
    attribution.update({"n_steps": "auto", "delta_tolerance": 0.02, "n_not_converged": 1,
                        "n_gradient_evals": 321, "max_gradient_evals": 512})
    for i, example in enumerate(attribution["examples"]):
        example.update({"n_steps": 41 + i, "converged": i != 0})
    n_virtual = len(attribution["per_position"])
    attribution["by_group"] = {"gender": {
        "groups": {"f": [0.1] * n_virtual, "m": [0.2] * n_virtual, "x": [0.0] * n_virtual},
        "counts": {"f": 40, "m": 40, "x": 3}, "small_groups": ["x"], "min_group_size": 30,
        "max_difference": [0.1] * n_virtual, "within_error": [True] * n_virtual,
        "error_scale": 0.2, "top_positions": [0, 1]}}
    def text_of(page: str) -> str:
        return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", "", page)).split())

    page = text_of(render_html(result))
    n = attribution["n_examples"]
    assert f"1 of {n} examples did not converge:" in page
    assert ("within the tolerance 0.02, or the estimated errors of their positions add up to "
            "more than 0.05 after 512 gradient evaluations") in page
    assert "(not converged) 41" in page
    assert "adaptive steps per example, at most 512" in page
    assert "0 (within the integration error)" in page
    assert "groups with fewer than 30 examples left out: x" in page
    for example in attribution["examples"]:
        example["converged"] = True
    attribution["n_not_converged"] = 0
    page = text_of(render_html(result))
    assert "every example's attributions add up to its change in score within the " \
           "tolerance 0.02, and the estimated errors of its positions add up to at most 0.05 " \
           "(321 gradient evaluations in all)" in page
    attribution["position_tolerance"] = None  # completeness only (fixed steps, or inf)
    page = text_of(render_html(result))
    assert "every example's attributions add up to its change in score within the " \
           "tolerance 0.02 (321 gradient evaluations in all)" in page
    assert "(not converged)" not in page


def test_markdown_summary_states_attribution_convergence():
    from pathlib import Path

    from promptaudit.report import render_markdown

    fixture = Path(__file__).parent / "fixtures" / "sample_result.json"
    result = json.loads(fixture.read_text())
    n = result["attribution"]["n_examples"]
    result["attribution"].update({"delta_tolerance": 0.02, "n_not_converged": 2})
    assert (f"2 of {n} examples did NOT converge: their attributions do not add up to their "
            "change in score within 0.02") in render_markdown(result)
    assert ("or the estimated errors of their positions add up to more than 0.05"
            in render_markdown(result))
    result["attribution"]["n_not_converged"] = 0
    assert f"every one of {n} examples' attributions adds up" in render_markdown(result)
    assert "positions add up to at most 0.05" in render_markdown(result)
