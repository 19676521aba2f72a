"""Benchmark: batched integrated gradients vs a naive per-example Captum loop.

Both attribute the predicted label's probability of the first ``--n`` SST-2 dev
sentences over ``[prompt ; input]`` embeddings with the bundled MiniLM
(``builtin:minilm``), the same ``--n-steps`` (Gauss-Legendre) and baseline,
in one process, on one prompt:

* ours: :func:`promptaudit.attribution.attribute_prompt` (texts encoded once,
  ordered by length, ``--batch-size`` examples x all steps per forward pass);
* naive: one example at a time, a new forward closure and a new Captum
  ``IntegratedGradients`` per example, the target from a per-example forward.

The prompt is trained here with :func:`promptaudit.training.train_prompt` (300
SST-2 train sentences, 1 epoch, 10 virtual tokens, text init) unless
``--random-prompt`` is given (10 vocabulary rows plus noise of the same scale:
a realistic norm, and a random classifier head). With ``--repeats 2`` the runs
are ordered ours, naive, naive, ours and the fastest of each is kept, which
evens out load from other processes.

Run: ``python benchmarks/bench_attribution.py`` (needs ``../shared/data/sst2``).
Numbers go to stdout and to ``benchmarks/results/bench_attribution.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from promptaudit.attribution import attribute_prompt, baseline_vector
from promptaudit.models import quiet_transformers
from promptaudit.prompted import PromptedModel, load_prompted_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"
LABELS = ["negative", "positive"]
INIT_TEXT = "classify the sentiment of this movie review as positive or negative"


def read_sst2(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / name, sep="\t", quoting=3)


def make_prompted(
    random_prompt: bool, seed: int, device: str = "cpu"
) -> tuple[PromptedModel, dict]:
    """A MiniLM classifier with a trained (or random, realistic-norm) 10-token prompt."""
    if random_prompt:
        torch.manual_seed(seed)
        prompted, _, _ = load_prompted_model("builtin:minilm", None,
                                             task="sequence-classification", labels=LABELS,
                                             device=device)
        vocab = prompted.word_embeddings.detach()
        generator = torch.Generator().manual_seed(seed)
        rows = vocab[torch.randint(0, vocab.shape[0], (10,), generator=generator).to(vocab.device)]
        noise = (torch.randn(rows.shape, generator=generator) * rows.std().cpu()).to(vocab.device)
        prompt = rows + noise
        return prompted.with_prompt(prompt), {"prompt": "random vocabulary rows + noise"}
    from promptaudit.training import InitMethod, TrainingConfig, train_prompt

    train = read_sst2("train.tsv").head(300)
    config = TrainingConfig(num_virtual_tokens=10, init=InitMethod.TEXT, init_text=INIT_TEXT,
                            epochs=1, batch_size=16, learning_rate=0.03, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train_prompt("builtin:minilm", train["sentence"].tolist(),
                              train["label"].tolist(), labels=LABELS, out_dir=Path(tmp) / "a",
                              config=config, device=device, progress=False)
        seconds = time.perf_counter() - started
        prompted, _, _ = load_prompted_model("builtin:minilm", str(Path(tmp) / "a"),
                                             device=device)
    info = {"prompt": "trained: 300 SST-2 train sentences, 1 epoch, 10 virtual tokens, text init",
            "train_seconds": round(seconds, 1),
            "val_accuracy": result.history[-1]["val_accuracy"]}
    return prompted, info


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def naive_integrated_gradients(prompted: PromptedModel, texts, *, n_steps: int, baseline: str):
    """One example at a time: encode, new forward closure, target, new IntegratedGradients."""
    from captum.attr import IntegratedGradients

    fill = baseline_vector(prompted, baseline)
    out = []
    for text in texts:
        encoded = prompted.encode([text])

        def forward(prompt_embeds, input_embeds, encoded=encoded):
            rows = input_embeds.shape[0]
            return prompted.label_probabilities(
                prompt_embeds, input_embeds, encoded.attention_mask.expand(rows, -1),
                None if encoded.token_type_ids is None
                else encoded.token_type_ids.expand(rows, -1))

        embeds = prompted.embed(encoded.input_ids).detach()
        prompt = prompted.prompt.unsqueeze(0)
        with torch.no_grad():
            target = int(forward(prompt, embeds).argmax(dim=-1)[0])
        ig = IntegratedGradients(forward)
        (prompt_attr, input_attr), delta = ig.attribute(
            (prompt, embeds), baselines=(fill.expand_as(prompt), fill.expand_as(embeds)),
            target=target, n_steps=n_steps, return_convergence_delta=True)
        out.append({"target": target,
                    "prompt_attributions": prompt_attr.sum(-1)[0].tolist(),
                    "token_attributions": input_attr.sum(-1)[0].tolist(),
                    "convergence_delta": float(delta[0])})
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="first N SST-2 dev sentences")
    parser.add_argument("--n-steps", type=int, default=32)
    parser.add_argument("--baseline", default="pad")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--internal-batch-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2, choices=[1, 2],
                        help="1: ours then naive; 2: ours, naive, naive, ours (fastest kept)")
    parser.add_argument("--random-prompt", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (GPU check)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                        / "bench_attribution.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    quiet_transformers()

    prompted, prompt_info = make_prompted(args.random_prompt, args.seed, args.device)
    texts = read_sst2("dev.tsv")["sentence"].head(args.n).tolist()
    settings = dict(n_steps=args.n_steps, baseline=args.baseline)

    def run_ours():
        return attribute_prompt(prompted, texts, batch_size=args.batch_size,
                                internal_batch_size=args.internal_batch_size,
                                max_examples=len(texts), **settings)["examples"]

    def run_naive():
        return naive_integrated_gradients(prompted, texts, **settings)

    # warm-up (lazy imports, allocator) on one short example, not timed
    attribute_prompt(prompted, texts[:1], n_steps=2, baseline=args.baseline)
    naive_integrated_gradients(prompted, texts[:1], n_steps=2, baseline=args.baseline)

    order = ["ours", "naive"] if args.repeats == 1 else ["ours", "naive", "naive", "ours"]
    times: dict[str, list[float]] = {"ours": [], "naive": []}
    cpu_times: dict[str, list[float]] = {"ours": [], "naive": []}
    results = {}
    for name in order:
        started, cpu_started = time.perf_counter(), time.process_time()
        results[name] = run_ours() if name == "ours" else run_naive()
        times[name].append(time.perf_counter() - started)
        cpu_times[name].append(time.process_time() - cpu_started)

    ours, naive = results["ours"], results["naive"]
    flat = [np.concatenate([e["prompt_attributions"], e["token_attributions"]]) for e in ours]
    flat_naive = [np.concatenate([e["prompt_attributions"], e["token_attributions"]])
                  for e in naive]
    ours_all, naive_all = np.concatenate(flat), np.concatenate(flat_naive)
    ours_time, naive_time = min(times["ours"]), min(times["naive"])
    ours_cpu, naive_cpu = min(cpu_times["ours"]), min(cpu_times["naive"])
    ours_delta = max(abs(e["convergence_delta"]) for e in ours)
    naive_delta = max(abs(e["convergence_delta"]) for e in naive)
    report = {
        "benchmark": "integrated gradients, batched vs naive per-example Captum loop",
        "model": "builtin:minilm", **prompt_info,
        "n_examples": len(texts), "n_steps": args.n_steps, "baseline": args.baseline,
        "batch_size": args.batch_size, "internal_batch_size": args.internal_batch_size,
        "repeats": args.repeats,
        "ours_seconds": round(ours_time, 2), "naive_seconds": round(naive_time, 2),
        "all_seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "ours_cpu_seconds": round(ours_cpu, 2), "naive_cpu_seconds": round(naive_cpu, 2),
        "all_cpu_seconds": {k: [round(t, 2) for t in v] for k, v in cpu_times.items()},
        "speedup": round(naive_time / ours_time, 2),
        "cpu_time_ratio": round(naive_cpu / ours_cpu, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "ours_max_convergence_delta": ours_delta, "naive_max_convergence_delta": naive_delta,
        "same_targets": [e["target"] for e in ours] == [e["target"] for e in naive],
        "pearson_ours_vs_naive": float(np.corrcoef(ours_all, naive_all)[0, 1]),
        "max_abs_difference": float(np.abs(ours_all - naive_all).max()),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(),
    }
    report["meets_2x"] = report["speedup"] >= 2.0
    report["delta_no_worse"] = ours_delta <= naive_delta * 1.05 + 1e-6

    print(f"model builtin:minilm, prompt: {prompt_info['prompt']}")
    print(f"{len(texts)} SST-2 dev sentences, n_steps={args.n_steps}, baseline={args.baseline}, "
          f"batch_size={args.batch_size}, torch threads={torch.get_num_threads()}")
    print(f"ours  (batched attribute_prompt): {ours_time:8.2f} s wall, {ours_cpu:8.2f} s CPU"
          f"   runs {report['all_seconds']['ours']}")
    print(f"naive (per-example Captum loop):  {naive_time:8.2f} s wall, {naive_cpu:8.2f} s CPU"
          f"   runs {report['all_seconds']['naive']}")
    print(f"speedup naive/ours: {report['speedup']:.2f}x wall (target >= 2x: "
          f"{'met' if report['meets_2x'] else 'NOT met'}), {report['cpu_time_ratio']:.2f}x CPU "
          f"time; load average {report['load_average']}")
    print(f"max |convergence delta|: ours {ours_delta:.3e}, naive {naive_delta:.3e} "
          f"({'ours no worse' if report['delta_no_worse'] else 'ours WORSE'})")
    print(f"agreement: pearson {report['pearson_ours_vs_naive']:.6f}, max |diff| "
          f"{report['max_abs_difference']:.2e}, same targets {report['same_targets']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
