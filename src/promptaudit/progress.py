"""Stage progress of long commands, reported through :mod:`logging` (the CLI prints it).

Library code calls :func:`stage` when a stage starts: an INFO record on the
``promptaudit.progress`` logger with ``stage``, ``detail`` and ``estimate_s`` attributes,
which the CLI writes to stderr one line per stage. :class:`Timer` measures seconds per
item so the long stages that follow can state a time estimate.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator

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
        What is being done (``"attributing up to 200 examples"``).
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

    @contextlib.contextmanager
    def measure(self, n_items: int) -> Iterator[None]:
        """Time the block; ``per_item`` is set when it ends without an error."""
        started = time.perf_counter()
        yield
        if n_items > 0:
            self.per_item = (time.perf_counter() - started) / n_items

    def estimate(self, n_items: float, *, factor: float = 1.0) -> float | None:
        """Seconds for ``n_items`` items, each ``factor`` times a measured one (None if unknown)."""
        if self.per_item is None:
            return None
        return self.per_item * n_items * factor

