"""Cost of the explanation stages (issue 23) on the demo audit: with and without, same process.

Usage::

    python benchmarks/bench_explain.py [--repeat 1]

Runs the demo audit (``promptaudit demo``'s spec, 600 rows) alternately with
``projection.position_importance`` and ``projection.departures`` off and on (the
like-for-like group bootstrap runs in both: it is a few milliseconds) and prints
the CPU seconds (user + system of this process) and wall seconds of each run, then
the ratios on / off, after an untimed warm-up audit of 40 rows. The machine's load
is printed before each run: on a shared machine compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _spec(on: bool, limit: int | None = None):
    from promptaudit.demo import demo_prompt_dir, demo_spec
    from promptaudit.spec import parse_spec

    raw = demo_spec(demo_prompt_dir("clean")).to_dict()
    raw["projection"].update({"position_importance": on, "departures": on})
    if limit is not None:
        raw["data"]["limit"] = limit
    return parse_spec(raw, source="demo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    from promptaudit.pipeline import run_audit

    run_audit(_spec(False, limit=40))  # warm-up (imports, first kernels), not timed
    totals = {False: [0.0, 0.0], True: [0.0, 0.0]}
    for _ in range(args.repeat):
        for on in (False, True):
            print("load:", os.getloadavg(), flush=True)
            cpu, wall = _cpu(), time.perf_counter()
            run_audit(_spec(on))
            cpu, wall = _cpu() - cpu, time.perf_counter() - wall
            totals[on][0] += cpu
            totals[on][1] += wall
            print(f"{'on ' if on else 'off'}: cpu {cpu:.1f} s, wall {wall:.1f} s", flush=True)
    print(f"ratio on/off: cpu {totals[True][0] / totals[False][0]:.2f}, "
          f"wall {totals[True][1] / totals[False][1]:.2f}")


if __name__ == "__main__":
    main()
