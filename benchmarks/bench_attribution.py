"""Benchmark: adaptive integrated gradients vs fixed steps and a naive Captum loop.

All runs attribute the predicted label's probability of the first ``--n`` SST-2
dev sentences over ``[prompt ; input]`` embeddings with the bundled MiniLM
(``builtin:minilm``), the same baseline (``--baseline``, default zero), in one
process, on one prompt trained on SST-2:

* adaptive: :class:`promptaudit.attribution.PromptAttributor` with ``n_steps="auto"``
  and ``--tolerance`` (default 0.02; the per-position tolerance is the library's
  default, 2.5 times it): every example within both or reported as not converged;
* adaptive trade-off: the same with the per-position tolerance at each of
  ``--position-factors`` times the tolerance (``inf``: completeness only, the
  former rule);
* naive: one example at a time, a new forward closure and a new Captum
  ``IntegratedGradients`` per example at ``--naive-steps`` (default 32);
* fixed: batched ``PromptAttributor`` with fixed Gauss-Legendre steps 16, 32,
  64, ... up to 512, stopping at the smallest N whose every example meets the
  tolerance (or stating that none up to 512 does);
* reference: batched fixed Gauss-Legendre steps at ``--reference-steps``
  (default 2048) on the first ``--reference-n`` examples (default all):
  agreement (Pearson r over every prompt position and input token, max |diff|)
  of each adaptive run with it on the examples where the reference itself
  converges (|delta| <= tolerance). Fewer steps are not a reference: at 512 and
  1024 steps the positions can be off by 0.04 while |delta| is 0.01.

Reported per run: wall time, CPU time, gradient evaluations, max |delta|, the
number of examples over the tolerance. The prompt is loaded from ``--prompt``
(a PEFT adapter directory, e.g. one trained with ``promptaudit train`` on SST-2),
or, without it, trained here with :func:`promptaudit.training.train_prompt`
(``--train-rows`` SST-2 train sentences, 1 epoch, 20 virtual tokens, text init;
``--save-prompt`` keeps it).

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

from promptaudit.attribution import PromptAttributor, attribution_method, baseline_vector
from promptaudit.models import quiet_transformers
from promptaudit.prompted_model import PromptedModel, load_prompted_model

ROOT = Path(__file__).resolve().parents[1]
DATA = next((folder for folder in (ROOT.parent / "shared" / "data" / "sst2",
                                   ROOT.parents[1] / "shared" / "data" / "sst2")
             if folder.is_dir()), ROOT.parent / "shared" / "data" / "sst2")
LABELS = ["negative", "positive"]
INIT_TEXT = "classify the sentiment of this movie review as positive or negative"



def attribute(prompted, texts, *, batch_size: int = 8, **options) -> dict:
    """Attribute every text with the method built from flat options."""
    attributor = PromptAttributor(prompted, attribution_method(**options), batch_size=batch_size)
    return attributor.attribute(texts)

def read_sst2(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / name, sep="\t", quoting=3)


def make_prompted(
    random_prompt: bool, seed: int, device: str = "cpu", *, train_rows: int = 300,
    save_to: Path | None = None,
) -> tuple[PromptedModel, dict]:
    """A MiniLM classifier with a trained (or random, realistic-norm) 20-token prompt."""
    if random_prompt:
        torch.manual_seed(seed)
        prompted, _, _ = load_prompted_model("builtin:minilm", None,
                                             task="sequence-classification", labels=LABELS,
                                             device=device)
        vocab = prompted.word_embeddings.detach()
        generator = torch.Generator().manual_seed(seed)
        rows = vocab[torch.randint(0, vocab.shape[0], (20,), generator=generator).to(vocab.device)]
        noise = (torch.randn(rows.shape, generator=generator) * rows.std().cpu()).to(vocab.device)
        prompt = rows + noise
        return prompted.with_prompt(prompt), {"prompt": "random vocabulary rows + noise"}
    from promptaudit.training import InitMethod, TrainingConfig, train_prompt

    train = read_sst2("train.tsv").head(train_rows)
    config = TrainingConfig(num_virtual_tokens=20, init=InitMethod.TEXT, init_text=INIT_TEXT,
                            epochs=1, batch_size=16, learning_rate=0.03, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train_prompt("builtin:minilm", train["sentence"].tolist(),
                              train["label"].tolist(), labels=LABELS, out_dir=Path(tmp) / "a",
                              config=config, device=device, progress=False)
        seconds = time.perf_counter() - started
        prompted, _, _ = load_prompted_model("builtin:minilm", str(Path(tmp) / "a"),
                                             device=device)
        if save_to is not None:
            import shutil

            shutil.copytree(Path(tmp) / "a", save_to, dirs_exist_ok=True)
    info = {"prompt": f"trained: {train_rows} SST-2 train sentences, 1 epoch, 20 virtual "
                      "tokens, text init",
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


def timed(run):
    """``(result, wall seconds, CPU seconds)`` of ``run()``."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - started, time.process_time() - cpu_started


