"""Binomial intervals shared by the explanation, translation and trend stages.

One implementation of each, so a share reported by two stages (an agreement, a rate)
gets the same interval everywhere:

* :func:`wilson_interval`: the Wilson score interval of ``successes / n``
  (agreement of a plain-language reading with the soft prompt, position importance,
  translation fidelity, bias-audit rates across periods);
* :func:`clopper_pearson_interval`: the exact binomial interval (a group's share of the
  departures, where counts can be tiny).

Nothing here imports torch.
"""

from __future__ import annotations

import math

__all__ = ["wilson_interval", "clopper_pearson_interval"]


def wilson_interval(
    successes: int, n: int, confidence: float = 0.95, *, z: float | None = None
) -> list[float] | None:
    """Wilson score interval of a binomial share ``successes / n``.

    Parameters
    ----------
    successes, n : int
        ``0 <= successes <= n``.
    confidence : float
        Two-sided level (``z`` is the normal quantile ``1 - (1 - confidence) / 2``).
    z : float, optional
        The quantile itself, instead of ``confidence``.

    Returns
    -------
    list of float or None
        ``[lower, upper]`` clipped to ``[0, 1]``; None when ``n`` is 0.

    Examples
    --------
    >>> [round(v, 4) for v in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> [round(v, 4) for v in wilson_interval(8, 20, z=1.959964)]
    [0.2188, 0.6134]
    >>> wilson_interval(0, 0) is None
    True
    """
    if n <= 0:
        return None
    if z is None:
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def clopper_pearson_interval(
    successes: int, n: int, confidence: float = 0.95
) -> list[float] | None:
    """Exact (Clopper-Pearson) binomial interval of ``successes / n``; None when ``n`` is 0.

    Examples
    --------
    >>> [round(v, 4) for v in clopper_pearson_interval(2, 10)]
    [0.0252, 0.5561]
    """
    from scipy.stats import beta

    if n <= 0:
        return None
    alpha = 1 - confidence
    lower = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    upper = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1,
                                                      n - successes))
    return [lower, upper]
