"""A default audit of 1,000 rows with attribution on: wall and CPU time, load, per stage.

Issue 24 asks that such an audit finish in under 5 minutes on the project's 2-core
machine (the former default, ``attribution.max_examples: 200`` without a budget, spent
25,628 gradient evaluations and 753 s on SST-2). The audit: the demo spec (the shipped
clean demo prompt on ``builtin:minilm``) with the *spec defaults* for attribution
(``max_examples: 200``, ``max_gradient_evals_total: 4096``) and fairness (1,000 bootstrap
resamples), counterfactuals on, projection and baselines on, the first 1,000 rows of
``builtin:screening-train``.

The stage times come from the ``promptaudit.progress`` records (what a user sees on
stderr). Because the machine is shared, the script prints the 1-minute load average before
and after and the process CPU time beside the wall time; read the wall time against them.

Usage::

    python benchmarks/bench_default_audit.py [--rows 1000] [--budget 4096] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--budget", default="default",
                        help="attribution.max_gradient_evals_total: a number, 'none', or "
                        "'default' (the spec default)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from promptaudit.demo import demo_prompt_dir, demo_spec
    from promptaudit.pipeline import run_audit
    from promptaudit.progress import PROGRESS_LOGGER
    from promptaudit.spec import parse_spec

    raw = demo_spec(demo_prompt_dir("clean")).to_dict()
    raw["name"] = "bench-default"
    raw["data"]["path"] = "builtin:screening-train"
    raw["data"]["limit"] = args.rows
    raw["attribution"] = {"method": "integrated_gradients"}  # every other key: the default
    if args.budget != "default":
        raw["attribution"]["max_gradient_evals_total"] = (
            None if args.budget == "none" else int(args.budget)
        )
    raw["fairness"] = {k: v for k, v in raw["fairness"].items() if k != "bootstrap"}
    spec = parse_spec(raw, source="bench")

    stages: list[tuple[float, float, str]] = []

    def cpu_now() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    class Record(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stages.append((time.perf_counter(), cpu_now(), record.getMessage()))

    progress_logger = logging.getLogger(PROGRESS_LOGGER)
    progress_logger.addHandler(Record())
    progress_logger.setLevel(logging.INFO)
    progress_logger.propagate = False

    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = run_audit(spec, progress=False, command="bench_default_audit")
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    load_after = os.getloadavg()[0]
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)

    times = [t for t, _, _ in stages] + [started + wall]
    cpus = [c for _, c, _ in stages] + [cpu_now()]
    per_stage = [
        {"stage": message, "wall_s": round(times[i + 1] - t, 1),
         "cpu_s": round(cpus[i + 1] - c, 1)}
        for i, (t, c, message) in enumerate(stages)
    ]
    attribution = result["attribution"] or {}
    out = {
        "rows": result["task"]["n_examples"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(load_after, 2),
        "cpus": os.cpu_count(),
        "attribution_budget": attribution.get("budget"),
        "attribution_n_examples": attribution.get("n_examples"),
        "attribution_n_gradient_evals": attribution.get("n_gradient_evals"),
        "attribution_n_not_converged": attribution.get("n_not_converged"),
        "stages": per_stage,
        "under_5_min": wall < 300,
    }
    print(json.dumps(out, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
