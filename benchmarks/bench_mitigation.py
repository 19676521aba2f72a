"""Cost of mitigation: one CLP candidate against plain ``train`` on the same data and epochs.

Both runs use :func:`promptaudit.training.train_prompt` on the same rows of the
built-in (biased) screening corpus with MiniLM (``builtin:minilm``), the same
epochs, batch size and max length, in one process; the CLP run warm-starts from
the shipped biased demo prompt and adds the pairing loss over identity swaps
(``builtin:identity``, gender), one variant per batch text (the extra forward
and backward pass is the whole extra cost). Neither includes loading the model.

The sweep of ``mitigate`` trains one candidate per weight (default three) and
evaluates each; its total is ``n_weights x`` the per-candidate figure plus the
evaluations. Target: one candidate at most 2.5x plain training.

Each measurement is repeated ``--repeats`` times, alternating, fastest kept (the
machine may be shared). Usage::

    python benchmarks/bench_mitigation.py [--n-train 128] [--epochs 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

TARGET = 2.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--weight", type=float, default=10.0)
    args = parser.parse_args()

    from promptaudit.corpora import SCREENING_LABELS, load_builtin_table
    from promptaudit.data import encode_labels
    from promptaudit.demo import DEMO_TRAINING, demo_prompt_dir
    from promptaudit.mitigation import PairingLoss, build_variants
    from promptaudit.models import load_base_model
    from promptaudit.soft_prompts import load_prompt
    from promptaudit.training import InitMethod, TrainingConfig, train_prompt

    frame = load_builtin_table("screening-train-biased", seed=0).iloc[: args.n_train]
    labels = list(SCREENING_LABELS)
    texts = frame["text"].tolist()
    ids = encode_labels(frame["label"], labels, source="bench", column="label")
    soft = load_prompt(demo_prompt_dir("biased"))
    state = {"prompt_embeddings": soft.embeddings}
    state.update({f"base_model.{k}": v for k, v in soft.head_state.items()})
    variants = build_variants(texts, suite="builtin:identity", features=["gender"])
    plain_config = TrainingConfig(**{**DEMO_TRAINING.__dict__, "epochs": args.epochs,
                                     "validation_fraction": 0.0})
    clp_config = TrainingConfig(
        num_virtual_tokens=soft.num_virtual_tokens, init=InitMethod.RANDOM, epochs=args.epochs,
        learning_rate=0.03, batch_size=plain_config.batch_size,
        max_length=plain_config.max_length, validation_fraction=0.0,
    )

    pairs_used: list[int] = []

    def run(kind: str) -> float:
        torch.manual_seed(0)
        loaded = load_base_model("builtin:minilm", task="sequence-classification",
                                 num_labels=2, device="cpu")
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            if kind == "plain":
                train_prompt("builtin:minilm", texts, ids, labels=labels, out_dir=out,
                             config=plain_config, progress=False, loaded=loaded)
            else:
                loss = PairingLoss(variants, positive=1, weight=args.weight,
                                   max_pairs=clp_config.batch_size)
                train_prompt("builtin:minilm", texts, ids, labels=labels, out_dir=out,
                             config=clp_config, progress=False, loaded=loaded,
                             initial_state=state, extra_loss=loss)
                pairs_used.append(loss.n_pairs)
            return time.perf_counter() - started

    times: dict[str, list[float]] = {"plain": [], "clp": []}
    for _ in range(args.repeats):
        for kind in ("plain", "clp"):
            times[kind].append(run(kind))
    plain, clp = min(times["plain"]), min(times["clp"])
    ratio = clp / plain
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"rows {len(texts)} ({len(variants)} with a gender variant), epochs {args.epochs}, "
          f"batch {plain_config.batch_size}, max_length {plain_config.max_length}, "
          f"pairs per CLP run {pairs_used[-1]}")
    print(f"plain train: {plain:.1f} s   CLP candidate: {clp:.1f} s   ratio {ratio:.2f}x "
          f"(target <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
