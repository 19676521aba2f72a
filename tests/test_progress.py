"""Runs say what they are doing: stage lines on stderr (--quiet silences them), time
estimates for long stages, and attribution under a gradient-evaluation budget that says
what it left out."""

from __future__ import annotations

import json
import logging

import audit_helpers as helpers
import numpy as np
import pytest
from typer.testing import CliRunner

from promptaudit.attribution import IntegratedGradients, PromptAttributor
from promptaudit.cli import app
from promptaudit.progress import PROGRESS_LOGGER, Timer, format_duration, stage
from promptaudit.spec import DEFAULT_GRADIENT_EVAL_BUDGET, AttributionSpec


@pytest.fixture(scope="module")
def audit(tmp_path_factory, tiny_bert_dir):
    folder = tmp_path_factory.mktemp("progress")
    frame = helpers.eval_frame()
    prompt = helpers.write_prompt(folder / "prompt.safetensors")
    helpers.make_seqcls_model(tiny_bert_dir, folder / "model", prompt=prompt,
                              texts=frame["sentence"].tolist())
    helpers.write_csv(folder / "eval.csv", frame)
    spec = helpers.base_spec(model="model", prompt="prompt.safetensors", data="eval.csv",
                             name="progress")
    spec["fairness"]["bootstrap"] = 0
    spec["attribution"] = {"n_steps": 4, "max_examples": 20, "max_gradient_evals_total": 10}
    return helpers.write_spec(folder / "audit.yaml", spec)


def _stderr(outcome) -> str:
    try:
        return outcome.stderr
    except ValueError:  # an old click that mixes the streams
        return outcome.output


def test_run_prints_stage_progress_to_stderr_and_quiet_silences_it(audit, tmp_path):
    runner = CliRunner()
    outcome = runner.invoke(app, ["run", str(audit), "--out", str(tmp_path / "a")])
    assert outcome.exit_code in (0, 1), outcome.output
    err = _stderr(outcome)
    for name in ("data:", "model:", "predictions: predicting", "fairness:", "counterfactuals:",
                 "attribution: integrated_gradients on up to 20 examples, budget 10 gradient",
                 "baselines:", "gates:"):
        assert name in err, (name, err)
    lines = [line for line in err.splitlines() if line.startswith("promptaudit [")]
    assert len(lines) >= 8  # one line per stage, no terminal needed
    assert "promptaudit [" not in outcome.stdout
    quiet = runner.invoke(app, ["run", str(audit), "--out", str(tmp_path / "b"), "--quiet"])
    assert quiet.exit_code == outcome.exit_code
    assert "promptaudit [" not in _stderr(quiet)
    result = json.loads((tmp_path / "a" / "progress.json").read_text())
    budget = result["attribution"]["budget"]
    assert budget["max_gradient_evals_total"] == 10
    assert budget["n_attributed"] + budget["n_left_out"] == budget["n_requested"] == 20
    assert result["attribution"]["n_examples"] == budget["n_attributed"]
    assert budget["n_gradient_evals"] == 4 * budget["n_attributed"]  # 4 fixed steps each
    report = (tmp_path / "a" / "progress.md").read_text()
    assert "Budget: 10 gradient evaluations" in report
    # A budget that left examples out says how many, in both reports.
    from promptaudit.report import write_reports

    budget.update(n_attributed=8, n_left_out=12, n_gradient_evals=32)
    paths = write_reports(result, tmp_path / "c", name="progress")
    for kind in ("markdown", "html"):
        text = open(paths[kind], encoding="utf-8").read()
        assert "8 of 20 examples attributed, the other 12 left out" in text, kind


def test_the_demo_run_prints_stage_progress(tmp_path, monkeypatch):
    """The demo's default run (redirected: no terminal) says what it does on stderr."""
    import promptaudit.demo as demo

    seen = []

    def fake_run_demo(out, *, retrain=False, progress=True):
        stage("predictions", "predicting 3 examples")
        seen.append(progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    outcome = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert "predictions: predicting 3 examples" in _stderr(outcome)
    assert seen == [False]  # no bars without a terminal, the stage lines instead


def test_stage_lines_carry_estimates():
    assert format_duration(30) == "about 30 s" and format_duration(600) == "about 10 min"
    timer = Timer()
    assert timer.estimate(10) is None
    timer.per_item = 0.5
    assert timer.estimate(10, factor=4) == 20
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(PROGRESS_LOGGER)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        stage("attribution", "up to 200 examples", estimate_s=150)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert records[0].getMessage() == "attribution: up to 200 examples (about 2 min)"
    assert records[0].estimate_s == 150


def test_default_attribution_is_a_budget():
    assert AttributionSpec().max_gradient_evals_total == DEFAULT_GRADIENT_EVAL_BUDGET
    assert AttributionSpec(max_gradient_evals_total=None).max_gradient_evals_total is None


@pytest.fixture(scope="module")
def tiny_prompted(tiny_bert_dir, tiny_bert_seqcls_adapter):
    from promptaudit.prompted_model import load_prompted_model

    prompted, _, _ = load_prompted_model(str(tiny_bert_dir), str(tiny_bert_seqcls_adapter),
                                         max_length=32)
    return prompted


def test_budgeted_attribution_is_the_first_examples_of_an_unbudgeted_one(tiny_prompted):
    texts = helpers.eval_frame()["sentence"].tolist()[:20]
    fixed = IntegratedGradients(n_steps=4)
    full = PromptAttributor(tiny_prompted, fixed, batch_size=2).attribute(texts[:8])
    budget = IntegratedGradients(n_steps=4, max_gradient_evals_total=30)
    cut = PromptAttributor(tiny_prompted, budget, batch_size=2).attribute(texts)
    # batches of 2 texts x 4 steps: after 4 batches 32 >= 30 evaluations are spent
    assert cut["budget"] == {"max_gradient_evals_total": 30, "n_gradient_evals": 32,
                             "n_requested": 20, "n_attributed": 8, "n_left_out": 12}
    assert cut["n_examples"] == 8
    assert [e["text"] for e in cut["examples"]] == texts[:8]
    np.testing.assert_allclose([e["prompt_attributions"] for e in cut["examples"]],
                               [e["prompt_attributions"] for e in full["examples"]], atol=1e-6)
    roomy = PromptAttributor(tiny_prompted,
                             IntegratedGradients(n_steps=4, max_gradient_evals_total=10_000),
                             batch_size=2).attribute(texts)
    assert roomy["budget"]["n_left_out"] == 0 and roomy["n_examples"] == 20
