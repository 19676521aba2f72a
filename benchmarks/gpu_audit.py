"""GPU check: throughput of an audit's prediction and attribution stages in bfloat16.

One prepared script for an accelerator (a few minutes at most). It audits two
models loaded in ``--dtype`` (default ``bfloat16``) on one device:

* the bundled MiniLM (``builtin:minilm``, sequence classification) with the
  shipped demo prompt (``src/promptaudit/demo_prompt/``, a PEFT adapter);
* a small causal LM built here from ``GPT2Config`` (random weights, a word-level
  tokenizer over the screening corpus, label words ``reject`` / ``accept`` read
  from the next-token logits) with a random 10-token prompt.

For each it prints examples per second for prediction (``predict_proba``) and
for integrated gradients (:func:`promptaudit.prompted_model.float32_model`, which
upcasts the model to float32 for attribution), the largest convergence delta,
and, as a precision check, how far the half-precision predictions are from the
same model's float32 predictions and what the convergence delta is when
attribution is (wrongly) left in half precision.

Run on a GPU: ``python benchmarks/gpu_audit.py`` (``--device cuda``).
Smoke check on CPU: ``python benchmarks/gpu_audit.py --device cpu --tiny``.
``--json FILE`` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = ROOT / "src" / "promptaudit" / "demo_prompt"
LABELS = ["reject", "accept"]

#: Sizes: (predict texts, attribute texts, IG steps, batch size, GPT-2 width, layers, heads).
SIZES = {
    "full": dict(n=8192, attr_n=256, n_steps=32, batch_size=256, width=512, layers=8, heads=8),
    "tiny": dict(n=48, attr_n=8, n_steps=16, batch_size=16, width=64, layers=2, heads=2),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> float:
    _sync(device)
    return time.perf_counter()


def build_tiny_causal_lm(folder: Path, texts: list[str], *, width: int, layers: int, heads: int,
                         num_virtual_tokens: int = 10, seed: int = 0) -> tuple[Path, Path]:
    """A GPT-2 from a config with a word-level tokenizer over ``texts``; and a prompt file."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())} | set(LABELS))
    vocab = {"[UNK]": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_embd=width, n_layer=layers, n_head=heads,
                        n_positions=256, bos_token_id=1, eos_token_id=1, pad_token_id=1)
    model_dir = folder / "tiny-gpt2"
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    fast.save_pretrained(model_dir)
    generator = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randn(num_virtual_tokens, width, generator=generator) * 0.02
    prompt_path = folder / "tiny-gpt2-prompt.safetensors"
    save_file({"prompt_embeddings": prompt}, str(prompt_path))
    return model_dir, prompt_path


