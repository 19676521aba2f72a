"""Issue 22, the verdict core: labels in the adapter's order, below-chance competence,
a bounded bootstrap. Each test fails on the code before the issue (noted per test)."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import promptaudit
from promptaudit.cli import app
from promptaudit.errors import InputError
from promptaudit.evaluation import assess_competence
from promptaudit.fairness import (
    BOOTSTRAP_BUDGET_BYTES,
    bootstrap_bytes,
    check_fairness_work,
    compute_group_fairness,
)

#: An adapter trained by ``promptaudit train`` on builtin:minilm with labels [reject, accept].
DEMO_PROMPT = Path(promptaudit.__file__).parent / "demo_prompt"
SWAPPED = "['accept', 'reject']"
RECORDED = "['reject', 'accept']"


def _cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    output = result.output + (getattr(result, "stderr", "") or "")
    return result.exit_code, output


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "data.csv"
    pd.DataFrame({"text": ["experienced engineer", "no experience"] * 3,
                  "label": ["accept", "reject"] * 3,
                  "group": ["a", "a", "b", "b", "c", "c"]}).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------ item 2: label order
# Old code: predict/attribute/project/run took the swapped labels and ran (exit 0).


@pytest.mark.parametrize("command", [
    ["predict"],
    ["attribute", "--n-steps", "2"],
    ["project"],  # --data: fidelity runs predictions
])
def test_labels_in_another_order_than_the_adapter_are_refused(command, small_data):
    code, output = _cli(*command, "--model", "builtin:minilm", "--prompt", DEMO_PROMPT,
                        "--labels", "accept,reject", "--data", small_data,
                        "--text-column", "text")
    assert code == 2, output
    assert SWAPPED in output and RECORDED in output
    assert "another order" in output and "Traceback" not in output


def test_run_refuses_model_labels_in_another_order(tmp_path, small_data):
    spec = {
        "name": "swapped", "seed": 0,
        "model": {"base": "builtin:minilm", "task": "sequence-classification",
                  "labels": ["accept", "reject"], "positive_label": "accept"},
        "prompt": {"path": str(DEMO_PROMPT)},
        "data": {"path": str(small_data), "text_column": "text", "label_column": "label",
                 "sensitive_features": ["group"]},
        "attribution": {"enabled": False}, "projection": {"enabled": False},
        "fairness": {"bootstrap": 0},
    }
    path = tmp_path / "swapped.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    code, output = _cli("run", path, "--out", tmp_path / "out")
    assert code == 2, output
    assert SWAPPED in output and RECORDED in output
    assert not (tmp_path / "out" / "swapped.json").exists()


def test_the_adapters_own_order_and_no_labels_are_accepted(small_data, tmp_path):
    for labels in (["--labels", "reject,accept"], []):
        out = tmp_path / f"p{len(labels)}.csv"
        code, output = _cli("predict", "--model", "builtin:minilm", "--prompt", DEMO_PROMPT,
                            *labels, "--data", small_data, "--text-column", "text", "--out", out)
        assert code == 0, output
        assert list(pd.read_csv(out).columns[-3:]) == ["p_reject", "p_accept", "prediction"]


def test_below_chance_says_so():
    # Old code: "cannot be told from chance" for a prompt that is reliably wrong.
    truth = np.array([0, 1] * 50)
    swapped = 1 - truth
    swapped[:6] = truth[:6]
    out = assess_competence(truth, swapped, bootstrap=200, seed=0)
    assert out["works"] is False
    assert out["accuracy_interval"][1] < 0.5
    assert "is below chance" in out["reason"]
    assert "labels may be in the wrong order" in out["reason"]
    assert "cannot be told from chance" not in out["reason"]
    # at chance it still cannot be told from chance
    at_chance = assess_competence(truth, np.zeros(100, dtype=int), bootstrap=200, seed=0)
    assert "cannot be told from chance" in at_chance["reason"]


# ------------------------------------------------------------------ item 8: bounded bootstrap
# Old code: 600 rows with a unique id and 1,000 resamples allocated ~9 GB (MemoryError, exit 3).


def _id_frame(n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"id": [f"p{i:04d}" for i in range(n)],
                         "group": rng.choice(["a", "b"], size=n)})


def test_an_identifier_feature_is_refused_before_the_bootstrap():
    frame = _id_frame()
    pred = np.random.default_rng(1).integers(0, 2, size=600)
    tracemalloc.start()
    started = time.process_time()
    with pytest.raises(InputError) as info:
        compute_group_fairness(pred, y_true=pred, sensitive_features=frame, bootstrap=1000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    message = str(info.value)
    assert message == (
        "sensitive feature 'id' has 600 distinct values in 600 rows (more than half as many "
        "groups as rows): it looks like an identifier, not a group; leave it out of "
        "data.sensitive_features")
    assert peak < 50 * 1024**2 and time.process_time() - started < 10


def test_run_refuses_an_identifier_before_loading_the_model(tmp_path):
    frame = _id_frame()
    frame["text"] = "a candidate"
    data = tmp_path / "ids.csv"
    frame.to_csv(data, index=False)
    spec = {
        "name": "ids", "seed": 0,
        "model": {"base": "builtin:minilm", "task": "sequence-classification",
                  "labels": ["reject", "accept"], "positive_label": "accept"},
        "prompt": {"path": str(DEMO_PROMPT)},
        "data": {"path": str(data), "text_column": "text", "sensitive_features": ["id", "group"]},
        "fairness": {"bootstrap": 1000},
    }
    path = tmp_path / "ids.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    started = time.monotonic()
    code, output = _cli("run", path, "--out", tmp_path / "out")
    assert code == 2, output
    assert "sensitive feature 'id' has 600 distinct values in 600 rows" in output
    assert time.monotonic() - started < 60  # no model work happened (a budget, not a timing)


def test_half_as_many_groups_as_rows_is_still_a_feature():
    frame = pd.DataFrame({"g": [f"g{i // 2}" for i in range(20)]})  # 10 groups in 20 rows
    check_fairness_work(frame, bootstrap=1000, confidence=0.95, has_labels=True)
    frame.loc[0, "g"] = "extra"  # 11 groups
    with pytest.raises(InputError, match="11 distinct values in 20 rows"):
        check_fairness_work(frame, bootstrap=1000, confidence=0.95, has_labels=True)


def test_the_bootstrap_budget_names_what_fits():
    # 300 groups in 600 rows (allowed) with the spec's largest bootstrap.
    frame = pd.DataFrame({"g": [f"g{i % 300}" for i in range(600)],
                          "h": ["x", "y"] * 300})
    with pytest.raises(InputError) as info:
        check_fairness_work(frame, bootstrap=100_000, confidence=0.95, has_labels=True)
    message = str(info.value)
    assert message.startswith("fairness.bootstrap: 100000 resamples over 600 rows")
    assert "GiB budget; lower fairness.bootstrap to " in message
    fits = int(message.split("lower fairness.bootstrap to ")[1].split()[0])
    groups = {"g": 300, "h": 2, "g & h": 300}
    assert bootstrap_bytes(fits, groups, confidence=0.95, has_labels=True) <= (
        BOOTSTRAP_BUDGET_BYTES)
    assert bootstrap_bytes(100_000, groups, confidence=0.95, has_labels=True) > (
        BOOTSTRAP_BUDGET_BYTES)
    check_fairness_work(frame, bootstrap=fits, confidence=0.95, has_labels=True)


def test_bootstrap_bytes_by_hand():
    # 13 arrays per group; pairs only where an interval can come out (bootstrap >= 40 K).
    assert bootstrap_bytes(1000, {"g": 4}, confidence=0.95, has_labels=False) == (
        8 * 1000 * (13 * 4 + 6 * 6))            # 6 pairs, 240 <= 1000: resampled
    assert bootstrap_bytes(1000, {"g": 40}, confidence=0.95, has_labels=False) == (
        8 * 1000 * 13 * 40)                     # 780 pairs need 31,200 resamples: never resampled
    assert bootstrap_bytes(0, {"g": 40}, confidence=0.95, has_labels=True) == 0


def test_skipping_unreportable_gap_intervals_changes_no_figure():
    # 12 groups: 66 pairs need 2,640 resamples for a 95% interval; with 200 there is none,
    # and the result is the one the full computation gives (the warning names the need).
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"g": rng.choice([f"g{i}" for i in range(12)], size=400)})
    pred = rng.integers(0, 2, size=400)
    out = compute_group_fairness(pred, sensitive_features=frame, bootstrap=200, min_group_size=1)
    entry = out["by_feature"]["g"]
    assert entry["disparity_intervals"] == {"demographic_parity_difference": None,
                                            "demographic_parity_ratio": None}
    assert any("at least 2640 are needed" in w for w in out["warnings"])
    assert entry["intervals"]["g0"]["selection_rate"] is not None
