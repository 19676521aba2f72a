"""Train the demo prompts shipped in ``src/promptaudit/demo_prompt*/``.

Usage: ``python scripts/train_demo_prompts.py [--only clean|biased] [--out-root DIR]``

Both prompts are PEFT prompt-tuning adapters for ``builtin:minilm`` trained on the
built-in screening corpus (``builtin:screening-train`` and
``builtin:screening-train-biased``, where 30% of women's accepts were flipped to
reject). Training is seeded, so anyone can reproduce the shipped adapters.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from promptaudit.corpora import SCREENING_LABELS, load_builtin_table
from promptaudit.data import encode_labels
from promptaudit.demo import DEMO_TRAINING, demo_prompt_dir
from promptaudit.training import CHECKPOINT_DIR, train_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["clean", "biased"])
    parser.add_argument("--out-root", type=Path, default=None,
                        help="write <root>/demo_prompt[_biased] instead of into the package")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    for variant, table in (("clean", "screening-train"), ("biased", "screening-train-biased")):
        if args.only and args.only != variant:
            continue
        frame = load_builtin_table(table, seed=0)
        labels = list(SCREENING_LABELS)
        ids = encode_labels(frame["label"], labels, source=f"builtin:{table}", column="label")
        out = demo_prompt_dir(variant)
        if args.out_root is not None:
            out = args.out_root / out.name
        result = train_prompt("builtin:minilm", frame["text"].tolist(), ids, labels=labels,
                              out_dir=out, config=DEMO_TRAINING, progress=True)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)  # resume state, not shipped
        print(variant, result.history)


if __name__ == "__main__":
    main()
