"""Seed every random number generator an audit uses, and ask torch for deterministic kernels.

One small module so that every stage (and every process of a multi-process audit)
seeds the same way without importing the pipeline.
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ["seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch and ask torch for deterministic kernels.

    Parameters
    ----------
    seed : int
        ``0 <= seed < 2**32`` (numpy's range).
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # torch.use_deterministic_algorithms also imports torch._inductor (1.5 s of the demo's
    # start-up) to set the compiler's flag; audits never compile, so the eager flag is set
    # directly where torch offers the setter. Either way the flag is then True.
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)
