"""Independent check of a mitigation on text the project never trained or chose on.

Compares two prompts (before / after mitigation) on

* accuracy on an evaluation table with trusted labels (default ``builtin:screening``,
  600 clean rows the mitigation never saw);
* the gender gap on SST-2 dev sentences (``../shared/data/sst2/dev.tsv``, never used by
  the demo or the mitigation) rewritten into every gender group by ``builtin:identity``:
  demographic-parity ratio of the positive decision over the swapped sentences (each
  tuple holds the same sentence once per group, so only the identity terms differ;
  four-fifths rule: >= 0.8), flip rate and mean absolute probability change.

Usage::

    python benchmarks/check_mitigation_unseen.py BEFORE_ADAPTER AFTER_ADAPTER \\
        [--eval builtin:screening] [--positive accept] [--max-length 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

SST2_DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sst2" / "dev.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--model", default="builtin:minilm")
    parser.add_argument("--eval", default="builtin:screening")
    parser.add_argument("--positive", default="accept")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--sst2", type=Path, default=SST2_DEV)
    args = parser.parse_args()

    from promptaudit.corpora import make_counterfactuals
    from promptaudit.data import load_table
    from promptaudit.mitigation import evaluate_prompt
    from promptaudit.prompted import load_prompted_model

    frame = load_table(args.eval, required_columns=["text", "label"])
    sst2 = pd.read_csv(args.sst2, sep="\t", quoting=3, keep_default_na=False)
    tuples = make_counterfactuals(sst2["sentence"].astype(str).tolist(), "builtin:identity",
                                  features=["gender"])
    print(f"SST-2 dev: {len(sst2)} sentences, {tuples['tuple_id'].nunique()} with gender terms "
          f"-> {len(tuples)} swapped texts; accuracy on {args.eval} ({len(frame)} rows)")
    rows = []
    for name, adapter in (("before", args.before), ("after", args.after)):
        prompted, _, _ = load_prompted_model(args.model, adapter, max_length=args.max_length,
                                             batch_size=64)
        labels = prompted.labels
        ids = frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
        positive = labels.index(args.positive)
        on_eval = evaluate_prompt(prompted, frame["text"].tolist(), ids, tuples.iloc[:0],
                                  positive=positive)
        on_sst2 = evaluate_prompt(prompted, [], ids[:0], tuples, positive=positive)
        rows.append((name, on_eval["accuracy"], on_sst2["dp_ratio"], on_sst2["flip_rate"],
                     on_sst2["mean_abs_delta"]))
    print("| prompt | accuracy (eval) | DP ratio (SST-2 swaps) | flip rate | mean abs delta |")
    print("|---|---|---|---|---|")
    for name, acc, dp, flip, delta in rows:
        print(f"| {name} | {acc:.4f} | {dp:.4f} | {flip:.4f} | {delta:.4f} |")
    change = rows[1][1] - rows[0][1]
    print(f"accuracy change {change:+.4f}; four-fifths rule after: "
          f"{'met' if rows[1][2] >= 0.8 else 'NOT met'}; cost within 2 points: "
          f"{'yes' if change >= -0.02 else 'NO'}")


if __name__ == "__main__":
    main()
