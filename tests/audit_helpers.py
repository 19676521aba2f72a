"""Helpers to build a small audit for the end-to-end tests: a model, a prompt, a csv, a spec.

Everything is tiny and offline: a sequence classifier derived from the session's tiny
BERT (``tiny_bert_dir``) with a *saved* seeded classifier head (so a second load, in the
test, gives the very same model the pipeline used), a random ``[num_virtual_tokens,
hidden]`` prompt saved as ``.safetensors``, and an evaluation csv with ``gender``,
``race``, a ``pair_id`` column and rows whose text is an HTML/script or Markdown payload.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

SCRIPT = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(1)>'
MARKDOWN_PAYLOAD = "**bold** | [link](http://x) # heading"
PAYLOADS = (SCRIPT, ATTR, MARKDOWN_PAYLOAD)

LABELS = ["negative", "positive"]

#: Texts built from the tiny vocabulary (tests/conftest.py WORDS).
_BASE_TEXTS = [
    "the movie was good",
    "a boring film",
    "i hated the plot and the acting was awful",
    "this story is really great",
    "ok",
    "i loved it but the ending was not very good",
    "the acting was bad",
    "fun",
    "the plot was so boring",
    "it was a great film",
    "i liked the ending",
    "not good and not fun",
    "the story is ok but the acting is bad",
    "a really awful movie",
    "that was very fun",
    "this film is great and the plot is good",
    "i hated it",
    "the ending was positive",
    "so negative",
    "an ok plot",
    "boring",
]


def eval_frame() -> pd.DataFrame:
    """24 rows: three payload rows first (so attribution sees them), then plain texts.

    Columns: ``sentence``, ``label`` (negative/positive), ``gender`` (female/male),
    ``race`` (black/white/asian), ``pair_id`` (rows 2k and 2k+1 form a pair).
    """
    texts = [*PAYLOADS, *_BASE_TEXTS]
    n = len(texts)
    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "sentence": texts,
        "label": [LABELS[i] for i in rng.integers(0, 2, size=n)],
        "gender": ["female" if i % 2 == 0 else "male" for i in range(n)],
        "race": [("black", "white", "asian")[i % 3] for i in range(n)],
        "pair_id": [f"p{i // 2}" for i in range(n)],
    })


def write_csv(path: Path, frame: pd.DataFrame | None = None) -> Path:
    (frame if frame is not None else eval_frame()).to_csv(path, index=False)
    return path


def make_seqcls_model(tiny_bert_dir: str | Path, out: Path, *, prompt: Path,
                      texts: list[str], seed: int = 0) -> Path:
    """The tiny BERT as a sequence classifier whose saved head separates ``texts``.

    A random tiny BERT's pooled outputs barely differ between texts, so a random head
    predicts one class for everything. The head is set by hand instead: with ``prompt``
    prepended, the pooled outputs of ``texts`` are projected on their first principal
    direction ``w``; the positive logit minus the negative one is ``8 (x . w - t) / s``
    (``t`` the median projection, ``s`` its spread), so about half the texts are
    predicted positive. The head is saved with the model, so every later load (the
    pipeline's and the test's own) gives the same classifier.
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    from promptaudit.prompted_model import load_prompted_model

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    model.config.id2label = dict(enumerate(LABELS))
    model.config.label2id = {label: i for i, label in enumerate(LABELS)}
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)

    prompted, _, _ = load_prompted_model(str(out), str(prompt), task="sequence-classification",
                                         labels=LABELS, device="cpu", max_length=32)
    captured: list[torch.Tensor] = []
    hook = prompted.model.classifier.register_forward_pre_hook(
        lambda _module, args: captured.append(args[0].detach().clone()))
    try:
        prompted.predict_proba(texts)
    finally:
        hook.remove()
    pooled = torch.cat(captured).double()  # (n, hidden)
    centered = pooled - pooled.mean(dim=0)
    direction = torch.linalg.svd(centered, full_matrices=False).Vh[0]
    projection = pooled @ direction
    threshold = float(projection.median()) + 1e-3 * float(projection.std())
    gain = 8.0 / float(projection.std())
    with torch.no_grad():
        weight = torch.stack([-direction, direction]) * gain / 2
        bias = torch.tensor([threshold, -threshold], dtype=torch.float64) * gain / 2
        model.classifier.weight.copy_(weight.float())
        model.classifier.bias.copy_(bias.float())
    model.save_pretrained(out)
    return out