def bench(name: str, model: str, prompt: str, *, task: str, texts: list[str], device: str,
          dtype: str, size: dict) -> dict:
    """Load in ``dtype`` and time prediction and attribution; compare with float32."""
    from promptaudit.attribution import IntegratedGradients, PromptAttributor
    from promptaudit.prompted_model import float32_model, load_prompted_model

    def run_attribution(prompted, texts, method):  # as the pipeline attributes: in float32
        with float32_model(prompted) as model:
            return PromptAttributor(model, method).attribute(texts)

    options = dict(task=task, labels=LABELS, device=device, max_length=64,
                   batch_size=size["batch_size"])
    started = time.perf_counter()
    prompted, _, loaded = load_prompted_model(model, prompt, dtype=dtype, **options)
    load_seconds = time.perf_counter() - started
    torch_device = loaded.device
    attr_texts = texts[: size["attr_n"]]
    # warm-up: kernels, allocator, autotuning; not timed
    prompted.predict_proba(texts[: size["batch_size"]])
    run_attribution(prompted, attr_texts[:8], IntegratedGradients(n_steps=2))

    started = _clock(torch_device)
    probs = prompted.predict_proba(texts)
    predict_seconds = _clock(torch_device) - started
    started = _clock(torch_device)
    attribution = run_attribution(prompted, attr_texts,
                                  IntegratedGradients(n_steps=size["n_steps"], baseline="pad"))
    attribute_seconds = _clock(torch_device) - started

    check = texts[: min(len(texts), 512)]
    half_delta = None
    if prompted.dtype != torch.float32:
        few = attr_texts[:8]
        half_delta = PromptAttributor(prompted, IntegratedGradients(
            n_steps=size["n_steps"])).attribute(few)["max_convergence_delta"]
    del prompted, loaded
    reference, _, _ = load_prompted_model(model, prompt, dtype="float32", **options)
    fp32_probs = reference.predict_proba(check)
    del reference
    if torch_device.type == "cuda":
        torch.cuda.empty_cache()
    result = {
        "model": name, "task": task, "dtype": dtype, "device": str(torch_device),
        "load_seconds": round(load_seconds, 2),
        "predict_examples": len(texts), "predict_seconds": round(predict_seconds, 3),
        "predict_examples_per_second": round(len(texts) / predict_seconds, 1),
        "attribute_examples": len(attr_texts), "n_steps": size["n_steps"],
        "attribute_seconds": round(attribute_seconds, 3),
        "attribute_examples_per_second": round(len(attr_texts) / attribute_seconds, 2),
        "max_convergence_delta_float32_attribution": attribution["max_convergence_delta"],
        "max_convergence_delta_if_left_in_half_precision": half_delta,
        "max_abs_probability_difference_vs_float32": float(
            np.abs(probs[: len(check)] - fp32_probs).max()),
        "prediction_agreement_vs_float32": float(
            (probs[: len(check)].argmax(1) == fp32_probs.argmax(1)).mean()),
    }
    print(f"{name:<10s} {dtype} on {torch_device}: predict "
          f"{result['predict_examples_per_second']:>9.1f} ex/s ({len(texts)} in "
          f"{predict_seconds:.2f} s); attribute "
          f"{result['attribute_examples_per_second']:>7.2f} ex/s "
          f"({len(attr_texts)} x {size['n_steps']} steps in {attribute_seconds:.2f} s); "
          f"max |delta| {result['max_convergence_delta_float32_attribution']:.1e} "
          f"(half precision: {half_delta if half_delta is None else f'{half_delta:.1e}'}); "
          f"vs float32: max |dp| {result['max_abs_probability_difference_vs_float32']:.1e}, "
          f"agreement {result['prediction_agreement_vs_float32']:.3f}", flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CPU smoke check)")
    for key in ("n", "attr_n", "n_steps", "batch_size"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    for name in ("promptaudit.attribution", "promptaudit.prompted_model"):
        logging.getLogger(name).setLevel(logging.ERROR)  # deltas are printed below
    from promptaudit.data import load_table
    from promptaudit.models import quiet_transformers, resolve_device

    quiet_transformers()
    device = str(resolve_device(args.device))
    size = dict(SIZES["tiny" if args.tiny else "full"])
    size.update({k: getattr(args, k) for k in ("n", "attr_n", "n_steps", "batch_size")
                 if getattr(args, k) is not None})
    corpus = load_table("builtin:screening")["text"].astype(str).tolist()
    texts = (corpus * (size["n"] // len(corpus) + 1))[: size["n"]]
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    print(f"device {device} ({gpu or platform.processor() or platform.machine()}), dtype "
          f"{args.dtype}, torch {torch.__version__}, sizes {size}", flush=True)
    started = time.perf_counter()
    results = [bench("minilm", "builtin:minilm", str(PROMPT), task="sequence-classification",
                     texts=texts, device=device, dtype=args.dtype, size=size)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, prompt_path = build_tiny_causal_lm(
            Path(tmp), corpus, width=size["width"], layers=size["layers"], heads=size["heads"])
        results.append(bench("tiny-gpt2", str(model_dir), str(prompt_path), task="causal-lm",
                             texts=texts, device=device, dtype=args.dtype, size=size))
    report = {"device": device, "device_name": gpu, "dtype": args.dtype, "sizes": size,
              "torch": torch.__version__, "cpu_count": os.cpu_count(), "results": results,
              "total_seconds": round(time.perf_counter() - started, 1)}
    print(f"total {report['total_seconds']} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
