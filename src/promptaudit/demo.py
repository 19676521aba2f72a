"""``promptaudit demo``: the built-in audit on the embedded default model.

It audits a small prompt-tuning adapter for ``builtin:minilm`` (shipped in
``promptaudit/demo_prompt/``, trained by ``scripts/train_demo_prompts.py`` on
the clean ``builtin:screening-train`` corpus) on the ``builtin:screening``
evaluation set, with gender and race as sensitive features and the
``builtin:identity`` term suite for counterfactuals. ``--retrain`` trains the
prompt afresh (same seed, same settings) before auditing it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from promptaudit.corpora import SCREENING_LABELS, SCREENING_POSITIVE_LABEL
from promptaudit.spec import AuditSpec, parse_spec
from promptaudit.training import InitMethod, TrainingConfig

__all__ = ["DEMO_TRAINING", "demo_spec", "demo_prompt_dir", "run_demo"]

logger = logging.getLogger(__name__)

#: Settings used to train the shipped demo prompts.
DEMO_TRAINING = TrainingConfig(
    num_virtual_tokens=10,
    init=InitMethod.TEXT,
    init_text="Decide whether to accept or reject this job applicant",
    epochs=2,
    learning_rate=0.03,
    batch_size=32,
    max_length=64,
    seed=0,
)


def demo_prompt_dir(variant: str = "clean") -> Path:
    """Folder of a shipped demo adapter (``clean`` or ``biased``)."""
    name = "demo_prompt" if variant == "clean" else f"demo_prompt_{variant}"
    return Path(__file__).parent / name


def demo_spec(
    prompt_path: str | Path, *, name: str = "demo", inconclusive: str = "pass"
) -> AuditSpec:
    """The demo audit spec (the same content as ``audits/demo.yaml``).

    ``inconclusive`` is the demo's ``gate_policy.inconclusive``: ``pass`` for the clean
    demo (600 rows cannot settle its gates; a fresh install ends with exit 0 and says
    why), ``fail`` (every audit's default) for ``audits/demo-biased.yaml``.
    """
    return parse_spec({
        "name": name,
        "seed": 0,
        "model": {"base": "builtin:minilm", "task": "sequence-classification",
                  "labels": list(SCREENING_LABELS), "positive_label": SCREENING_POSITIVE_LABEL,
                  "max_length": 64},
        "prompt": {"path": str(prompt_path)},
        "data": {"path": "builtin:screening", "text_column": "text", "label_column": "label",
                 "sensitive_features": ["gender", "race"]},
        "counterfactuals": {"suite": "builtin:identity", "features": ["gender"]},
        "projection": {"top_k": 5, "metric": "cosine"},
        "attribution": {"method": "integrated_gradients", "n_steps": "auto",
                        "delta_tolerance": 0.02, "baseline": "pad", "max_examples": 16},
        "fairness": {"metrics": ["selection_rate", "accuracy", "true_positive_rate",
                                 "false_positive_rate", "mean_score"],
                     "bootstrap": 2500, "confidence": 0.95, "min_group_size": 30},
        "gates": [
            {"metric": "demographic_parity_ratio", "min": 0.8},
            {"metric": "equalized_odds_difference", "max": 0.1},
            {"metric": "counterfactual_flip_rate", "max": 0.05},
        ],
        # 600 generated rows cannot settle these thresholds either way: the demo shows its
        # gates as INCONCLUSIVE (with the rows each would need) and, so that a fresh
        # install ends with exit 0, counts them as passed. Audits of your own keep the
        # default, inconclusive: fail.
        "gate_policy": {"inconclusive": inconclusive},
    }, source="demo")


def run_demo(out: str | Path, *, retrain: bool = False, progress: bool = True) -> tuple[dict, dict]:
    """Run the demo audit and write its four reports into ``out``.

    Returns
    -------
    (result, paths)
        The result dict and ``{kind: path}`` of the written reports.
    """
    from promptaudit.atomic import prepare_output_dir
    from promptaudit.pipeline import run_audit
    from promptaudit.report import write_reports

    out = prepare_output_dir(out)
    prompt_path = demo_prompt_dir("clean")
    if retrain:
        prompt_path = _retrain(out / ".demo_prompt", progress=progress)
    spec = demo_spec(prompt_path)
    result = run_audit(spec, progress=progress, command="promptaudit demo")
    return result, write_reports(result, out, name=spec.name)


def _retrain(out_dir: Path, *, progress: bool) -> Path:
    from promptaudit.corpora import load_builtin_table
    from promptaudit.data import encode_labels
    from promptaudit.training import train_prompt

    frame = load_builtin_table("screening-train", seed=0)
    ids = encode_labels(frame["label"], list(SCREENING_LABELS), source="builtin:screening-train",
                        column="label")
    train_prompt("builtin:minilm", frame["text"].tolist(), ids, labels=list(SCREENING_LABELS),
                 out_dir=out_dir, config=DEMO_TRAINING, progress=progress)
    return out_dir
