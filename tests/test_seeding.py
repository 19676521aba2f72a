"""seed_everything: the same streams as seeding each library by hand, deterministic kernels on."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import torch

from promptaudit.seeding import seed_everything


def test_seeds_python_numpy_and_torch_like_seeding_each_by_hand():
    seed_everything(7)
    ours = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    assert ours[0] == random.random() and ours[1] == np.random.rand()
    assert torch.equal(ours[2], torch.rand(3))


def test_asks_torch_for_deterministic_kernels_with_warnings_only():
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(False)
    try:
        seed_everything(0)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_does_not_import_the_compiler():
    """The public setter imports torch._inductor (1.5 s); audits never compile."""
    code = ("import sys; from promptaudit.seeding import seed_everything; seed_everything(0); "
            "import torch; print(torch.are_deterministic_algorithms_enabled(), "
            "'torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["True", "False"]
