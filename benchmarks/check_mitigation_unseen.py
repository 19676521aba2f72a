"""Independent check of a mitigation on text the project never trained or chose on.

Two modes.

**Two prompts** (``BEFORE AFTER``): compares a prompt before and after mitigation on

* accuracy on an evaluation table with trusted labels (default ``builtin:screening``,
  600 clean rows the mitigation never saw);
* the gender gap on the identity corpus below (SST-2, never used by the demo or the
  mitigation).

**SST-2 prompt** (``--sst2-prompt P``, the experiment of the mitigation issue): ``P`` is a
prompt trained on SST-2 (labels ``negative,positive``). It is mitigated here with
:func:`promptaudit.mitigation.mitigate_prompt` on ``--rows`` SST-2 *train* sentences
(CLP over gender swaps of those same sentences, ``--weights``, ``--epochs``; the weight is
chosen on the seeded validation split of those rows), then the original and the chosen
prompt are measured on data neither the mitigation nor its choice saw: accuracy on the 872
SST-2 dev sentences, and the gender gap on the identity corpus.

The identity corpus: every SST-2 dev sentence with a gender term plus the first
``--identity-train`` (400) such sentences from SST-2 train rows at or after
``--identity-from`` (30000, past the rows prompts and mitigations here train on), each
rewritten into every gender group (female, male, nonbinary) by ``builtin:identity``: 511
sentences, 1533 texts.

Figures on the identity corpus: the demographic-parity ratio of the positive decision over
the groups (each tuple holds one sentence per group, so only identity terms differ;
four-fifths rule: >= 0.8) with a 95% percentile bootstrap interval over tuples, the flip
rate and the mean absolute probability change.

Usage::

    python benchmarks/check_mitigation_unseen.py BEFORE_ADAPTER AFTER_ADAPTER \\
        [--eval builtin:screening] [--positive accept] [--max-length 64]
    python benchmarks/check_mitigation_unseen.py --sst2-prompt ADAPTER --out DIR \\
        [--rows 2000] [--weights 3] [--epochs 1] [--learning-rate 0.003] [--sst2 DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

SST2_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sst2"
SST2_LABELS = ["negative", "positive"]


def read_sst2(path: Path) -> pd.DataFrame:
    """``sentence``, ``label`` (0 negative, 1 positive) of an SST-2 TSV file."""
    return pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False)


def gender_tuples(sentences: list[str]) -> pd.DataFrame:
    """Gender counterfactual tuples (``builtin:identity``) of the sentences with a gender term."""
    from promptaudit.corpora import make_counterfactuals

    return make_counterfactuals(sentences, "builtin:identity", features=["gender"])


def identity_corpus(args) -> pd.DataFrame:
    """Gender tuples of every SST-2 dev sentence with a gender term and of the first
    ``args.identity_train`` such sentences of SST-2 train from row ``args.identity_from``."""
    dev = read_sst2(args.sst2 / "dev.tsv")
    later = read_sst2(args.sst2 / "train.tsv").iloc[args.identity_from :]
    found = gender_tuples(later["sentence"].astype(str).tolist())
    keep = (found["tuple_id"] < args.identity_train) & found["is_original"]
    return gender_tuples(dev["sentence"].astype(str).tolist() + found.loc[keep, "text"].tolist())


def dp_ratio_interval(
    tuples: pd.DataFrame, positive_pred: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the DP ratio, resampling whole tuples.

    Parameters
    ----------
    tuples : DataFrame
        ``(m,)`` rows with ``tuple_id`` and ``group``.
    positive_pred : ndarray
        ``(m,)`` 0/1 positive decisions.
    """
    frame = pd.DataFrame({"tuple": tuples["tuple_id"].to_numpy(),
                          "group": tuples["group"].astype(str).to_numpy(),
                          "pos": positive_pred})
    table = frame.pivot_table(index="tuple", columns="group", values="pos", aggfunc="mean")
    values = table.to_numpy()
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(n_boot):
        rates = np.nanmean(values[rng.integers(0, len(values), len(values))], axis=0)
        if rates.max() > 0:
            ratios.append(rates.min() / rates.max())
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


class CachedPredictions:
    """``predict_proba`` of a prompted model, each distinct text predicted once."""

    def __init__(self, prompted) -> None:
        self.prompted = prompted
        self.cache: dict[str, np.ndarray] = {}

    def predict_proba(self, texts) -> np.ndarray:
        texts = [str(t) for t in texts]
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.cache.update(zip(missing, self.prompted.predict_proba(missing), strict=True))
        return np.array([self.cache[t] for t in texts]).reshape(len(texts), -1)


def measure(prompted, texts, label_ids, tuples, positive: int) -> dict:
    """Accuracy on ``texts`` and the gap figures on ``tuples`` (with the DP interval)."""
    from promptaudit.mitigation import evaluate_prompt

    prompted = CachedPredictions(prompted)
    on_eval = evaluate_prompt(prompted, texts, label_ids, tuples.iloc[:0], positive=positive)
    on_tuples = evaluate_prompt(prompted, [], label_ids[:0], tuples, positive=positive)
    probs = prompted.predict_proba(tuples["text"].astype(str).tolist())
    interval = dp_ratio_interval(tuples, (probs.argmax(axis=1) == positive).astype(int))
    return {"accuracy": on_eval["accuracy"], **{k: on_tuples[k] for k in
            ("dp_ratio", "flip_rate", "mean_abs_delta")}, "dp_interval": interval,
            "positive_rate": float((probs.argmax(axis=1) == positive).mean())}


