"""Exact comparisons of rates and rate ratios with thresholds (pure; no numpy).

In floating point ``(20 / 30) / (25 / 30)`` is ``0.7999999999999999``, so a ratio of
exactly 4/5 would be flagged as under the four-fifths line. Wherever a rate or a ratio of
rates meets a threshold ``t = p / q`` (read as the decimal it was written as,
:func:`exact_threshold`), promptaudit decides on the integer counts instead:
``s1 * n2 * q >= p * s2 * n1``. Results still show the float ratio.
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Rational

__all__ = ["exact_threshold", "rate_ratio", "ratio_at_least"]


def exact_threshold(value: float | int | Fraction | str) -> Fraction:
    """The threshold as the decimal it was written as.

    A float is read through its shortest round-tripping decimal (``repr``), which
    is what a user typed in YAML or on the command line.

    Examples
    --------
    >>> exact_threshold(0.8), exact_threshold(1), exact_threshold("0.05")
    (Fraction(4, 5), Fraction(1, 1), Fraction(1, 20))
    """
    if isinstance(value, bool):
        raise TypeError(f"threshold {value!r} is not a number")
    if isinstance(value, Rational):
        return Fraction(value)
    if isinstance(value, str):
        return Fraction(value.strip())
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"threshold {value!r} is not a finite number")
    return Fraction(repr(number))


def rate_ratio(s1: int, n1: int, s2: int, n2: int) -> Fraction | None:
    """``(s1 / n1) / (s2 / n2)`` exactly; None when undefined (an empty group or ``s2 == 0``).

    Examples
    --------
    >>> rate_ratio(20, 30, 25, 30)
    Fraction(4, 5)
    """
    if n1 == 0 or n2 == 0 or s2 == 0:
        return None
    return Fraction(int(s1) * int(n2), int(s2) * int(n1))


def ratio_at_least(s1: int, n1: int, s2: int, n2: int, threshold) -> bool:
    """Whether ``(s1 / n1) / (s2 / n2) >= threshold``, decided on the integer counts.

    ``s1 * n2 * q >= p * s2 * n1`` with ``threshold = p / q`` read by
    :func:`exact_threshold`; needs ``n1, n2 > 0`` and ``s2 > 0``.

    Examples
    --------
    >>> (20 / 30) / (25 / 30) >= 0.8, ratio_at_least(20, 30, 25, 30, 0.8)
    (False, True)
    """
    if n1 <= 0 or n2 <= 0 or s2 <= 0:
        raise ValueError(f"ratio ({s1}/{n1}) / ({s2}/{n2}) is undefined")
    t = exact_threshold(threshold)
    return int(s1) * int(n2) * t.denominator >= t.numerator * int(s2) * int(n1)
