"""promptaudit: fairness and interpretability audits for tuned (soft) prompts.

The public API, one entry function per stage (contracts in ``docs/``)::

    load_spec / run_audit           audits end to end (spec.py, pipeline.py)
    load_prompted_model             base model + soft prompt -> PromptedModel
    train_prompt                    PEFT prompt tuning
    project_prompt                  nearest vocabulary words and how far to trust them
    translate_prompt                readable words that reproduce the prompt's decisions
    PromptAttributor                Captum attribution to prompt positions (IntegratedGradients,
                                    FeatureAblation, ShapleySampling; summarise_groups)
    compute_group_fairness          fairlearn group metrics and disparities
    compute_counterfactual          counterfactual flip rate
    compute_bias_audit              impact-ratio tables (NYC LL144, EEOC four-fifths rule)
    evaluate_gates, write_reports   verdicts and the report files
    mitigate_prompt                 re-tune a prompt with counterfactual logit pairing
    compare_results                 two results side by side, with a regression gate

Names are imported lazily so ``import promptaudit`` (and the CLI's start-up) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AuditSpec": "promptaudit.spec",
    "load_spec": "promptaudit.spec",
    "run_audit": "promptaudit.pipeline",
    "PromptedModel": "promptaudit.prompted_model",
    "load_prompted_model": "promptaudit.prompted_model",
    "load_prompt": "promptaudit.soft_prompts",
    "load_base_model": "promptaudit.models",
    "Task": "promptaudit.models",
    "train_prompt": "promptaudit.training",
    "TrainingConfig": "promptaudit.training",
    "project_prompt": "promptaudit.projection",
    "translate_prompt": "promptaudit.translation",
    "TranslateSettings": "promptaudit.translation",
    "PromptAttributor": "promptaudit.attribution",
    "IntegratedGradients": "promptaudit.attribution",
    "FeatureAblation": "promptaudit.attribution",
    "ShapleySampling": "promptaudit.attribution",
    "summarise_groups": "promptaudit.attribution",
    "compute_group_fairness": "promptaudit.fairness",
    "compute_counterfactual": "promptaudit.fairness",
    "compute_bias_audit": "promptaudit.bias_audit",
    "evaluate_gates": "promptaudit.gates",
    "write_reports": "promptaudit.report",
    "mitigate_prompt": "promptaudit.mitigation",
    "compare_results": "promptaudit.compare",
    "PromptAuditError": "promptaudit.errors",
    "InputError": "promptaudit.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'promptaudit' has no attribute {name!r}")