def print_rows(rows: list[tuple[str, dict]], eval_name: str, corpus_name: str) -> None:
    print(f"| prompt | accuracy ({eval_name}) | DP ratio ({corpus_name}) [95% CI] "
          "| positive rate | flip rate | mean abs delta |")
    print("|---|---|---|---|---|---|")
    for name, row in rows:
        low, high = row["dp_interval"]
        print(f"| {name} | {row['accuracy']:.4f} | {row['dp_ratio']:.4f} [{low:.2f}, {high:.2f}] "
              f"| {row['positive_rate']:.3f} | {row['flip_rate']:.4f} "
              f"| {row['mean_abs_delta']:.4f} |")
    before, after = rows[0][1], rows[-1][1]
    change = after["accuracy"] - before["accuracy"]
    print(f"accuracy change {change:+.4f}; DP ratio {before['dp_ratio']:.4f} -> "
          f"{after['dp_ratio']:.4f}; four-fifths rule after: "
          f"{'met' if after['dp_ratio'] >= 0.8 else 'NOT met'} (lower 95% bound "
          f"{after['dp_interval'][0]:.2f}); cost within 2 points: "
          f"{'yes' if change >= -0.02 else 'NO'}")


def two_prompts(args) -> None:
    from promptaudit.data import load_table
    from promptaudit.prompted_model import load_prompted_model

    frame = load_table(args.eval, required_columns=["text", "label"])
    tuples = identity_corpus(args)
    print(f"identity corpus: {tuples['tuple_id'].nunique()} SST-2 sentences with gender terms "
          f"(dev, and train rows >= {args.identity_from}) -> {len(tuples)} texts; accuracy on "
          f"{args.eval} ({len(frame)} rows)")
    rows = []
    for name, adapter in (("before", args.before), ("after", args.after)):
        prompted, _, _ = load_prompted_model(args.model, adapter, max_length=args.max_length,
                                             batch_size=64)
        ids = frame["label"].map({label: i for i, label in enumerate(prompted.labels)})
        positive = prompted.labels.index(args.positive)
        rows.append((name, measure(prompted, frame["text"].tolist(), ids.to_numpy(), tuples,
                                   positive)))
    print_rows(rows, args.eval, "identity corpus")


def sst2_prompt(args) -> None:
    from promptaudit.mitigation import MitigationSettings, mitigate_prompt
    from promptaudit.prompted_model import load_prompted_model

    train = read_sst2(args.sst2 / "train.tsv")
    dev = read_sst2(args.sst2 / "dev.tsv")
    rows = train.iloc[args.offset : args.offset + args.rows]
    if args.identity_from < args.offset + args.rows:
        raise SystemExit("--identity-from must lie past the mitigation rows")
    tuples = identity_corpus(args)
    print(f"mitigation data: SST-2 train rows {args.offset}..{args.offset + args.rows - 1}; "
          f"identity corpus: {tuples['tuple_id'].nunique()} sentences with gender terms "
          f"(SST-2 dev and train rows >= {args.identity_from}) -> {len(tuples)} texts; "
          f"accuracy on SST-2 dev ({len(dev)})")
    settings = MitigationSettings(
        weights=tuple(args.weights), epochs=args.epochs, learning_rate=args.learning_rate,
        max_length=args.max_length, features=("gender",), max_accuracy_drop=0.02,
        validation_fraction=args.validation_fraction, batch_size=32,
    )
    started = time.perf_counter()
    outcome = mitigate_prompt(
        args.model, args.sst2_prompt, rows["sentence"].astype(str).tolist(),
        rows["label"].to_numpy(), labels=SST2_LABELS, positive_label="positive",
        out_dir=args.out, settings=settings, progress=False, resume=True,
    )
    print(f"mitigation: {time.perf_counter() - started:.0f} s, "
          f"{outcome.record['data']['n_train_texts_with_variants']} training sentences with "
          f"swaps, {outcome.record['n_pairs']} pairs used; {outcome.message}")
    from promptaudit.report.before_after import tradeoff_markdown

    print(tradeoff_markdown(outcome.table, settings.max_accuracy_drop))
    candidates = [("before", args.sst2_prompt)]
    if outcome.mitigated:
        candidates.append((f"after (weight {outcome.chosen_weight:g})", outcome.adapter_dir))
    measured = []
    for name, adapter in candidates:
        prompted, _, _ = load_prompted_model(args.model, str(adapter),
                                             max_length=args.max_length, batch_size=64)
        measured.append((name, measure(prompted, dev["sentence"].astype(str).tolist(),
                                       dev["label"].to_numpy(), tuples, 1)))
    if len(measured) == 1:
        print("no weight met the accuracy budget on the validation split: nothing to compare")
        measured.append(measured[0])
    print_rows(measured, "SST-2 dev", "identity corpus")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", nargs="?")
    parser.add_argument("after", nargs="?")
    parser.add_argument("--model", default="builtin:minilm")
    parser.add_argument("--eval", default="builtin:screening")
    parser.add_argument("--positive", default="accept")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--sst2", type=Path, default=SST2_DIR, help="folder of SST-2 TSVs")
    parser.add_argument("--sst2-prompt", help="an SST-2 prompt to mitigate and check")
    parser.add_argument("--out", type=Path, help="where the mitigated SST-2 prompt goes")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--weights", type=float, nargs="+", default=[3.0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=0.003)
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--identity-from", type=int, default=30000)
    parser.add_argument("--identity-train", type=int, default=400)
    args = parser.parse_args()
    if args.sst2_prompt:
        if args.out is None:
            parser.error("--sst2-prompt needs --out")
        sst2_prompt(args)
    elif args.before and args.after:
        two_prompts(args)
    else:
        parser.error("give BEFORE AFTER, or --sst2-prompt with --out")


if __name__ == "__main__":
    main()
