"""Reports rendered from the audit result alone (a JSON dict is read into the typed
:class:`~promptaudit.result.AuditResult` once, leniently, and rendered from its fields).

- :func:`render_html`: one self-contained HTML page (inline CSS, embedded figures,
  no script, no external reference).
- :func:`render_markdown`: a short summary for a PR comment or CI step summary.
- :func:`render_junit`: JUnit XML with one test case per gate.
- :func:`write_reports`: all four files (``.html``, ``.json``, ``.junit.xml``,
  ``.md``) written atomically.

Figures live in :mod:`promptaudit.report.figures`, every escaping rule in
:mod:`promptaudit.report.escape`, the templates in ``templates/``. The names above are
loaded on first use, so that the CLI can import the escaping module without the
plotting and templating stack.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "REPORT_SUFFIXES": "_writer",
    "complete_pending_reports": "_writer",
    "write_reports": "_writer",
    "escape_markdown": "escape",
    "render_html": "html",
    "render_junit": "junit",
    "render_markdown": "markdown",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
