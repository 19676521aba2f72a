"""Built-in corpora: the demo screening tables and the identity term suite.

``builtin:NAME`` tables (:func:`load_builtin_table`, names in :data:`BUILTIN_TABLES`) use
labels ``reject``/``accept`` (positive ``accept``) in column ``label``, text in ``text`` and
sensitive features ``gender`` and ``race`` (columns: :mod:`promptaudit.corpora.screening`).
For ``seed=s`` evaluation tables use generator seed ``2s+1`` and training tables ``2s``, so
training and evaluation rows never share a generator stream.

Counterfactual term suites: :func:`load_term_suite` and :func:`make_counterfactuals`
(:mod:`promptaudit.corpora.identity`).
"""

from __future__ import annotations

import pandas as pd

from promptaudit.corpora.identity import (
    BUILTIN_IDENTITY,
    COUNTERFACTUAL_COLUMNS,
    TermFeature,
    TermSuite,
    load_term_suite,
    make_counterfactuals,
    swap_terms,
)
from promptaudit.corpora.screening import (
    SCREENING_LABELS,
    SCREENING_POSITIVE_LABEL,
    generate_screening,
)
from promptaudit.errors import DataError

__all__ = [
    "BUILTIN_IDENTITY",
    "BUILTIN_TABLES",
    "COUNTERFACTUAL_COLUMNS",
    "SCREENING_LABELS",
    "SCREENING_POSITIVE_LABEL",
    "TermFeature",
    "TermSuite",
    "generate_screening",
    "load_builtin_table",
    "load_term_suite",
    "make_counterfactuals",
    "swap_terms",
]

#: Built-in table name -> one-line description.
BUILTIN_TABLES = {
    "screening": "600 clean applicant descriptions for evaluation, balanced by gender and race",
    "screening-train": "2000 clean applicant descriptions for training",
    "screening-train-biased": "screening-train with 30% of women's accepts flipped to reject",
    "screening-pairs": "300 applicants each followed by a gender and race counterfactual twin",
}

ERR_UNKNOWN_TABLE = "builtin:{name}: unknown built-in table; available: {available}"
ERR_SEED = "builtin:{name}: seed must be an integer; got {seed!r}"


def load_builtin_table(name: str, *, seed: int = 0) -> pd.DataFrame:
    """Generate a built-in table by name (without the ``builtin:`` prefix).

    Parameters
    ----------
    name : str
        One of :data:`BUILTIN_TABLES`.
    seed : int
        Generator seed; the same seed gives the same table.

    Returns
    -------
    pandas.DataFrame
        ``(n_rows, n_columns)``, see :func:`generate_screening`.

    Raises
    ------
    DataError
        Unknown name (the message lists the available ones) or a non-integer seed.

    Examples
    --------
    >>> load_builtin_table("screening").shape[0]
    600
    """
    if name not in BUILTIN_TABLES:
        available = ", ".join(BUILTIN_TABLES)
        raise DataError(ERR_UNKNOWN_TABLE.format(name=name, available=available))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(ERR_SEED.format(name=name, seed=seed))
    if name == "screening":
        return generate_screening(600, seed=2 * seed + 1, balanced=True)
    if name == "screening-train":
        return generate_screening(2000, seed=2 * seed)
    if name == "screening-train-biased":
        return generate_screening(2000, seed=2 * seed, bias=0.3)
    return generate_screening(300, seed=2 * seed + 1, with_pairs=True)
