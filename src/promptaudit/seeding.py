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
    deterministic_kernels()


def deterministic_kernels() -> None:
    """Ask torch for deterministic kernels (a warning where an op has none).

    ``torch.use_deterministic_algorithms`` also imports ``torch._inductor`` (1.5 s
    of the demo's start-up with torch 2.13) to set the compiler's flag; audits
    never compile, so the eager flag is set directly when torch offers the
    setter, and the public call is the fallback. Either way
    ``torch.are_deterministic_algorithms_enabled()`` is then True.
    """
    import torch

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
        return
    setter(True, warn_only=True)
