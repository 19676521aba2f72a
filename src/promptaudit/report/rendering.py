"""The jinja2 environments of the report: one per output kind, escaping on by default.

HTML templates autoescape; Markdown templates escape every printed value through
:func:`~promptaudit.report.escape.markdown_finalize` unless it is marked ``|verbatim``.
The number filters (``num``, ``pct``, ``interval``, ``pct_interval``, ``short``) are
the report's one formatting of figures (:mod:`promptaudit.report._common`).
"""

from __future__ import annotations

import re
from functools import lru_cache

from promptaudit.report import _common
from promptaudit.report.escape import Verbatim, markdown_finalize

__all__ = ["ONE_LINE_MARK", "environment"]


#: First line of a template written on many lines for reading whose output is one line.
ONE_LINE_MARK = "{# one line: line breaks and indentation here are layout, not output #}"


@lru_cache(maxsize=2)
def environment(kind: str):
    """The jinja2 environment of one output kind, with its escaping on by default.

    Parameters
    ----------
    kind : {"html", "markdown"}
        ``"html"``: autoescape (no ``|safe`` anywhere); ``"markdown"``: every printed
        value passes through :func:`markdown_finalize` (``|verbatim`` marks text that
        is Markdown already).

    Returns
    -------
    jinja2.Environment
        Templates from ``promptaudit/report/templates``, ``StrictUndefined``; a template
        that starts with :data:`ONE_LINE_MARK` loses its line breaks and indentation.
        Filters ``num``, ``pct``, ``interval``, ``pct_interval`` and ``short`` format values
        (:mod:`promptaudit.report._common`).
    """
    import jinja2
    from jinja2.ext import Extension

    class OneLine(Extension):
        def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
            if not source.startswith(ONE_LINE_MARK):
                return source
            return re.sub(r"\n[ \t]*", "", source[len(ONE_LINE_MARK):])

    html = kind == "html"
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("promptaudit.report", "templates"),
        autoescape=html,
        finalize=None if html else markdown_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=[OneLine],
    )
    env.filters.update(verbatim=Verbatim, num=_common.fmt_num, pct=_common.fmt_pct,
                       interval=_common.fmt_interval, pct_interval=_common.fmt_pct_interval,
                       short=_common.short_text)
    return env
