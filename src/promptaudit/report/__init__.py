"""Reports rendered from the audit result alone (a JSON dict is read into the typed
:class:`~promptaudit.results.AuditResult` once, leniently, and rendered from its fields).

- :func:`render_html`: one self-contained HTML page (inline CSS, embedded figures,
  no script, no external reference).
- :func:`render_markdown`: a short summary for a PR comment or CI step summary.
- :func:`render_junit`: JUnit XML with one test case per gate.
- :func:`write_reports`: all four files (``.html``, ``.json``, ``.junit.xml``,
  ``.md``) written atomically.

Figures live in :mod:`promptaudit.report.figures`.
"""

from __future__ import annotations

from promptaudit.report._writer import (
    REPORT_SUFFIXES,
    complete_pending_reports,
    write_reports,
)
from promptaudit.report.html import render_html
from promptaudit.report.junit import render_junit
from promptaudit.report.markdown import escape_markdown, render_markdown

__all__ = [
    "REPORT_SUFFIXES",
    "complete_pending_reports",
    "escape_markdown",
    "render_html",
    "render_junit",
    "render_markdown",
    "write_reports",
]
