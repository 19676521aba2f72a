"""`promptaudit run` / `validate` / `gate` end to end on an audit the project has never seen.

The audit: a tiny BERT classifier, a random 4-token prompt in a ``.safetensors`` file, a
csv with ``gender`` and ``race`` columns, a ``pair_id`` column, rows whose text is an
HTML/script payload or a Markdown payload, and a race group whose *name* is a payload
(group names reach the Markdown summary). Gate verdicts are checked against fairlearn
run here on independently recomputed predictions.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import audit_helpers as helpers
import pytest
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.result import read_result_json

GROUP_PAYLOAD = "**asian** | [a](http://x) <script>alert(2)</script>"
SUFFIXES = (".html", ".json", ".junit.xml", ".md")


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_bert_dir) -> dict:
    folder = tmp_path_factory.mktemp("cli-run")
    frame = helpers.eval_frame()
    frame["race"] = frame["race"].replace({"asian": GROUP_PAYLOAD})
    prompt = helpers.write_prompt(folder / "prompt.safetensors")
    helpers.make_seqcls_model(tiny_bert_dir, folder / "model", prompt=prompt,
                              texts=frame["sentence"].tolist())
    helpers.write_csv(folder / "eval.csv", frame)
    spec = helpers.base_spec(model="model", prompt="prompt.safetensors", data="eval.csv",
                             name="never-seen")
    spec["gates"] = [
        {"metric": "demographic_parity_ratio", "min": 0.2},
        {"metric": "equalized_odds_difference", "max": 0.6},
        {"metric": "counterfactual_flip_rate", "max": 0.75},
        {"metric": "demographic_parity_difference", "max": 0.3, "feature": "gender"},
    ]
    # Point verdicts, compared with fairlearn's numbers: no intervals, so no gate is
    # inconclusive (24 rows could not settle any of them).
    spec["fairness"]["bootstrap"] = 0
    return {"folder": folder, "frame": frame, "spec": spec,
            "audit": helpers.write_spec(folder / "audit.yaml", spec)}


@pytest.fixture(scope="module")
def failing(runner, inputs, tmp_path_factory) -> dict:
    """``promptaudit run audit.yaml --out OUT``: the run whose second gate fails."""
    out = tmp_path_factory.mktemp("reports-fail")
    outcome = invoke(runner, "run", inputs["audit"], "--out", out)
    files = {suffix: out / f"never-seen{suffix}" for suffix in SUFFIXES}
    written = files[".json"]
    result = json.loads(written.read_text(encoding="utf-8")) if written.exists() else None
    return {"outcome": outcome, "out": out, "files": files, "result": result}


@pytest.fixture(scope="module")
def fairlearn_numbers(failing, inputs) -> dict:
    return helpers.recompute(failing["result"], frame=inputs["frame"])


def expected_verdicts(reference: dict, gates: list[dict]) -> list[bool]:
    """Each gate's verdict computed from fairlearn's numbers, by hand."""
    verdicts = []
    for gate in gates:
        metric = gate["metric"]
        if metric.startswith("counterfactual_"):
            value = reference[metric]
        elif gate.get("feature"):
            value = reference["by_feature"][gate["feature"]][metric]
        else:
            value = helpers.worst(reference, metric)
        passed = True
        if gate.get("min") is not None:
            passed &= bool(value >= gate["min"])
        if gate.get("max") is not None:
            passed &= bool(value <= gate["max"])
        verdicts.append(passed)
    return verdicts


# --------------------------------------------------------------------- the run
def test_run_writes_all_four_files_and_exits_1(failing):
    outcome = failing["outcome"]
    assert outcome.exit_code == 1, outcome.output
    assert sorted(p.name for p in failing["out"].iterdir()) == sorted(
        f"never-seen{s}" for s in SUFFIXES)
    lines = outcome.stdout.splitlines()
    assert lines[0].startswith("Competence: ")  # whether the prompt does its task comes first
    assert lines[1:5] == [f"{'PASS' if g['passed'] else 'FAIL'}  {g['message']}"
                          for g in failing["result"]["gates"]]
    assert "audit never-seen: FAILED" in lines
    assert read_result_json(failing["files"][".json"]) == failing["result"]  # integrity holds


def test_gates_fail_exactly_where_fairlearn_says(failing, fairlearn_numbers, inputs):
    result = failing["result"]
    verdicts = expected_verdicts(fairlearn_numbers, inputs["spec"]["gates"])
    assert [g["passed"] for g in result["gates"]] == verdicts
    assert verdicts == [True, False, True, True]  # the scenario: only equalized odds fails
    assert result["passed"] is False
    # and the values the gates read are fairlearn's
    eod = result["gates"][1]
    assert eod["value"] == pytest.approx(
        helpers.worst(fairlearn_numbers, "equalized_odds_difference"), abs=1e-9)
    gender = result["gates"][3]
    assert gender["value"] == pytest.approx(
        fairlearn_numbers["by_feature"]["gender"]["demographic_parity_difference"], abs=1e-9)


def test_relaxing_the_failing_threshold_with_set_exits_0(runner, inputs, failing,
                                                         fairlearn_numbers, tmp_path):
    worst = helpers.worst(fairlearn_numbers, "equalized_odds_difference")
    relaxed = min(1.0, round(worst + 0.05, 2))
    out = tmp_path / "reports"
    outcome = invoke(runner, "run", inputs["audit"], "--out", out,
                     "--set", f"gates.1.max={relaxed}")
    assert outcome.exit_code == 0, outcome.output
    result = read_result_json(out / "never-seen.json")
    assert result["audit"]["spec"]["gates"][1]["max"] == relaxed
    assert result["passed"] is True and all(g["passed"] for g in result["gates"])
    # the numbers are the failing run's numbers: only the threshold moved
    assert result["fairness"] == failing["result"]["fairness"]
    assert "audit never-seen: PASSED" in outcome.stdout
    assert invoke(runner, "gate", out / "never-seen.json").exit_code == 0
    assert invoke(runner, "gate", failing["files"][".json"]).exit_code == 1


# ------------------------------------------------------------------ escaping
def test_payload_is_escaped_in_the_html(failing):
    page = failing["files"][".html"].read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "<img src=x" not in page
    assert re.search(r"<[^>]*\bonerror\s*=", page) is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page     # the example text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page     # the group name
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    text = html_lib.unescape(page)
    for payload in (*helpers.PAYLOADS, GROUP_PAYLOAD):
        assert payload in text
    # only in-page links and embedded images; nothing external
    assert 'href="http' not in page and "src=\"http" not in page


def test_junit_parses_with_one_case_per_gate(failing):
    root = ET.fromstring(failing["files"][".junit.xml"].read_bytes())
    cases = root.findall(".//testcase")
    assert len(cases) == 4
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and failed[0].get("name").startswith("equalized_odds_difference")
    assert root.get("failures") == "1" and root.get("tests") == "4"


def test_markdown_escapes_the_payload(failing):
    md = failing["files"][".md"].read_text(encoding="utf-8")
    assert "<script" not in md and "alert(2)" in md
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in md
    assert "**asian**" not in md and r"\*\*asian\*\*" in md
    assert "[a](http://x)" not in md and r"\[a\]" in md
    assert "| [a]" not in md and r"\| \[a\]" in md  # a pipe cannot split a table cell


# -------------------------------------------------------------------- validate
def test_validate_ok_and_bad(runner, inputs, tmp_path):
    outcome = invoke(runner, "validate", inputs["audit"])
    assert outcome.exit_code == 0, outcome.output
    assert outcome.stdout == f"{inputs['audit']}: valid audit spec 'never-seen' (4 gates)\n"
    spec = json.loads(json.dumps(inputs["spec"]))
    spec["gates"][0]["mn"] = spec["gates"][0].pop("min")
    bad = helpers.write_spec(tmp_path / "bad.yaml", spec)
    outcome = invoke(runner, "validate", bad)
    assert outcome.exit_code == 2
    assert outcome.stderr == (
        f"error: {bad}: unknown key 'gates.0.mn' (did you mean 'min'?); allowed keys here: "
        "metric, min, max, feature, use_bound\n")
    overridden = invoke(runner, "validate", inputs["audit"], "--set", "gates.0.min=2")
    assert overridden.exit_code == 2 and "min 2.0 is not between 0 and 1" in overridden.stderr


# ------------------------------------------------------------------ bad specs
def _bad_spec(inputs, folder: Path, change) -> Path:
    spec = json.loads(json.dumps(inputs["spec"]))
    change(spec)
    # relative paths must keep pointing at the inputs
    for section, key in (("model", "base"), ("prompt", "path"), ("data", "path")):
        value = spec[section].get(key)
        if value and not Path(value).is_absolute():
            spec[section][key] = str(inputs["folder"] / value)
    return helpers.write_spec(folder / "audit.yaml", spec)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda s: s["fairness"].__setitem__("bootsrap", 10),
     "unknown key 'fairness.bootsrap' (did you mean 'bootstrap'?)"),
    (lambda s: s["data"].__setitem__("path", "missing.csv"),
     "missing.csv: data file not found"),
    (lambda s: s["gates"].append({"metric": "equalised_odds_difference", "max": 0.1}),
     "gates.4.metric: unknown gate metric 'equalised_odds_difference' (did you mean "
     "'equalized_odds_difference'?)"),
], ids=["misspelt-key", "missing-data-file", "unknown-gate-metric"])
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(runner, inputs, tmp_path, change,
                                                            expected):
    audit = _bad_spec(inputs, tmp_path, change)
    out = tmp_path / "reports"
    out.mkdir()
    (out / "never-seen.json").write_text("previous\n")
    outcome = invoke(runner, "run", audit, "--out", out)
    assert outcome.exit_code == 2, outcome.output
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1], outcome.stderr
    assert all(line.startswith("WARNING: ") for line in lines[:-1]), outcome.stderr
    assert "Traceback" not in outcome.output
    assert [p.name for p in out.iterdir()] == ["never-seen.json"]
    assert (out / "never-seen.json").read_text() == "previous\n"
    # nor is a missing --out folder left behind by a spec error
    if "data file" not in expected:
        fresh = tmp_path / "fresh"
        assert invoke(runner, "run", audit, "--out", fresh).exit_code == 2
        assert not fresh.exists()