def write_prompt(path: Path, *, num_virtual_tokens: int = 4, hidden: int = 32,
                 seed: int = 0) -> Path:
    """A random ``[num_virtual_tokens, hidden]`` prompt tensor in a ``.safetensors`` file."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensor = torch.randn(num_virtual_tokens, hidden, generator=generator)
    save_file({"prompt_embeddings": tensor.contiguous()}, str(path))
    return path


def base_spec(*, model: str, prompt: str, data: str, name: str = "tiny-audit") -> dict:
    """A small, fast spec: bootstrap 50, attribution on 4 examples with 4 steps."""
    return {
        "name": name,
        "seed": 0,
        "model": {"base": model, "task": "sequence-classification", "labels": list(LABELS),
                  "positive_label": "positive", "max_length": 32},
        "prompt": {"path": prompt},
        "data": {"path": data, "text_column": "sentence", "label_column": "label",
                 "sensitive_features": ["gender", "race"]},
        "counterfactuals": {"pair_column": "pair_id"},
        "projection": {"top_k": 3, "metric": "cosine"},
        "attribution": {"method": "integrated_gradients", "n_steps": 4, "baseline": "pad",
                        "max_examples": 4},
        "fairness": {"metrics": ["selection_rate", "accuracy", "true_positive_rate",
                                 "false_positive_rate"],
                     "bootstrap": 50, "confidence": 0.9, "min_group_size": 5},
        "gates": [
            {"metric": "demographic_parity_difference", "max": 0.5},
            {"metric": "equalized_odds_difference", "max": 0.5},
            {"metric": "counterfactual_flip_rate", "max": 0.5},
        ],
    }


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def with_changes(spec: dict, **changes) -> dict:
    """A deep copy of ``spec`` with dotted-key changes: ``with_changes(s, **{"a.b": 1})``."""
    out = copy.deepcopy(spec)
    for key, value in changes.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return out


def without_created_at(result: dict) -> str:
    """The result JSON as sorted-key text, minus ``provenance.created_at``."""
    body = copy.deepcopy(result)
    body["provenance"].pop("created_at", None)
    return json.dumps(body, sort_keys=True, indent=2)


def recompute(result: dict, *, frame: pd.DataFrame | None = None) -> dict:
    """Predictions recomputed independently of the pipeline, and fairlearn's numbers on them.

    Loads the model and prompt named in the result's resolved spec with
    ``load_prompted_model`` and calls ``predict_proba`` once; fairness numbers come
    straight from ``fairlearn.metrics`` on those predictions.

    Returns a dict with ``probs``, ``y_pred``, ``y_true`` and, per feature
    (``gender``, ``race``), ``demographic_parity_difference`` / ``_ratio``,
    ``equalized_odds_difference`` / ``_ratio``, ``equal_opportunity_difference``
    (the TPR ``between_groups`` difference from a MetricFrame), selection rates by
    group, and the pair flip rate.
    """
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        equalized_odds_ratio,
        selection_rate,
        true_positive_rate,
    )

    from promptaudit.prompted_model import load_prompted_model

    spec = result["audit"]["spec"]
    frame = frame if frame is not None else pd.read_csv(spec["data"]["path"])
    prompted, _, _ = load_prompted_model(
        spec["model"]["base"], spec["prompt"]["path"], task=spec["model"]["task"],
        labels=spec["model"]["labels"], device="cpu", max_length=spec["model"]["max_length"],
        batch_size=spec["model"]["batch_size"],
    )
    texts = frame[spec["data"]["text_column"]].astype(str).tolist()
    probs = prompted.predict_proba(texts)
    labels = spec["model"]["labels"]
    positive = labels.index(spec["model"]["positive_label"])
    y_pred = (probs.argmax(axis=1) == positive).astype(int)
    y_true = (frame[spec["data"]["label_column"]].map(labels.index) == positive).astype(int)
    out: dict = {"probs": probs, "y_pred": y_pred, "y_true": y_true.to_numpy(), "by_feature": {}}
    for feature in spec["data"]["sensitive_features"]:
        groups = frame[feature].astype(str)
        tpr = MetricFrame(metrics=true_positive_rate, y_true=y_true, y_pred=y_pred,
                          sensitive_features=groups)
        sel = MetricFrame(metrics=selection_rate, y_true=y_true, y_pred=y_pred,
                          sensitive_features=groups)
        out["by_feature"][feature] = {
            "demographic_parity_difference": demographic_parity_difference(
                y_true, y_pred, sensitive_features=groups),
            "demographic_parity_ratio": demographic_parity_ratio(
                y_true, y_pred, sensitive_features=groups),
            "equalized_odds_difference": equalized_odds_difference(
                y_true, y_pred, sensitive_features=groups),
            "equalized_odds_ratio": equalized_odds_ratio(
                y_true, y_pred, sensitive_features=groups),
            "equal_opportunity_difference": tpr.difference(method="between_groups"),
            "selection_rate": {str(k): float(v) for k, v in sel.by_group.items()},
            "count": groups.value_counts().to_dict(),
        }
    features = list(spec["data"]["sensitive_features"])
    if len(features) > 1 and spec.get("fairness", {}).get("intersection", True):
        # fairlearn reads several columns as their intersection
        joint = frame[features].astype(str)
        out["by_feature"][" & ".join(features)] = {
            name: function(y_true, y_pred, sensitive_features=joint)
            for name, function in (
                ("demographic_parity_difference", demographic_parity_difference),
                ("demographic_parity_ratio", demographic_parity_ratio),
                ("equalized_odds_difference", equalized_odds_difference),
                ("equalized_odds_ratio", equalized_odds_ratio),
            )
        }
    cf = spec.get("counterfactuals") or {}
    if cf.get("pair_column"):
        pred_label = probs.argmax(axis=1)
        pairs = frame[cf["pair_column"]].astype(str)
        tuples = pd.Series(pred_label).groupby(pairs.to_numpy(), sort=False)
        sizes = tuples.size()
        flipped = tuples.nunique()[sizes >= 2] > 1
        score = pd.Series(probs[:, positive]).groupby(pairs.to_numpy(), sort=False)
        spread = (score.max() - score.min())[sizes >= 2]
        out["counterfactual_flip_rate"] = float(flipped.mean())
        out["counterfactual_mean_abs_delta"] = float(spread.mean())
    return out


def worst(values: dict, metric: str) -> float:
    """Worst value of a disparity over features: smallest ratio, largest difference."""
    numbers = [entry[metric] for entry in values["by_feature"].values() if metric in entry]
    return min(numbers) if metric.endswith("_ratio") else max(numbers)


#: The smallest complete ``provenance`` a hand-made result needs (every required key).
HAND_MADE_PROVENANCE = {
    "model": {"reference": "tiny", "resolved": None, "revision": None, "sha256": {}},
    "prompt": {"source": "prompt", "sha256": {}},
    "data": {"source": "data.csv", "sha256": None},
    "seed": 0,
    "versions": {},
    "device": "cpu",
    "command": None,
    "created_at": "2026-01-01T00:00:00+00:00",
}

#: The smallest complete ``task`` a hand-made result needs.
HAND_MADE_TASK = {
    "type": "sequence-classification",
    "labels": ["no", "yes"],
    "positive_label": "yes",
    "n_examples": 10,
    "n_truncated": 0,
    "prediction_counts": {"no": 5, "yes": 5},
    "accuracy": None,
}


def hand_made_gate(metric: str, *, passed: bool, message: str, **fields) -> dict:
    """A gate entry with every required key (``>=`` 0.0 on the point value unless given)."""
    return {"metric": metric, "feature": None, "op": ">=", "threshold": 0.0, "value": None,
            "bound": "point", "passed": passed, "message": message, **fields}

#: The smallest complete ``fairness`` a hand-made result needs (no sensitive features).
HAND_MADE_FAIRNESS = {
    "sensitive_features": [],
    "by_feature": {},
    "intersection": None,
    "disparities": {},
    "disparity_intervals": None,
    "warnings": [],
    "counterfactual": None,
}


def hand_made_counterfactual(flip_rate: float | None, mean_abs_delta: float | None) -> dict:
    """A ``fairness.counterfactual`` block with every required key."""
    return {"flip_rate": flip_rate, "mean_abs_delta": mean_abs_delta, "n_tuples": 10,
            "by_group": {}, "source": "builtin:identity"}
