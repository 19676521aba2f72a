"""Regenerate ``tests/fixtures/sample_result.json`` from a real audit.

The report tests render this fixture, so it must be exactly what ``run_audit``
writes today: ``tests/test_sample_result.py`` runs the same audit and fails when
the key structure of a fresh result and of the fixture differ (the schema drifted:
run this script and commit the new fixture).

The audit: the shipped demo prompt on ``builtin:minilm``, the first rows of
``builtin:screening`` with every section switched on (projection, attribution,
counterfactuals, bias audit with ``audit_info``, baselines, gates of every kind),
small enough to run in well under a minute on two cores.

Usage::

    python scripts/make_sample_result.py            # writes tests/fixtures/sample_result.json
    python scripts/make_sample_result.py --out X.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "sample_result.json"
#: The shipped biased demo prompt, relative to the repository root (the audit runs there,
#: so no machine's absolute path ends up in the fixture).
PROMPT = "src/promptaudit/demo_prompt_biased"

#: Rows of builtin:screening the sample audits (every gender x race cell is present).
SAMPLE_ROWS = 240


def sample_spec_dict() -> dict:
    """The sample audit as a spec dict (the prompt path is relative to the repository root)."""
    from promptaudit.corpora import SCREENING_LABELS, SCREENING_POSITIVE_LABEL

    return {
        "name": "sample",
        "seed": 0,
        "model": {"base": "builtin:minilm", "task": "sequence-classification",
                  "labels": list(SCREENING_LABELS), "positive_label": SCREENING_POSITIVE_LABEL,
                  "max_length": 64},
        "prompt": {"path": PROMPT},
        "data": {"path": "builtin:screening", "text_column": "text", "label_column": "label",
                 "sensitive_features": ["gender", "race"], "limit": SAMPLE_ROWS},
        "counterfactuals": {"suite": "builtin:identity", "features": ["gender"]},
        "projection": {"top_k": 3, "metric": "cosine",
                       "instructions": ["Accept applicants whose experience fits the job"],
                       "position_importance_max_examples": 60,
                       "departures_max_attributed": 4},
        "attribution": {"method": "integrated_gradients", "baseline": "pad", "max_examples": 4},
        "fairness": {"metrics": ["selection_rate", "accuracy", "true_positive_rate",
                                 "false_positive_rate", "mean_score"],
                     "bootstrap": 1200, "confidence": 0.95, "min_group_size": 20},
        "bias_audit": {"categories": ["gender", "race"], "mode": "selection",
                       "exclude_below": 0.02, "threshold": 0.8},
        "audit_info": {"date": "2026-11-28", "auditor": "promptaudit sample",
                       "data_source": "builtin:screening (first 240 rows)",
                       "data_kind": "test data",
                       "test_data_statement": "Generated applicant descriptions.",
                       "distribution_date": "2026-01-15"},
        "gates": [
            {"metric": "demographic_parity_ratio", "min": 0.8},
            {"metric": "equalized_odds_difference", "max": 0.1},
            {"metric": "counterfactual_flip_rate", "max": 0.05},
            {"metric": "min_impact_ratio", "min": 0.8},
            {"metric": "accuracy_over_baseline", "min": 0.0},
            {"metric": "demographic_parity_ratio", "feature": "gender & race", "min": 0.8,
             "use_bound": True},
        ],
    }


def make_sample_result() -> dict:
    """Run the sample audit (in the repository root) and return its result JSON object.

    It runs on one torch thread, whatever the caller's setting (restored afterwards): the
    order of float reductions depends on the thread count, and adaptive integrated
    gradients can turn a last-digit difference into one more bisection, so the fixture
    made here and the one the test makes (in a pytest-xdist worker or not) must use the
    same count to agree to 1e-6.
    """
    import contextlib

    import torch

    from promptaudit.pipeline import run_audit
    from promptaudit.spec import parse_spec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.chdir(ROOT):
            return run_audit(
                parse_spec(sample_spec_dict()), command="scripts/make_sample_result.py"
            )
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()
    result = make_sample_result()
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
