"""Peak memory of prediction at two row counts: it must not grow beyond the stored predictions.

:meth:`promptaudit.prompted.PromptedModel.predict_proba` streams the texts through the
model in batches (tokenized per batch, sorted by length); what it keeps for the whole
evaluation set is the ``(n_rows, n_labels)`` float64 output plus ``(n_rows,)`` int64
lengths and order. So from a small to a large evaluation set, the memory used while
predicting may grow by about ``rows x (8 x n_labels + 16)`` bytes and no more.

Each row count runs in a fresh child process (peak RSS is per process) that

1. loads the bundled MiniLM (``builtin:minilm``) with the shipped demo prompt
   (``promptaudit/demo_prompt``, 10 virtual tokens, 2 labels),
2. builds ``rows`` short texts by repeating ``builtin:screening`` (default) or the SST-2
   train sentences (``--source sst2``, ``../shared/data/sst2/train.tsv``),
3. samples RSS every 5 ms (psutil) and traces Python-side allocations (tracemalloc)
   while ``predict_proba`` runs.

It reports, per row count: RSS before predicting (model and texts loaded), peak RSS
while predicting, their difference (the prediction's own memory), the tracemalloc peak,
``ru_maxrss`` of the process, the wall time and rows per second. It then checks

    growth = prediction_memory(large) - prediction_memory(small)
           <= (large - small) x (8 x n_labels + 16) bytes + tolerance (default 16 MiB)

for both RSS and tracemalloc and prints PASS or FAIL (exit status 1 on FAIL).
Usage::

    python benchmarks/bench_memory.py                          # 10k and 100k rows
    python benchmarks/bench_memory.py --rows 2000 20000        # quicker, same 10x ratio
    python benchmarks/bench_memory.py --device cuda --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

SST2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sst2" / "train.tsv"
RESULTS = Path(__file__).resolve().parent / "results" / "bench_memory.json"
MIB = 1024 * 1024


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _base(source: str) -> list[str]:
    if source == "sst2":
        import pandas as pd

        base = pd.read_csv(SST2, sep="\t", quoting=3, keep_default_na=False)["sentence"]
        return base.astype(str).tolist()
    from promptaudit.corpora import load_builtin_table

    return load_builtin_table("screening", seed=0)["text"].astype(str).tolist()


def _texts(source: str, rows: int) -> list[str]:
    base = _base(source)
    # distinct string objects (as a file read gives), not `rows` references to a few
    return [base[i % len(base)].encode().decode() for i in range(rows)]


def _one_text_per_length(prompted, source: str) -> list[str]:
    """One text of each token length (up to ``max_length``) that the source holds."""
    by_length: dict[int, str] = {}
    base = _base(source)
    for start in range(0, len(base), 1024):
        chunk = base[start:start + 1024]
        for text, ids in zip(chunk, prompted.tokenizer(chunk)["input_ids"], strict=True):
            by_length.setdefault(min(len(ids), prompted.max_length), text)
    return [by_length[length] for length in sorted(by_length)]


def child(args: argparse.Namespace) -> dict:
    """Measure one row count in this process; return the numbers."""
    import torch

    from promptaudit.demo import demo_prompt_dir
    from promptaudit.models import quiet_transformers
    from promptaudit.prompted import load_prompted_model

    quiet_transformers()
    torch.manual_seed(0)
    prompted, _, _ = load_prompted_model(
        "builtin:minilm", str(demo_prompt_dir("clean")), task="sequence-classification",
        labels=["reject", "accept"], device=args.device, max_length=args.max_length,
        batch_size=args.batch_size)
    # Warm-up: one full batch of every padded length the source can produce, so that both row
    # counts start with the same batch shapes seen (the allocator and oneDNN keep per-shape
    # buffers, bounded by the number of shapes); what grows after that grows with the rows.
    for text in _one_text_per_length(prompted, args.source):
        prompted.predict_proba([text] * args.batch_size)
    texts = _texts(args.source, args.child)
    rss_before = _rss()

    peak = [rss_before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    sampler.start()
    started = time.perf_counter()
    probs = prompted.predict_proba(texts)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak[0] = max(peak[0], _rss())
    return {
        "rows": args.child,
        "n_labels": int(probs.shape[1]),
        "output_bytes": int(probs.nbytes),
        "rss_before_mib": rss_before / MIB,
        "rss_peak_mib": peak[0] / MIB,
        "prediction_rss_mib": (peak[0] - rss_before) / MIB,
        "tracemalloc_peak_mib": traced_peak / MIB,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": seconds,
        "rows_per_second": args.child / seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[10_000, 100_000],
                        metavar=("SMALL", "LARGE"))
    parser.add_argument("--source", choices=["screening", "sst2"], default="screening")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tolerance-mib", type=float, default=16.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0

    small, large = sorted(args.rows)
    measured = []
    for rows in (small, large):
        command = [sys.executable, __file__, "--child", str(rows), "--source", args.source,
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--device", args.device]
        done = subprocess.run(command, check=True, capture_output=True, text=True,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        measured.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = measured[-1]
        print(f"{rows:>8} rows: RSS {row['rss_before_mib']:7.1f} -> peak {row['rss_peak_mib']:7.1f} "
              f"MiB (prediction +{row['prediction_rss_mib']:.1f} MiB), tracemalloc peak "
              f"{row['tracemalloc_peak_mib']:.2f} MiB, ru_maxrss {row['ru_maxrss_mib']:.1f} MiB, "
              f"{row['seconds']:.1f} s ({row['rows_per_second']:.0f} rows/s)", flush=True)

    n_labels = measured[1]["n_labels"]
    per_row = 8 * n_labels + 16  # float64 probabilities + int64 length + int64 order
    allowed = (large - small) * per_row / MIB + args.tolerance_mib
    growth_rss = measured[1]["prediction_rss_mib"] - measured[0]["prediction_rss_mib"]
    growth_traced = measured[1]["tracemalloc_peak_mib"] - measured[0]["tracemalloc_peak_mib"]
    stored = (large - small) * 8 * n_labels / MIB
    passed = growth_rss <= allowed and growth_traced <= allowed
    print(f"growth {small} -> {large} rows: RSS {growth_rss:+.2f} MiB, tracemalloc "
          f"{growth_traced:+.2f} MiB; stored predictions grow by {stored:.2f} MiB; allowed "
          f"{allowed:.2f} MiB ({per_row} B/row + {args.tolerance_mib:g} MiB tolerance): "
          f"{'PASS' if passed else 'FAIL'}")
    report = {
        "benchmark": "bench_memory", "source": args.source, "device": args.device,
        "batch_size": args.batch_size, "max_length": args.max_length,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "runs": measured, "growth_rss_mib": growth_rss, "growth_tracemalloc_mib": growth_traced,
        "stored_prediction_growth_mib": stored, "allowed_growth_mib": allowed, "passed": passed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
