"""Translate soft prompts into readable words: fidelity, whole words, round trip, time.

Usage::

    python benchmarks/bench_translation.py --case demo
    python benchmarks/bench_translation.py --case sst2 --prompt benchmarks/results/sst2_prompt

``demo``: the bundled demo prompt (``src/promptaudit/demo_prompt``, builtin:minilm) on
``builtin:screening`` (600 rows). ``sst2``: a prompt trained with ``promptaudit train``
(2,000 rows of ``../shared/data/sst2/train.tsv``, 20 virtual tokens) on SST-2 rows it was
not trained on (``--rows`` rows: dev first, then train rows past the first 2,000).

In one command, on the same held-out rows, it measures three readings against the
soft prompt's decisions:

* nearest whole words (the projection's reading restricted to whole words);
* a plain PEZ loop (one seed, ``--steps`` steps, the last words, no selection);
* :func:`promptaudit.translate_prompt` (restarts, coordinate search, early stopping).

Prints agreement with a 95% Wilson interval, accuracy, whole-word share, round trip,
wall and CPU seconds and the load average, and writes ``--out`` (JSON).

``--ceiling`` measures instead how firmly the soft prompt itself decides the held-out rows
(borderline rows, agreement after random moves the size of the distance to the nearest
word, and with ``--other-prompt`` a prompt trained with another seed): the level a
translation can be expected to reach.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from promptaudit.prompted_model import load_prompted_model
from promptaudit.translation import (
    TranslateSettings,
    _nearest_words,
    _Search,
    readable_vocabulary,
    round_trip_ids,
    split_rows,
    translate_prompt,
    wilson_interval,
)

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT / ".." / "shared" / "data" / "sst2"


def sst2_rows(limit: int) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for name, skip in (("dev.tsv", 0), ("train.tsv", 2000)):
        with (SST2 / name).open(encoding="utf-8") as handle:
            rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            for number, row in enumerate(rows):
                if number < skip:
                    continue
                texts.append(row["sentence"])
                labels.append(int(row["label"]))
                if len(texts) >= limit:
                    return texts, labels
    return texts, labels


def plain_pez(prompted, texts, settings: TranslateSettings) -> list[int]:
    """A plain PEZ loop: one seed, all steps, the final words (no selection, no search)."""
    tokenizer = prompted.tokenizer
    allowed, _ = readable_vocabulary(tokenizer, prompted.word_embeddings.shape[0])
    opt, val, _ = split_rows(len(texts), settings)
    plain = TranslateSettings(**{**settings.__dict__, "patience": 10**9, "sweeps": 0,
                                 "eval_every": 10**9})
    search = _Search(prompted, allowed, [texts[i] for i in opt], [texts[i] for i in val], plain)
    from promptaudit.translation import _nearest
    _, continuous, _ = search.pez(settings.seed)
    index = _nearest(continuous, search.words_unit)[:, 0]
    return [int(allowed[j]) for j in index.tolist()]


def agreement(prompted, ids, texts, soft_pred, labels):
    weights = prompted.word_embeddings.detach()
    pred = prompted.with_prompt(weights[torch.tensor(ids)]).predict_proba(texts).argmax(1)
    agree = int((pred == soft_pred).sum())
    return {"agreement": agree / len(texts), "interval": wilson_interval(agree, len(texts)),
            "accuracy": None if labels is None else float((pred == labels).mean())}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["demo", "sst2"], default="demo")
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--rows", type=int, default=1000, help="SST-2 rows (dev, then train)")
    parser.add_argument("--steps", type=int, default=TranslateSettings.steps)
    parser.add_argument("--restarts", type=int, default=TranslateSettings.restarts)
    parser.add_argument("--sweeps", type=int, default=TranslateSettings.sweeps)
    parser.add_argument("--top-k", type=int, default=TranslateSettings.top_k)
    parser.add_argument("--search-rows", type=int, default=TranslateSettings.search_rows)
    parser.add_argument("--lr", type=float, default=TranslateSettings.learning_rate)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--no-plain-pez", action="store_true",
                        help="skip the plain PEZ baseline (keep the nearest words)")
    parser.add_argument("--ceiling", action="store_true",
                        help="only measure how stable the soft prompt's own decisions are")
    parser.add_argument("--other-prompt", default=None,
                        help="with --ceiling: a prompt trained with another seed to compare")
    parser.add_argument("--out", default=None)
    return parser.parse_args()


def load_case(case: str, prompt: str | None, rows: int):
    """``(prompted, texts, labels (n,))`` of the demo or the SST-2 case."""
    default = "src/promptaudit/demo_prompt" if case == "demo" else "benchmarks/results/sst2_prompt"
    prompted, _, _ = load_prompted_model("builtin:minilm", prompt or str(ROOT / default),
                                         device="cpu", max_length=64)
    if case == "sst2":
        texts, labels = sst2_rows(rows)
        return prompted, texts, np.asarray(labels)
    from promptaudit.data import encode_labels, load_table

    frame = load_table("builtin:screening", required_columns=["text", "label"])
    labels = encode_labels(frame["label"], prompted.labels, source="builtin:screening",
                           column="label")
    return prompted, frame["text"].astype(str).tolist(), np.asarray(labels)


def ceiling(prompted, held_texts, soft_proba, allowed, other_prompt=None, draws=5) -> dict:
    """How firmly the soft prompt itself decides the held-out rows.

    * ``borderline_share``: rows whose two top label probabilities differ by < 0.2;
    * ``perturbed``: agreement with the soft prompt's own decisions after moving each
      virtual token a random direction (seeded Gaussian, unit norm) times ``scale`` times
      its Euclidean distance to its nearest allowed word (cosine), ``draws`` draws each;
    * ``other_seed``: agreement of a prompt trained with another seed (same data).
    """
    from promptaudit.translation import _nearest, _normalized

    soft_pred = soft_proba.argmax(1)
    top_two = np.sort(soft_proba, axis=1)[:, -2:]
    out = {"borderline_share": float((top_two[:, 1] - top_two[:, 0] < 0.2).mean())}
    prompt = prompted.prompt.detach().float()
    words = prompted.word_embeddings.detach()[allowed].float()
    nearest = words[_nearest(prompt, _normalized(words))[:, 0]]
    distance = (nearest - prompt).norm(dim=-1, keepdim=True)  # (n_positions, 1)
    out["distance_to_nearest_word"] = float(distance.mean())
    out["prompt_norm"] = float(prompt.norm(dim=-1).mean())
    generator = torch.Generator().manual_seed(0)
    for scale in (0.25, 0.5, 1.0):
        agreements = []
        for _ in range(draws):
            direction = _normalized(torch.randn(prompt.shape, generator=generator))
            moved = prompted.with_prompt(prompt + scale * distance * direction)
            agree = moved.predict_proba(held_texts).argmax(1) == soft_pred
            agreements.append(float(agree.mean()))
        out[f"perturbed_{scale:g}"] = {"mean": float(np.mean(agreements)),
                                       "min": min(agreements), "max": max(agreements)}
    if other_prompt:
        other, _, _ = load_prompted_model("builtin:minilm", other_prompt, device="cpu",
                                          max_length=64)
        agree = int((other.predict_proba(held_texts).argmax(1) == soft_pred).sum())
        out["other_seed"] = {"agreement": agree / len(held_texts),
                             "interval": wilson_interval(agree, len(held_texts))}
    return out


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    prompted, texts, labels = load_case(args.case, args.prompt, args.rows)
    settings = TranslateSettings(steps=args.steps, restarts=args.restarts, seed=args.seed,
                                 sweeps=args.sweeps, top_k=args.top_k,
                                 search_rows=args.search_rows, learning_rate=args.lr)
    print(f"case {args.case}: {prompted.num_virtual_tokens} virtual tokens, {len(texts)} rows, "
          f"threads {torch.get_num_threads()}, load {os.getloadavg()}")
    _, _, held = split_rows(len(texts), settings)
    held_texts = [texts[i] for i in held]
    soft_proba = prompted.predict_proba(held_texts)
    soft_pred = soft_proba.argmax(1)
    report = {"case": args.case, "rows": len(texts), "settings": settings.__dict__}
    allowed, _ = readable_vocabulary(prompted.tokenizer, prompted.word_embeddings.shape[0])
    if args.ceiling:
        report["ceiling"] = ceiling(prompted, held_texts, soft_proba, allowed, args.other_prompt)
        print(json.dumps(report["ceiling"], indent=1))
    else:
        translate_and_compare(args, prompted, texts, labels, held, soft_pred, settings, report)
    report["load_after"] = os.getloadavg()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


def translate_and_compare(args, prompted, texts, labels, held, soft_pred, settings,
                          report) -> None:
    """The baselines and the translation on the held-out rows, printed and put in ``report``."""
    held_texts = [texts[i] for i in held]
    allowed, _ = readable_vocabulary(prompted.tokenizer, prompted.word_embeddings.shape[0])
    allowed_set = set(allowed.tolist())

    def describe(name, ids, seconds=None, cpu=None):
        measured = agreement(prompted, ids, held_texts, soft_pred, labels[held])
        text = prompted.tokenizer.decode(ids)
        row = {"text": text, "token_ids": ids, **measured,
               "whole_words": sum(i in allowed_set for i in ids) / len(ids),
               "round_trip": round_trip_ids(prompted.tokenizer, ids),
               "seconds": seconds, "cpu_seconds": cpu}
        report[name] = row
        low, high = measured["interval"]
        print(f"{name:>16}: agreement {measured['agreement']:.3f} [{low:.3f}, {high:.3f}] "
              f"accuracy {measured['accuracy']:.3f} whole words {row['whole_words']:.0%} "
              f"round trip {row['round_trip']} "
              + (f"wall {seconds:.0f}s cpu {cpu:.0f}s " if seconds else "") + f"| {text}")

    if not args.no_baselines:
        nearest = _nearest_words(prompted, allowed, held_texts, soft_pred, labels[held])
        describe("nearest words", nearest["token_ids"])
    if not args.no_baselines and not args.no_plain_pez:
        wall, cpu = time.perf_counter(), time.process_time()
        ids = plain_pez(prompted, texts, settings)
        describe("plain PEZ", ids, time.perf_counter() - wall, time.process_time() - cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    translation = translate_prompt(prompted, texts, label_ids=labels, settings=settings)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    describe("translation", translation["token_ids"], wall, cpu)
    for run in translation["runs"]:
        print(f"   seed {run['seed']}: agreement {run['agreement']:.3f} "
              f"(validation {run['validation_agreement']:.3f}) steps {run['steps']} "
              f"sweeps {run['sweeps']} {run['seconds']:.0f}s | {run['text']}")
    print("   uniqueness:", json.dumps(translation["uniqueness"]))
    print(f"   soft prompt accuracy {translation['accuracy']['soft_prompt']}; load after "
          f"{os.getloadavg()}")
    report["translation_result"] = translation


if __name__ == "__main__":
    main()
