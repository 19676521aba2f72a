"""How text from a result (names, groups, messages, tokens) is made safe for each output.

One module for every escaping rule: Markdown (:func:`escape_markdown`, the Markdown
templates' ``finalize``), XML (:func:`strip_xml_invalid`, JUnit), the terminal
(:func:`escape_controls`, every console line of the CLI) and the one reading of a
vocabulary token (:func:`display_token`). HTML is escaped by jinja2's autoescape.
The three control-character sets share one C0 core and differ only where their
output does: XML cannot hold surrogates, a terminal obeys C1 and bidirectional
controls and shows a carriage return as an escape.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["NA", "PIECE_MARK", "Verbatim", "display_token", "escape_controls",
           "escape_markdown", "markdown_finalize", "strip_xml_invalid"]

#: What a value that could not be computed reads as.
NA = "n/a"

#: Marks a word piece (a WordPiece ``##`` continuation) where a token is shown.
PIECE_MARK = "\u2026"

#: C0 control characters but tab, line feed and carriage return.
_C0 = "\x00-\x08\x0b\x0c\x0e-\x1f"
#: Bidirectional marks and overrides: they reorder the text around them.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"

_MARKDOWN_CONTROL = re.compile(f"[{_C0}\x7f]")
_XML_INVALID = re.compile(f"[{_C0}\ud800-\udfff\ufffe\uffff]")
#: Printed raw these recolour a terminal, move its cursor or reorder text, so a file
#: that holds them could forge console output.
_TERMINAL_CONTROL = re.compile(f"[{_C0}\r\x7f-\x9f{_BIDI}]")
_NEWLINES = re.compile(r"[\r\n\u2028\u2029]+")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BACKSLASHED = set("\\`*_[]|~$")
_WORD_START = ("\u0120", "\u2581")  # byte-level BPE and SentencePiece word-start markers


def escape_markdown(value: Any) -> str:
    """Escape text so that GitHub-flavoured Markdown shows it literally.

    Control characters are dropped, line breaks become spaces (safe inside table
    cells), ``& < >`` become HTML entities (no raw HTML), and the characters
    ``\\ ` * _ [ ] | ~ $`` are backslash-escaped (no emphasis, code, links,
    table cells, strike-through or math).

    Parameters
    ----------
    value : object
        Anything; ``None`` renders as ``"n/a"``.

    Returns
    -------
    str

    Examples
    --------
    >>> escape_markdown("**bold** | [link](http://x) <b>")
    '\\\\*\\\\*bold\\\\*\\\\* \\\\| \\\\[link\\\\](http://x) &lt;b&gt;'
    """
    if value is None:
        return NA
    text = _NEWLINES.sub(" ", _MARKDOWN_CONTROL.sub("", str(value)))
    out = []
    for char in text:
        if char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char in _BACKSLASHED:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


class Verbatim(str):
    """Text that is already Markdown (a metric key, a formatted interval): printed as is."""


def markdown_finalize(value: Any) -> str:
    """The Markdown templates' ``finalize``: escape every printed value but :class:`Verbatim`."""
    return value if isinstance(value, Verbatim) else escape_markdown(value)


def strip_xml_invalid(value: Any) -> str:
    """``value`` as text without the characters XML 1.0 cannot hold (C0 controls, surrogates)."""
    return _XML_INVALID.sub("", str(value))


def escape_controls(text: object, *, keep_newlines: bool = True) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``), never emitted.

    Applied to every console line the CLI builds from file contents (errors, warnings,
    verdicts, gate messages). Newlines and tabs are kept unless ``keep_newlines`` is False.

    Examples
    --------
    >>> escape_controls("red \\x1b[31m\\u202e", keep_newlines=False)
    'red \\\\x1b[31m\\\\u202e'
    """
    text = str(text)
    if not keep_newlines:
        text = text.replace("\n", "\\n").replace("\r", "\\r")

    def shown(match: re.Match) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _TERMINAL_CONTROL.sub(shown, text)


def display_token(token: Any, display: Any = None) -> str:
    """A vocabulary token as a reader sees it.

    A WordPiece continuation ``##ing`` reads ``…ing``; otherwise the projection's
    ``display`` form (or, in results without one, the raw token) without its
    byte-level BPE / SentencePiece word-start marker and surrounding spaces.

    Parameters
    ----------
    token : object
        The raw vocabulary token (``None`` reads as empty).
    display : object, optional
        The readable form the projection stage recorded for it.

    Returns
    -------
    str

    Examples
    --------
    >>> display_token("##ing"), display_token("\\u0120movie"), display_token("x", " film")
    ('…ing', 'movie', 'film')
    """
    token = "" if token is None else str(token)
    if token.startswith("##") and len(token) > 2:
        return PIECE_MARK + token[2:]
    text = str(display) if display not in (None, "") else token
    if len(text) > 1 and text[0] in _WORD_START:
        text = text[1:]
    return text.strip() or text
