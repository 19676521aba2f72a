"""Peak memory of prediction at two row counts: it must not grow beyond the stored predictions.

:meth:`promptaudit.prompted_model.PromptedModel.predict_proba` streams the texts through the
model in batches (tokenized per batch, sorted by length); what it keeps for the whole
evaluation set is the ``(n_rows, n_labels)`` float64 output, ``(n_rows,)`` int64
lengths and order, and its list of the texts as ``str`` (one 8-byte reference a row; the
strings themselves are the caller's). So from a small to a large evaluation set, the
memory used while predicting may grow by about ``rows x (8 x n_labels + 24)`` bytes and
no more.

Each row count runs in a fresh child process (peak RSS is per process) that

1. loads the model: the bundled MiniLM (``builtin:minilm``, the default) with the shipped
   demo prompt (``promptaudit/demo_prompt``, 10 virtual tokens, 2 labels), or with
   ``--model tiny`` a 2-layer, 32-wide BERT built here from ``BertConfig`` (seed 0, random
   weights, its classifier head saved with it) that uses MiniLM's own tokenizer and
   vocabulary, with a PEFT ``SEQ_CLS`` prompt-tuning adapter made here by plain PEFT
   (10 virtual tokens, 2 labels). Texts are then tokenized, batched, padded and stored
   exactly as with MiniLM; only the forward pass is ~100x cheaper, so 100k rows fit in a
   few CPU minutes. Its predictions are meaningless (random weights): the tiny model is
   for measuring promptaudit's per-row memory, which does not depend on the model's size,
   and for nothing else,
2. builds ``rows`` short texts by repeating ``builtin:screening`` (default: 600 texts, so
   every row count above 600 sees the same batch shapes) or the SST-2 train sentences
   (``--source sst2``, ``../shared/data/sst2/train.tsv``; small row counts then see fewer
   distinct lengths than large ones),
3. predicts them twice while a thread samples RSS every 5 ms (psutil), tracing
   Python-side allocations (tracemalloc) during the second pass.

Per row count it reports the RSS with the model loaded and with the texts built, each
pass's RSS before and peak, the prediction peak (highest RSS of either pass minus the RSS
with the texts built), the tracemalloc peak, ``ru_maxrss`` and rows per second. Then:

    RSS:         peak(large) - peak(small)   <= (large - small) x (8 x n_labels + 24) B
                                                + --tolerance-mib (default 32 MiB)
    tracemalloc: traced(large) - traced(small) <= (large - small) x (8 x n_labels + 24) B
                                                + 1 MiB

(float64 probabilities, int64 length and order, one list reference per row). The RSS
tolerance covers glibc's malloc arenas, whose high-water mark moves by ~20 MiB between
identical passes; the tracemalloc check is exact and catches any per-row Python object
(a whole-dataset tokenization costs ~1 KiB a row). It also prints the growth per added
row in bytes and its ratio to the stored predictions' ``8 x n_labels`` bytes, then PASS or
FAIL (exit status 1 on FAIL), and writes ``benchmarks/results/bench_memory.json``.
Usage::

    python benchmarks/bench_memory.py --model tiny             # 10k and 100k rows, ~5 CPU min
    python benchmarks/bench_memory.py --rows 1000 10000        # MiniLM, ~5 CPU min
    python benchmarks/bench_memory.py                          # MiniLM, 10k and 100k (~40 min)
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
import tempfile
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


def build_tiny_model(root: Path) -> tuple[Path, Path]:
    """Save a tiny BERT classifier and a plain-PEFT prompt adapter for it under ``root``.

    The BERT (2 layers, hidden 32, 2 heads, seed 0, random weights) uses MiniLM's
    tokenizer and vocabulary, so texts become the same token ids and batch shapes as
    with ``builtin:minilm``. It is saved as ``BertForSequenceClassification`` (classifier
    head included); the adapter is a ``SEQ_CLS`` prompt-tuning adapter made with
    ``peft.get_peft_model`` + ``save_pretrained`` (10 virtual tokens).

    Returns
    -------
    (Path, Path)
        The model directory and the adapter directory.
    """
    import torch
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from promptaudit.models import builtin_minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(builtin_minilm_dir())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512, num_labels=2,
                        pad_token_id=tokenizer.pad_token_id)
    model_dir, adapter_dir = root / "tiny-bert", root / "tiny-prompt"
    BertForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir)  # records its path
    peft_config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=10,
                                     base_model_name_or_path=str(model_dir))
    get_peft_model(model, peft_config).save_pretrained(adapter_dir)
    return model_dir, adapter_dir


def _predict_measured(prompted, texts: list[str], *, trace: bool) -> dict:
    """One ``predict_proba`` over ``texts``: RSS before, sampled peak, tracemalloc peak, time."""
    rss_before = _rss()
    peak = [rss_before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    if trace:
        tracemalloc.start()
    sampler.start()
    started = time.perf_counter()
    probs = prompted.predict_proba(texts)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    peak[0] = max(peak[0], _rss())
    return {"rss_before_mib": rss_before / MIB, "rss_peak_mib": peak[0] / MIB,
            "prediction_rss_mib": (peak[0] - rss_before) / MIB,
            "tracemalloc_peak_mib": traced_peak / MIB, "seconds": seconds,
            "n_labels": int(probs.shape[1]), "output_bytes": int(probs.nbytes)}


def child(args: argparse.Namespace) -> dict:
    """Measure one row count in this process; return the numbers.

    Pass 1 (cold) predicts every row once: glibc's malloc arenas and oneDNN's per-shape
    caches grow to a high-water mark the first time new batch shapes come through and keep
    it (later passes reuse it: RSS does not grow again). Pass 2 (warm) predicts the same
    rows again: its peak over the RSS before it is the memory the prediction itself needs,
    and Python-side allocations are traced (tracemalloc) during it.
    """
    import torch

    from promptaudit.demo import demo_prompt_dir
    from promptaudit.models import quiet_transformers
    from promptaudit.prompted_model import load_prompted_model

    quiet_transformers()
    torch.manual_seed(0)
    model = args.model_dir or "builtin:minilm"
    prompt = args.prompt_dir or str(demo_prompt_dir("clean"))
    prompted, _, _ = load_prompted_model(
        model, prompt, task="sequence-classification",
        labels=["reject", "accept"], device=args.device, max_length=args.max_length,
        batch_size=args.batch_size)
    rss_model = _rss()
    texts = _texts(args.source, args.child)
    rss_texts = _rss()
    cold = _predict_measured(prompted, texts, trace=False)
    warm = _predict_measured(prompted, texts, trace=True)
    return {
        "rows": args.child,
        "n_labels": warm["n_labels"],
        "output_bytes": warm["output_bytes"],
        "rss_model_mib": rss_model / MIB,
        "rss_texts_mib": rss_texts / MIB,
        "prediction_peak_mib": max(cold["rss_peak_mib"], warm["rss_peak_mib"]) - rss_texts / MIB,
        "cold": cold,
        "warm": warm,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows_per_second": args.child / cold["seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[10_000, 100_000],
                        metavar=("SMALL", "LARGE"))
    parser.add_argument("--model", choices=["builtin:minilm", "tiny"], default="builtin:minilm",
                        help="tiny: a 2-layer BERT with MiniLM's tokenizer, built here")
    parser.add_argument("--source", choices=["screening", "sst2"], default="screening")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tolerance-mib", type=float, default=32.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prompt-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as root:
        model_args: list[str] = []
        if args.model == "tiny":
            model_dir, adapter_dir = build_tiny_model(Path(root))
            model_args = ["--model-dir", str(model_dir), "--prompt-dir", str(adapter_dir)]
        return compare(args, model_args)


def compare(args: argparse.Namespace, model_args: list[str]) -> int:
    """Run both row counts in child processes, print and write the comparison."""
    small, large = sorted(args.rows)
    measured = []
    for rows in (small, large):
        command = [sys.executable, __file__, "--child", str(rows), "--source", args.source,
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--device", args.device, *model_args]
        done = subprocess.run(command, check=True, capture_output=True, text=True,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        measured.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = measured[-1]
        cold, warm = row["cold"], row["warm"]
        print(f"{rows:>8} rows: RSS model {row['rss_model_mib']:.0f} MiB, with texts "
              f"{row['rss_texts_mib']:.0f}; pass 1 {cold['rss_before_mib']:.0f} -> "
              f"{cold['rss_peak_mib']:.0f}, pass 2 {warm['rss_before_mib']:.0f} -> "
              f"{warm['rss_peak_mib']:.0f}; prediction peak +{row['prediction_peak_mib']:.1f} "
              f"MiB; tracemalloc peak {warm['tracemalloc_peak_mib']:.2f} MiB; ru_maxrss "
              f"{row['ru_maxrss_mib']:.0f} MiB; {row['rows_per_second']:.0f} rows/s", flush=True)

    n_labels = measured[1]["n_labels"]
    # float64 probabilities + int64 length + int64 order + the str list's reference
    per_row = 8 * n_labels + 24
    budget = (large - small) * per_row / MIB
    stored = (large - small) * 8 * n_labels / MIB
    growth_rss = measured[1]["prediction_peak_mib"] - measured[0]["prediction_peak_mib"]
    growth_traced = (measured[1]["warm"]["tracemalloc_peak_mib"]
                     - measured[0]["warm"]["tracemalloc_peak_mib"])
    rss_ok = growth_rss <= budget + args.tolerance_mib
    traced_ok = growth_traced <= budget + 1.0
    passed = rss_ok and traced_ok
    print(f"growth {small} -> {large} rows: stored predictions +{stored:.2f} MiB "
          f"({per_row} B/row with bookkeeping: {budget:.2f} MiB)")
    print(f"  prediction peak RSS {growth_rss:+.2f} MiB (allowed {budget:.2f} + "
          f"{args.tolerance_mib:g} MiB tolerance): {'PASS' if rss_ok else 'FAIL'}")
    print(f"  tracemalloc peak    {growth_traced:+.2f} MiB (allowed {budget:.2f} + 1 MiB): "
          f"{'PASS' if traced_ok else 'FAIL'}")
    added = large - small
    rss_per_row = growth_rss * MIB / added
    traced_per_row = growth_traced * MIB / added
    print(f"  per added row: RSS {rss_per_row:+.1f} B, tracemalloc {traced_per_row:+.1f} B, "
          f"stored predictions {8 * n_labels} B (ratio to stored: RSS "
          f"{rss_per_row / (8 * n_labels):.2f}x, tracemalloc "
          f"{traced_per_row / (8 * n_labels):.2f}x)")
    print(f"{'PASS' if passed else 'FAIL'}")
    report = {
        "benchmark": "bench_memory", "model": args.model, "source": args.source,
        "device": args.device,
        "batch_size": args.batch_size, "max_length": args.max_length,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "runs": measured, "growth_prediction_peak_rss_mib": growth_rss,
        "growth_tracemalloc_mib": growth_traced, "stored_prediction_growth_mib": stored,
        "allowed_growth_mib": budget, "rss_growth_bytes_per_row": rss_per_row,
        "tracemalloc_growth_bytes_per_row": traced_per_row,
        "stored_prediction_bytes_per_row": 8 * n_labels, "rss_tolerance_mib": args.tolerance_mib,
        "passed": passed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
