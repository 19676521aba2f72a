"""The HTML report as one PDF an auditor can sign and archive (``run --pdf``, ``pdf``).

The same page as ``<name>.html``, printed offline by headless Chromium; :data:`PDF_CSS`
keeps tables, figures and the verdict whole on a page. Without an engine the PDF commands
stop before any work with a one-line :class:`~promptaudit.errors.InputError` (exit 2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promptaudit.errors import InputError, PromptAuditError

__all__ = ["ENGINE_ENV", "PDF_CSS", "NO_ENGINE_MESSAGE", "find_pdf_engine", "require_pdf_engine",
           "render_pdf", "write_pdf"]

#: Environment variable naming the Chromium (or Chrome) executable to print with.
ENGINE_ENV = "PROMPTAUDIT_CHROMIUM"
_ENGINE_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

NO_ENGINE_MESSAGE = (
    "PDF: no PDF engine found (looked for {names} on PATH and ${env}); install Chromium "
    "(Debian/Ubuntu: apt-get install chromium) or set {env} to its executable"
)

#: Print rules added for the PDF (the report's own ``@media print`` rules still apply).
PDF_CSS = """
@media print {
  @page { size: A4; margin: 1.2cm; }
  html { font-size: 9.5pt; }
  table, figure, img, .summary, .verdict, .warnings, pre, dl.glossary { break-inside: avoid; }
  tr, td, th { break-inside: avoid; }
  h1, h2, h3, caption { break-after: avoid; }
  table { width: 100%; font-size: 7pt; }
  th, td { white-space: normal !important; padding: .15rem .25rem; }
  img { max-width: 100%; height: auto; }
}
"""


class PdfEngineError(PromptAuditError):
    """The engine ran but produced no PDF (an internal failure, not bad input)."""


def find_pdf_engine() -> str | None:
    """Path of the Chromium executable to print with (``$PROMPTAUDIT_CHROMIUM`` first)."""
    named = os.environ.get(ENGINE_ENV)
    if named:
        return shutil.which(named)
    return next((found for found in map(shutil.which, _ENGINE_NAMES) if found), None)


def require_pdf_engine() -> str:
    """:func:`find_pdf_engine`, or a one-line :class:`InputError` saying what to install."""
    engine = find_pdf_engine()
    if engine is None:
        raise InputError(NO_ENGINE_MESSAGE.format(names=", ".join(_ENGINE_NAMES), env=ENGINE_ENV))
    return engine


def print_html(html: str) -> str:
    """The report HTML with :data:`PDF_CSS` added at the end of its ``<head>``."""
    style = f"<style>{PDF_CSS}</style>\n"
    index = html.find("</head>")
    return html[:index] + style + html[index:] if index >= 0 else style + html


def render_pdf(result: Mapping[str, Any], *, engine: str | None = None,
               timeout: float = 180.0) -> bytes:
    """The report of ``result`` as PDF bytes.

    Parameters
    ----------
    result : mapping
        A result JSON.
    engine : str, optional
        Chromium executable; default :func:`require_pdf_engine`.
    timeout : float
        Seconds the engine may take.

    Raises
    ------
    InputError
        No engine is installed.
    PdfEngineError
        The engine failed or wrote no PDF.
    """
    from promptaudit.report.html import render_html

    engine = engine or require_pdf_engine()
    with tempfile.TemporaryDirectory(prefix="promptaudit-pdf-") as folder:
        work = Path(folder)
        page = work / "report.html"
        page.write_text(print_html(render_html(result)), encoding="utf-8")
        target = work / "report.pdf"
        command = [
            engine, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--disable-default-apps", "--no-pings",
            f"--user-data-dir={work / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--no-pdf-header-footer", f"--print-to-pdf={target}", page.as_uri(),
        ]
        try:
            process = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                     check=False)
        except subprocess.TimeoutExpired:
            raise PdfEngineError(f"PDF: {engine} did not finish in {timeout:.0f} s") from None
        if process.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            tail = (process.stderr or "").strip().splitlines()[-1:] or ["no message"]
            raise PdfEngineError(
                f"PDF: {engine} exited {process.returncode} without a PDF ({tail[0]})"
            )
        data = target.read_bytes()
    if not data.startswith(b"%PDF-"):
        raise PdfEngineError(f"PDF: {engine} wrote something that is not a PDF")
    return data


def write_pdf(result: Mapping[str, Any], path: str | Path, *, engine: str | None = None) -> Path:
    """Render the PDF of ``result`` and write it to ``path`` atomically; return the path."""
    from promptaudit.atomic import atomic_write_bytes

    return atomic_write_bytes(path, render_pdf(result, engine=engine))
