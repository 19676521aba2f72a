"""Train and predict throughput of promptaudit against a plain PEFT loop, in one process.

On SST-2 (``../shared/data/sst2``) with the bundled MiniLM (``builtin:minilm``):

* train: :func:`promptaudit.training.train_prompt` against ``get_peft_model`` +
  ``AdamW`` over the same sentences, in the same shuffled batches, with the same
  batch size, virtual tokens, init, learning rate and max length (both include
  wrapping the model and saving the adapter; neither includes loading the model);
* predict: :meth:`promptaudit.prompted_model.PromptedModel.predict_proba` against a
  batched ``PeftModel.from_pretrained`` forward loop on the same dev sentences and
  the same adapter (the one the plain loop trained).

Each measurement is repeated ``--repeats`` times, alternating plain and ours, and
the fastest run of each is reported (the machine may be shared). Predict gains
from sorting texts by length (less padding); training feeds the same batches to
both. Usage::

    python benchmarks/bench_train_predict.py [--n-train 512] [--n-dev 512]
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sst2"
LABELS = ["negative", "positive"]
INIT_TEXT = "Classify the sentiment of this movie review as negative or positive"


def read_sst2(path: Path, n: int) -> tuple[list[str], np.ndarray]:
    frame = pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False).head(n)
    return frame["sentence"].astype(str).tolist(), frame["label"].astype(int).to_numpy()


def fresh_base():
    from promptaudit.models import load_base_model

    torch.manual_seed(0)
    return load_base_model("builtin:minilm", task="sequence-classification", num_labels=2,
                           device="cpu")


def peft_config(args):
    from peft import PromptTuningConfig

    from promptaudit.models import builtin_minilm_dir

    return PromptTuningConfig(
        task_type="SEQ_CLS", num_virtual_tokens=args.virtual_tokens, prompt_tuning_init="TEXT",
        prompt_tuning_init_text=INIT_TEXT, tokenizer_name_or_path=str(builtin_minilm_dir()),
    )


# ---------------------------------------------------------------------- train
def train_plain_peft(args, texts, labels, out: Path) -> float:
    """The loop a PEFT user writes; returns seconds (wrap + epochs + save)."""
    from peft import get_peft_model

    loaded = fresh_base()
    tokenizer = loaded.tokenizer
    started = time.perf_counter()
    model = get_peft_model(loaded.model, peft_config(args))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=args.learning_rate, weight_decay=0.0)
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(texts), args.batch_size):
            index = order[start:start + args.batch_size].tolist()
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True,
                              max_length=args.max_length, return_tensors="pt")
            loss = model(**batch, labels=torch.as_tensor(labels[index])).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.save_pretrained(out)
    return time.perf_counter() - started


def train_ours(args, texts, labels, out: Path) -> tuple[float, float]:
    """``train_prompt`` on an already loaded model; (seconds of the call, its own loop rate)."""
    from promptaudit.training import InitMethod, TrainingConfig, train_prompt

    loaded = fresh_base()
    config = TrainingConfig(
        num_virtual_tokens=args.virtual_tokens, init=InitMethod.TEXT, init_text=INIT_TEXT,
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        max_length=args.max_length, seed=0, validation_fraction=0.0,
    )
    started = time.perf_counter()
    result = train_prompt("builtin:minilm", texts, labels, labels=LABELS, out_dir=out,
                          config=config, device="cpu", progress=False, loaded=loaded)
    return time.perf_counter() - started, result.train_examples_per_second


# -------------------------------------------------------------------- predict
def predict_plain_peft(args, adapter: Path, texts) -> tuple[float, np.ndarray]:
    from peft import PeftModel

    loaded = fresh_base()
    model = PeftModel.from_pretrained(loaded.model, str(adapter)).eval()
    out = []
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(texts), args.batch_size):
            batch = loaded.tokenizer(texts[start:start + args.batch_size], padding=True,
                                     truncation=True, max_length=args.max_length,
                                     return_tensors="pt")
            out.append(torch.softmax(model(**batch).logits, dim=-1))
    seconds = time.perf_counter() - started
    return seconds, torch.cat(out).double().numpy()


def predict_ours(args, adapter: Path, texts) -> tuple[float, np.ndarray]:
    from promptaudit.prompted_model import load_prompted_model

    prompted, _, _ = load_prompted_model("builtin:minilm", str(adapter), device="cpu",
                                         max_length=args.max_length, batch_size=args.batch_size)
    started = time.perf_counter()
    probs = prompted.predict_proba(texts)
    return time.perf_counter() - started, probs


# ----------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-dev", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--virtual-tokens", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=0.03)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--csv", type=Path, help="Append the figures to this CSV file.")
    args = parser.parse_args()

    from promptaudit.models import quiet_transformers

    quiet_transformers()
    train_texts, train_labels = read_sst2(args.data / "train.tsv", args.n_train)
    dev_texts, _ = read_sst2(args.data / "dev.tsv", args.n_dev)
    n_examples = len(train_texts) * args.epochs
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; MiniLM, {len(train_texts)} train x "
          f"{args.epochs} epoch(s), {len(dev_texts)} dev, batch {args.batch_size}, "
          f"{args.virtual_tokens} virtual tokens")

    warm = fresh_base()  # warm up threads and allocator so neither side pays for it
    with torch.inference_mode():
        warm.model(**warm.tokenizer(train_texts[:args.batch_size], padding=True,
                                    return_tensors="pt"))
    del warm

    plain_train, ours_train, ours_loop = [], [], []
    plain_predict, ours_predict = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for repeat in range(args.repeats):
            plain_train.append(train_plain_peft(args, train_texts, train_labels,
                                                tmp / f"plain-{repeat}"))
            seconds, loop_rate = train_ours(args, train_texts, train_labels, tmp / f"ours-{repeat}")
            ours_train.append(seconds)
            ours_loop.append(loop_rate)
        adapter = tmp / "plain-0"
        for _ in range(args.repeats):
            seconds, plain_probs = predict_plain_peft(args, adapter, dev_texts)
            plain_predict.append(seconds)
            seconds, our_probs = predict_ours(args, adapter, dev_texts)
            ours_predict.append(seconds)

    rows = [
        ("train", n_examples / min(plain_train), n_examples / min(ours_train)),
        ("predict", len(dev_texts) / min(plain_predict), len(dev_texts) / min(ours_predict)),
    ]
    print(f"{'':8} {'plain PEFT ex/s':>16} {'promptaudit ex/s':>17} {'ratio':>7}")
    for name, plain, ours in rows:
        print(f"{name:8} {plain:16.1f} {ours:17.1f} {ours / plain:6.2f}x")
    print(f"train_prompt's own loop rate (excluding wrap and save): {max(ours_loop):.1f} ex/s")
    print(f"predict agreement with PEFT: max |p_ours - p_peft| = "
          f"{np.abs(our_probs - plain_probs).max():.2e}")
    print("all runs (s): train plain", [f"{s:.2f}" for s in plain_train], "ours",
          [f"{s:.2f}" for s in ours_train], "| predict plain",
          [f"{s:.2f}" for s in plain_predict], "ours", [f"{s:.2f}" for s in ours_predict])
    if args.csv:
        new = not args.csv.exists()
        with args.csv.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["stage", "plain_examples_per_s", "ours_examples_per_s", "ratio"])
            for name, plain, ours in rows:
                writer.writerow([name, f"{plain:.2f}", f"{ours:.2f}", f"{ours / plain:.3f}"])


if __name__ == "__main__":
    main()