def flat(examples) -> list[np.ndarray]:
    return [np.concatenate([e["prompt_attributions"], e["token_attributions"]])
            for e in examples]


def summary(examples, wall: float, cpu: float, tolerance: float) -> dict:
    deltas = [abs(e["convergence_delta"]) for e in examples]
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "gradient_evals": int(sum(e.get("n_steps", 0) for e in examples)),
            "max_abs_delta": float(max(deltas)),
            "n_over_tolerance": int(sum(d > tolerance for d in deltas))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="first N SST-2 dev sentences")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--naive-steps", type=int, default=32)
    parser.add_argument("--reference-steps", type=int, default=2048)
    parser.add_argument("--reference-n", type=int, default=None,
                        help="reference on the first N examples only (default all)")
    parser.add_argument("--position-factors", default="inf,1",
                        help="extra adaptive runs: per-position tolerance = factor x tolerance")
    parser.add_argument("--max-fixed-steps", type=int, default=512)
    parser.add_argument("--baseline", default="zero")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="examples per batch (32: what audits use for adaptive steps)")
    parser.add_argument("--internal-batch-size", type=int, default=None)
    parser.add_argument("--train-rows", type=int, default=300)
    parser.add_argument("--prompt", "--prompt-dir", dest="prompt_dir", type=Path, default=None,
                        help="load this adapter (PEFT directory) instead of training one")
    parser.add_argument("--save-prompt", type=Path, default=None,
                        help="save the trained adapter here (for --prompt-dir)")
    parser.add_argument("--random-prompt", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (GPU check)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                        / "bench_attribution.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    quiet_transformers()

    if args.prompt_dir is not None:
        prompted, _, _ = load_prompted_model("builtin:minilm", str(args.prompt_dir),
                                             device=args.device)
        info_file = args.prompt_dir / "training_info.json"
        prompt_info = {"prompt": f"loaded from {args.prompt_dir}"}
        if info_file.exists():
            prompt_info["training_info"] = json.loads(info_file.read_text())
    else:
        prompted, prompt_info = make_prompted(args.random_prompt, args.seed, args.device,
                                              train_rows=args.train_rows,
                                              save_to=args.save_prompt)
    norms = prompted.prompt.detach().float().norm(dim=-1).cpu()
    vocab_median = float(prompted.word_embeddings.detach().float().norm(dim=-1).median())
    texts = read_sst2("dev.tsv")["sentence"].head(args.n).tolist()
    tol = args.tolerance
    common = dict(baseline=args.baseline, batch_size=args.batch_size,
                  internal_batch_size=args.internal_batch_size, delta_tolerance=tol)

    # warm-up (lazy imports, allocator) on one short example, not timed
    attribute(prompted, texts[:1], n_steps=2, baseline=args.baseline)
    attribute(prompted, texts[:1], n_steps="auto", baseline=args.baseline)
    naive_integrated_gradients(prompted, texts[:1], n_steps=2, baseline=args.baseline)

    adaptive_result, wall, cpu = timed(
        lambda: attribute(prompted, texts, n_steps="auto", **common))
    adaptive = adaptive_result["examples"]
    runs = {"adaptive": summary(adaptive, wall, cpu, tol)}
    runs["adaptive"]["n_not_converged"] = adaptive_result["n_not_converged"]
    runs["adaptive"]["position_tolerance"] = adaptive_result["position_tolerance"]
    runs["adaptive"]["steps_per_example"] = [e["n_steps"] for e in adaptive]
    adaptive_runs = {"adaptive": adaptive}
    for factor in [float(f) for f in args.position_factors.split(",") if f.strip()]:
        name = f"adaptive_pos_{factor:g}x"
        out, wall, cpu = timed(lambda f=factor: attribute(
            prompted, texts, n_steps="auto", position_tolerance=f * tol, **common))
        runs[name] = summary(out["examples"], wall, cpu, tol)
        runs[name]["n_not_converged"] = out["n_not_converged"]
        runs[name]["position_tolerance"] = out["position_tolerance"]
        adaptive_runs[name] = out["examples"]

    naive, wall, cpu = timed(
        lambda: naive_integrated_gradients(prompted, texts, n_steps=args.naive_steps,
                                           baseline=args.baseline))
    for e in naive:
        e["n_steps"] = args.naive_steps
    runs[f"naive_{args.naive_steps}"] = summary(naive, wall, cpu, tol)

    fixed_runs, smallest = {}, None
    steps = 16
    while steps <= args.max_fixed_steps:
        out, wall, cpu = timed(lambda s=steps: attribute(prompted, texts, n_steps=s,
                                                                **common)["examples"])
        fixed_runs[steps] = out
        runs[f"fixed_{steps}"] = summary(out, wall, cpu, tol)
        if runs[f"fixed_{steps}"]["n_over_tolerance"] == 0:
            smallest = steps
            break
        steps *= 2
    ref_texts = texts[: args.reference_n or len(texts)]
    if args.reference_steps in fixed_runs and len(ref_texts) == len(texts):
        reference = fixed_runs[args.reference_steps]
    else:
        reference, wall, cpu = timed(lambda: attribute(
            prompted, ref_texts, n_steps=args.reference_steps,
            **common)["examples"])
        runs[f"reference_{args.reference_steps}"] = summary(reference, wall, cpu, tol)
    good = [i for i, e in enumerate(reference) if abs(e["convergence_delta"]) <= tol]
    same_targets = ([e["target"] for e in adaptive[: len(reference)]]
                    == [e["target"] for e in reference])
    agreement = {}
    for name, examples in {**adaptive_runs, f"naive_{args.naive_steps}": naive,
                           **{f"fixed_{k}": v for k, v in fixed_runs.items()}}.items():
        if not good:
            agreement[name] = {"pearson": None, "max_abs_difference": None}
            continue
        ours = np.concatenate([flat(examples)[i] for i in good])
        ref = np.concatenate([flat(reference)[i] for i in good])
        agreement[name] = {
            "pearson": round(float(np.corrcoef(ours, ref)[0, 1]), 5),
            "max_abs_difference": round(float(np.abs(ours - ref).max()), 5),
            "max_l1_difference": round(float(max(
                np.abs(flat(examples)[i] - flat(reference)[i]).sum() for i in good)), 5),
        }
    pearson = agreement["adaptive"]["pearson"]
    max_diff = agreement["adaptive"]["max_abs_difference"]

    naive_key = f"naive_{args.naive_steps}"
    report = {
        "benchmark": "adaptive integrated gradients vs naive Captum loop and fixed steps",
        "model": "builtin:minilm", **prompt_info,
        "prompt_norms": [round(float(v), 2) for v in norms],
        "vocabulary_median_norm": round(vocab_median, 3),
        "n_examples": len(texts), "baseline": args.baseline, "delta_tolerance": tol,
        "batch_size": args.batch_size, "internal_batch_size": args.internal_batch_size,
        "runs": runs,
        "smallest_fixed_steps_meeting_tolerance": smallest,
        "speedup_vs_naive_wall": round(runs[naive_key]["seconds"]
                                       / runs["adaptive"]["seconds"], 2),
        "speedup_vs_naive_cpu": round(runs[naive_key]["cpu_seconds"]
                                      / runs["adaptive"]["cpu_seconds"], 2),
        "speedup_vs_smallest_fixed_cpu": None if smallest is None else round(
            runs[f"fixed_{smallest}"]["cpu_seconds"] / runs["adaptive"]["cpu_seconds"], 2),
        "reference_steps": args.reference_steps,
        "reference_examples": len(reference),
        "reference_converged_examples": len(good),
        "agreement_vs_reference": agreement,
        "pearson_adaptive_vs_reference": pearson,
        "max_abs_difference_vs_reference": max_diff,
        "same_targets": same_targets,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(),
    }
    report["every_example_within_tolerance"] = runs["adaptive"]["n_not_converged"] == 0
    report["meets_2x"] = report["speedup_vs_naive_wall"] >= 2.0

    print(f"model builtin:minilm, prompt: {prompt_info['prompt']}")
    print(f"prompt norms {report['prompt_norms']} (vocabulary median {vocab_median:.2f})")
    print(f"{len(texts)} SST-2 dev sentences, baseline={args.baseline}, tolerance {tol}, "
          f"torch threads={torch.get_num_threads()}")
    print(f"{'run':<16}{'wall s':>9}{'CPU s':>9}{'grad evals':>12}{'max|delta|':>12}"
          f"{'over tol':>10}")
    for name, row in runs.items():
        print(f"{name:<16}{row['seconds']:>9.2f}{row['cpu_seconds']:>9.2f}"
              f"{row['gradient_evals']:>12d}{row['max_abs_delta']:>12.4f}"
              f"{row['n_over_tolerance']:>10d}")
    print("smallest fixed N meeting the tolerance for every example: "
          + (str(smallest) if smallest else f"none up to {args.max_fixed_steps}"))
    print(f"adaptive vs naive: {report['speedup_vs_naive_wall']:.2f}x wall, "
          f"{report['speedup_vs_naive_cpu']:.2f}x CPU (target >= 2x: "
          f"{'met' if report['meets_2x'] else 'NOT met'}); not converged: "
          f"{runs['adaptive']['n_not_converged']}")
    print(f"agreement with the {args.reference_steps}-step reference on its {len(good)} "
          f"converged examples (of {len(reference)}): pearson {pearson}, max |diff| {max_diff}; "
          f"same targets {same_targets}")
    for name, row in agreement.items():
        print(f"  {name:<20} pearson {row['pearson']}, max |diff| {row['max_abs_difference']}, "
              f"max per-example L1 {row.get('max_l1_difference')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
