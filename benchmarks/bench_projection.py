"""Time the projection stage on the bundled MiniLM (30,522-row vocabulary).

Usage::

    python benchmarks/bench_projection.py [--tokens 20] [--texts 200] [--repeat 3]

Measures ``nearest_words`` for each metric, the vocabulary reference
(``REFERENCE_SAMPLE_SIZE`` nearest-neighbour searches) and the whole
``project_prompt`` with fidelity on SST-2 dev sentences (``../shared/data/sst2``,
skipped when absent). Prints one line per measurement (median of repeats).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

from promptaudit.models import load_base_model
from promptaudit.projection import (
    REFERENCE_SAMPLE_SIZE,
    nearest_words,
    project_prompt,
    vocabulary_mask,
)
from promptaudit.prompted_model import PromptedModel

SST2_DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sst2" / "dev.tsv"


def median_seconds(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sst2_sentences(limit: int) -> list[str]:
    if not SST2_DEV.exists():
        return []
    with SST2_DEV.open(encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row["sentence"] for _, row in zip(range(limit), rows, strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20, help="virtual tokens")
    parser.add_argument("--texts", type=int, default=200, help="SST-2 dev sentences for fidelity")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    loaded = load_base_model("builtin:minilm", task="sequence-classification", num_labels=2,
                             device="cpu")
    embeddings = loaded.model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randn(args.tokens, embeddings.shape[1], generator=generator) * 0.06
    prompted = PromptedModel(loaded.model, loaded.tokenizer, prompt,
                             task="sequence-classification", labels=["negative", "positive"])
    print(f"torch threads: {torch.get_num_threads()}; vocab rows: {embeddings.shape[0]}; "
          f"virtual tokens: {args.tokens}")
    mask = vocabulary_mask(loaded.tokenizer, embeddings.shape[0])
    seconds = median_seconds(lambda: vocabulary_mask(loaded.tokenizer, embeddings.shape[0]),
                             args.repeat)
    print(f"vocabulary_mask: {seconds * 1000:.1f} ms")
    for metric in ("cosine", "dot", "l2"):
        seconds = median_seconds(
            lambda metric=metric: nearest_words(prompt, embeddings, tokenizer=loaded.tokenizer,
                                                top_k=5, metric=metric, vocab_mask=mask),
            args.repeat)
        print(f"nearest_words[{metric}]: {seconds * 1000:.1f} ms")
    seconds = median_seconds(lambda: project_prompt(prompted, top_k=5), args.repeat)
    print(f"project_prompt (reference sample {REFERENCE_SAMPLE_SIZE}, no fidelity): "
          f"{seconds:.2f} s")
    texts = sst2_sentences(args.texts)
    if texts:
        seconds = median_seconds(lambda: project_prompt(prompted, top_k=5, texts=texts), 1)
        print(f"project_prompt with fidelity on {len(texts)} SST-2 sentences: {seconds:.2f} s")
    else:
        print(f"SST-2 dev set not found at {SST2_DEV}; fidelity not timed")


if __name__ == "__main__":
    main()
