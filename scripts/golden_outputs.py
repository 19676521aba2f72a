"""Write every output the redesign must keep byte-identical into one folder.

A structural change (issue 26: "results unchanged bit for bit") is checked by running
this script on the code before and after and comparing the two folders with
``diff -r``. It writes, under OUT:

- ``sample/``: a fresh sample audit (``scripts/make_sample_result.py``) and its reports;
- ``fixture/``: every report format rendered from ``tests/fixtures/sample_result.json``
  (HTML, Markdown, JUnit, JSON, bias-audit CSV), the model card, a comparison of the
  fixture with itself and with a copy that differs, a trend over two periods, the
  console output of ``gate`` (with and without a policy) and the result schema;
- ``mitigation/``: a small audit with a ``mitigation:`` section (its before-and-after
  reports) -- skipped with ``--fast``;
- ``demo/``: ``promptaudit demo`` -- skipped with ``--fast``.

What legitimately differs between two runs is replaced by fixed text: the creation time,
the integrity hash that covers it, elapsed seconds, and the checkout's absolute path.

Usage::

    python scripts/golden_outputs.py /tmp/before           # on the old code
    python scripts/golden_outputs.py /tmp/after            # on the new code
    diff -r /tmp/before /tmp/after && echo identical
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "sample_result.json"

_VOLATILE = [
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:\+00:00|Z)"), "<TIME>"),
    (re.compile(r'("content_sha256": ?")[0-9a-f]{64}'), r"\1<HASH>"),
    (re.compile(r'(content sha256</th><td class="mono">)[0-9a-f]{64}'), r"\1<HASH>"),
    (re.compile(r'("(?:cpu_)?seconds": ?)[0-9.e+-]+'), r"\1<S>"),
    (re.compile(r"\d+(?:\.\d+)? ?s (?:wall|CPU)"), "<S> s"),
    (re.compile(r"/tmp/promptaudit-[A-Za-z0-9_.\\-]+"), "<TMP>"),
]


def normalise_text(text: str) -> str:
    """Replace what differs between two honest runs (time, hash over it, seconds, root)."""
    text = text.replace(str(ROOT), "<ROOT>")
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def normalise_tree(folder: Path) -> None:
    """Normalise every text file under ``folder`` in place; drop binary PDFs/PNGs."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        path.write_text(normalise_text(text), encoding="utf-8")


def cli(*argv: str, cwd: Path, stdout_to: Path | None = None) -> int:
    """Run ``promptaudit ARGV`` in a subprocess; keep its stdout (and exit code) if asked."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "promptaudit", *argv, "--quiet"]
                          if argv[0] in {"demo", "run"} else
                          [sys.executable, "-m", "promptaudit", *argv],
                          cwd=cwd, env=env, capture_output=True, text=True)
    if stdout_to is not None:
        stdout_to.write_text(f"exit {proc.returncode}\n{proc.stdout}\n--- stderr\n{proc.stderr}",
                             encoding="utf-8")
    return proc.returncode


POLICY = """\
inconclusive: fail
require_signature: false
gates:
  - {metric: demographic_parity_ratio, min: 0.8, use_bound: true}
  - {metric: counterfactual_flip_rate, max: 0.05}
