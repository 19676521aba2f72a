"""Benchmark: one process vs two for an audit's prediction + attribution stage (CPU).

The stage that :mod:`promptaudit.distributed` divides, timed on the bundled MiniLM
(``builtin:minilm``) with the shipped demo prompt (``src/promptaudit/demo_prompt/``,
a PEFT prompt-tuning adapter) on ``builtin:screening``:

* predictions of the first ``--n`` texts (``predict_proba``, batch ``--batch-size``);
* integrated gradients on the first ``--attr-n`` of them (``--n-steps``), in float32.

Three runs, each a fresh interpreter; model loading and a warm-up are not timed:

* ``1 process``: a plain ``python`` run (the single-process path, no Accelerate),
  ``OMP_NUM_THREADS=1``;
* ``2 processes``: ``accelerate launch --multi_gpu --num_processes 2`` on CPUs
  (gloo), ``OMP_NUM_THREADS=1`` each (Accelerate's ``--multi_gpu`` is its torchrun
  path; with no GPU, or ``device: cpu``, promptaudit uses gloo on CPUs);
* ``1 process, 2 threads``: the same cores used by threads instead (for reference).

The ratio is wall time of 1 process / wall time of 2 processes. The two-process
results are checked to equal the one-process ones (predictions and attributions).
On a machine shared with other jobs the absolute times vary from run to run;
``--repeats 2`` keeps the fastest of two runs of each configuration.

Run: ``python benchmarks/bench_scaling.py`` (about three minutes on two idle cores).
Numbers go to stdout and to ``benchmarks/results/bench_scaling.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = ROOT / "src" / "promptaudit" / "demo_prompt"


def _digest(values) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(np.asarray(values, dtype=np.float64))
                          .tobytes()).hexdigest()[:16]


def child(args: argparse.Namespace) -> None:
    """One measurement; under a launcher, the main process prints the JSON line."""
    import torch

    from promptaudit.attribution import IntegratedGradients, PromptAttributor
    from promptaudit.data import load_table
    from promptaudit.distributed import launch_processes
    from promptaudit.models import quiet_transformers
    from promptaudit.prompted_model import load_prompted_model

    quiet_transformers()
    processes = launch_processes(device="cpu")  # every process runs this function (SPMD)
    options = dict(task="sequence-classification", labels=["reject", "accept"], device="cpu",
                   max_length=64, batch_size=args.batch_size)
    started = time.perf_counter()
    prompted, _, _ = load_prompted_model("builtin:minilm", str(PROMPT), **options)
    def run_attribution(prompted, texts, method):
        return PromptAttributor(prompted, method).attribute(texts)

    if processes is not None:
        prompted, run_attribution = processes.shard(prompted), processes.attribute
    load_seconds = time.perf_counter() - started
    texts = load_table("builtin:screening")["text"].astype(str).tolist()
    texts = (texts * (args.n // len(texts) + 1))[: args.n]
    # warm-up: lazy imports, allocator, every process's first forward and backward
    prompted.predict_proba(texts[: 2 * args.batch_size])
    run_attribution(prompted, texts[:16], IntegratedGradients(n_steps=2))

    started, cpu_started = time.perf_counter(), time.process_time()
    probs = prompted.predict_proba(texts)
    predict_seconds = time.perf_counter() - started
    attribution = run_attribution(prompted, texts[: args.attr_n],
                                  IntegratedGradients(n_steps=args.n_steps, baseline="pad"))
    total = time.perf_counter() - started
    cpu_main = time.process_time() - cpu_started
    if processes is not None:
        processes.close()
        if not processes.is_main:
            return
    flat = [v for e in attribution["examples"] for v in e["prompt_attributions"]]
    print("RESULT " + json.dumps({
        "processes": 1 if processes is None else processes.num_processes,
        "threads": torch.get_num_threads(),
        "load_seconds": round(load_seconds, 2),
        "predict_seconds": round(predict_seconds, 2),
        "attribute_seconds": round(total - predict_seconds, 2),
        "stage_seconds": round(total, 2),
        "main_process_cpu_seconds": round(cpu_main, 2),
        "predictions_sha": _digest(probs),
        "attributions_sha": _digest(flat),
        "max_convergence_delta": attribution["max_convergence_delta"],
    }), flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _measure(name: str, processes: int, threads: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    me = [str(Path(__file__).resolve()), "--child", "--n", str(args.n), "--attr-n",
          str(args.attr_n), "--n-steps", str(args.n_steps), "--batch-size", str(args.batch_size)]
    if processes == 1:
        command = [sys.executable, *me]
    else:
        launcher = shutil.which("accelerate")
        if launcher is None:
            raise SystemExit("the accelerate command is not installed")
        command = [launcher, "launch", "--quiet", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no", "--main_process_port", str(_free_port()), *me]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"{name}: exit code {done.returncode}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result.update({"name": name, "command_seconds": round(wall, 2),
                   "load_average_after": [round(x, 2) for x in os.getloadavg()]})
    print(f"  {name:<24s} stage {result['stage_seconds']:7.2f} s  (predict "
          f"{result['predict_seconds']:.2f} s, attribute {result['attribute_seconds']:.2f} s)",
          flush=True)
    return result


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="texts to predict")
    parser.add_argument("--attr-n", type=int, default=48, help="texts to attribute")
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="keep the fastest of N runs")
    parser.add_argument("--no-threads-baseline", action="store_true",
                        help="skip the 1-process, 2-thread reference run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "bench_scaling.json")
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return None

    configs = [("1 process", 1, 1), ("2 processes", 2, 1)]
    if not args.no_threads_baseline:
        configs.append(("1 process, 2 threads", 1, 2))
    print(f"prediction of {args.n} texts + integrated gradients ({args.n_steps} steps) on "
          f"{args.attr_n}; builtin:minilm + demo prompt, CPU; load average before: "
          f"{[round(x, 2) for x in os.getloadavg()]}", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    for _ in range(args.repeats):
        for name, processes, threads in configs:
            runs[name].append(_measure(name, processes, threads, args))
    best = {name: min(results, key=lambda r: r["stage_seconds"]) for name, results in runs.items()}
    one, two = best["1 process"], best["2 processes"]
    report = {
        "benchmark": "audit prediction + attribution stage, 1 vs 2 processes (CPU, gloo)",
        "model": "builtin:minilm", "prompt": "src/promptaudit/demo_prompt",
        "data": "builtin:screening", "n_predict": args.n, "n_attribute": args.attr_n,
        "n_steps": args.n_steps, "batch_size": args.batch_size, "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "best": best, "all": runs,
        "ratio_1_over_2_processes": round(one["stage_seconds"] / two["stage_seconds"], 2),
        "ratio_predict": round(one["predict_seconds"] / two["predict_seconds"], 2),
        "ratio_attribute": round(one["attribute_seconds"] / two["attribute_seconds"], 2),
        "same_predictions": one["predictions_sha"] == two["predictions_sha"],
        "same_attributions": one["attributions_sha"] == two["attributions_sha"],
        "note": "shared machine: other jobs ran at the same time; see load_average_after",
    }
    if "1 process, 2 threads" in best:
        report["ratio_1x2threads_over_2_processes"] = round(
            best["1 process, 2 threads"]["stage_seconds"] / two["stage_seconds"], 2)
    print(f"1 process: {one['stage_seconds']:.2f} s; 2 processes: {two['stage_seconds']:.2f} s; "
          f"ratio {report['ratio_1_over_2_processes']:.2f}x (predict "
          f"{report['ratio_predict']:.2f}x, attribute {report['ratio_attribute']:.2f}x); "
          f"results identical: "
          f"{report['same_predictions'] and report['same_attributions']}")
    if "ratio_1x2threads_over_2_processes" in report:
        print(f"1 process with 2 threads: {best['1 process, 2 threads']['stage_seconds']:.2f} s "
              f"(ratio to 2 processes {report['ratio_1x2threads_over_2_processes']:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
