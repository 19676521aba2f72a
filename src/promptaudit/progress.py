"""Stage progress of long commands, reported through :mod:`logging` (the CLI prints it).

Library code calls :func:`stage` when a stage starts; the record goes to the
``promptaudit.progress`` logger at INFO level with ``stage``, ``detail`` and
``estimate_s`` attributes. The CLI attaches a handler that writes one line per stage
to stderr (``--quiet`` attaches none), so a run redirected to a file or under CI says
what it is doing; on a terminal the long stages also show tqdm bars.

:class:`Timer` measures a stage's rate (seconds per text) so the long stages that follow
(attribution, counterfactuals, a mitigation sweep) can state a time estimate.
"""

from __future__ import annotations

import logging
import math
import time

__all__ = ["PROGRESS_LOGGER", "stage", "format_duration", "Timer"]

#: The logger that carries stage records.
PROGRESS_LOGGER = "promptaudit.progress"

logger = logging.getLogger(PROGRESS_LOGGER)


def format_duration(seconds: float | None) -> str:
    """``"about 40 s"``, ``"about 3 min"``, ``"about 1.5 h"``; ``""`` when unknown.

    Examples
    --------
    >>> format_duration(42.4), format_duration(185), format_duration(5400), format_duration(None)
    ('about 42 s', 'about 3 min', 'about 1.5 h', '')
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def stage(name: str, detail: str = "", *, estimate_s: float | None = None) -> None:
    """Report that a stage starts: ``name`` (e.g. ``"attribution"``), what it does, an estimate.

    Parameters
    ----------
    name : str
        Short stage name.
    detail : str
        What is being done (``"attributing up to 200 examples, budget 2048 gradient
        evaluations"``).
    estimate_s : float, optional
        Expected duration in seconds (long stages).
    """
    estimate = format_duration(estimate_s)
    message = name + (f": {detail}" if detail else "") + (f" ({estimate})" if estimate else "")
    logger.info(message, extra={"stage": name, "detail": detail, "estimate_s": estimate_s})


class Timer:
    """Seconds per item of a timed block, for estimates of later stages.

    Examples
    --------
    >>> timer = Timer()
    >>> with timer.measure(10):
    ...     pass
    >>> timer.per_item is not None
    True
    """

    def __init__(self) -> None:
        self.per_item: float | None = None

    def measure(self, n_items: int) -> _Block:
        return _Block(self, n_items)

    def estimate(self, n_items: float, *, factor: float = 1.0) -> float | None:
        """Seconds for ``n_items`` items, each ``factor`` times a measured one (None if unknown)."""
        if self.per_item is None:
            return None
        return self.per_item * n_items * factor


class _Block:
    def __init__(self, timer: Timer, n_items: int) -> None:
        self.timer, self.n_items = timer, n_items

    def __enter__(self) -> _Block:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.n_items > 0 and exc[0] is None:
            self.timer.per_item = (time.perf_counter() - self.started) / self.n_items