"""


def fixture_outputs(out: Path) -> None:
    """Every report format rendered from the committed sample fixture."""
    sys.path.insert(0, str(ROOT / "src"))
    from promptaudit.report import write_reports
    from promptaudit.result import content_sha256

    out.mkdir(parents=True)
    result = json.loads(FIXTURE.read_text(encoding="utf-8"))
    write_reports(copy.deepcopy(result), out / "reports", name="sample")
    shutil.copy(FIXTURE, out / "before.json")
    changed = copy.deepcopy(result)
    changed["audit"]["name"] = "sample-later"
    changed["audit"]["audit_info"]["date"] = "2027-01-15"
    changed["audit"]["spec"]["audit_info"]["date"] = "2027-01-15"
    changed["integrity"]["content_sha256"] = content_sha256(changed)
    (out / "later.json").write_text(json.dumps(changed, indent=2), encoding="utf-8")
    cli("compare", "before.json", "before.json", "--out", "cmp_same", cwd=out,
        stdout_to=out / "compare_same.txt")
    cli("compare", "before.json", "later.json", "--out", "cmp_later", "--allow-different",
        "--max-regression", "0.01", cwd=out, stdout_to=out / "compare_later.txt")
    cli("gate", "before.json", cwd=out, stdout_to=out / "gate.txt")
    (out / "policy.yml").write_text(POLICY, encoding="utf-8")
    cli("gate", "before.json", "--policy", "policy.yml", cwd=out,
        stdout_to=out / "gate_policy.txt")

    for number, (start, end) in enumerate((("2026-01-01", "2026-06-30"),
                                           ("2026-07-01", "2026-12-31")), start=1):
        period = copy.deepcopy(result if number == 1 else changed)
        period["audit"]["name"] = "sample"
        for info in (period["audit"]["audit_info"], period["audit"]["spec"]["audit_info"]):
            info.update(data_start=start, data_end=end)
        period["integrity"]["content_sha256"] = content_sha256(period)
        (out / f"period{number}.json").write_text(json.dumps(period, indent=2), encoding="utf-8")
    cli("trend", "period1.json", "period2.json", "--out", "trend", cwd=out,
        stdout_to=out / "trend.txt")
    adapter = out / "adapter"
    shutil.copytree(ROOT / "src" / "promptaudit" / "demo_prompt_biased", adapter)
    cli("card", "before.json", "--adapter", "adapter", cwd=out, stdout_to=out / "card.txt")
    for binary in adapter.glob("*.safetensors"):
        binary.unlink()
    shutil.copy(ROOT / "docs" / "result.schema.json", out / "result.schema.json")


def sample_outputs(out: Path) -> None:
    """A fresh sample audit, as ``scripts/make_sample_result.py`` writes it."""
    out.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_result.py"),
                    "--out", str(out / "sample_result.json")], check=True, env=env, cwd=ROOT,
                   capture_output=True)


MITIGATION_SPEC = """\
version: 1
name: tiny-mitigated
seed: 0
model: {base: builtin:minilm, task: sequence-classification, labels: [reject, accept],
        positive_label: accept, max_length: 48}
prompt: {path: PROMPT}
data: {path: builtin:screening, text_column: text, label_column: label,
       sensitive_features: [gender], limit: 120}
counterfactuals: {suite: builtin:identity, features: [gender]}
fairness: {metrics: [selection_rate, accuracy], bootstrap: 200, min_group_size: 10}
gates:
  - {metric: demographic_parity_ratio, min: 0.8}
  - {metric: counterfactual_flip_rate, max: 0.05}
gate_policy: {inconclusive: pass}
mitigation:
  method: clp
  data: {path: builtin:screening-train, text_column: text, label_column: label, limit: 96}
  weights: [10, 30]
  epochs: 1
  max_accuracy_drop: 0.05
"""


def mitigation_outputs(out: Path) -> None:
    """A small audit with a ``mitigation:`` section: its before-and-after reports."""
    out.mkdir(parents=True)
    prompt = ROOT / "src" / "promptaudit" / "demo_prompt_biased"
    (out / "tiny.yaml").write_text(MITIGATION_SPEC.replace("PROMPT", str(prompt)),
                                   encoding="utf-8")
    cli("run", "tiny.yaml", "--out", "reports", cwd=out, stdout_to=out / "run.txt")
    for binary in out.rglob("*.safetensors"):
        binary.unlink()


def demo_outputs(out: Path) -> None:
    """``promptaudit demo`` as a new user runs it."""
    out.mkdir(parents=True)
    cli("demo", "--out", "reports", cwd=out, stdout_to=out / "demo.txt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--fast", action="store_true", help="skip the demo and mitigation")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    fixture_outputs(args.out / "fixture")
    sample_outputs(args.out / "sample")
    if not args.fast:
        mitigation_outputs(args.out / "mitigation")
        demo_outputs(args.out / "demo")
    normalise_tree(args.out)
    print(f"wrote {sum(1 for p in args.out.rglob('*') if p.is_file())} files under {args.out}")


if __name__ == "__main__":
    main()
