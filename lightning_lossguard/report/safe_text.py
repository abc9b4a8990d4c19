"""Text from a report, made safe for the place it is shown: a terminal, markdown, XML, a GitHub workflow command.

A report's strings (messages, codes, layer names, remedies, evidence names, notes, gap reasons, paths) may
hold anything: line breaks, terminal escape sequences, markup, bytes that were not UTF-8. Each output escapes
them for its own syntax, so that text stays text: it never starts a line, a heading, an image, a tag or a
colour of its own. Whatever is escaped stays visible (``\\x1b``), so a strange name is still recognisable.
"""

from __future__ import annotations

import re

# Controls (C0, DEL, C1), bidirectional overrides and marks (they reorder what a reader sees), line and paragraph
# separators, the byte-order mark, lone surrogates (a file name that was not UTF-8) and the two non-characters
# XML forbids.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff\ufeff\ufffe\uffff]")
_BREAKS = re.compile("\r\n|[\t\n\v\f\r\x85\u2028\u2029]")
# Markdown's inline syntax, escaped wherever the text lands (``<``, ``>``, ``&`` become entities: HTML). An
# underscore inside a word emphasises nothing, so ``gradient_clip_val`` stays as it is.
_MARKDOWN_INLINE = re.compile(r"[\\`*\[\]|<>&]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
# What starts a block when it opens a line: a heading, a list item, a rule, a quote.
_MARKDOWN_BLOCK_START = re.compile(r"^(?:[#+-]|\d+[.)])")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as Python decodes file names (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str, keep: str = "") -> str:
    """Every unsafe character as a visible escape (ESC becomes ``\\x1b``), except those in ``keep``."""
    if not keep:
        return _UNSAFE.sub(_visible, text)
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _visible(m), text)


def one_line(text: str) -> str:
    """Text for one line of a terminal or log: line breaks and tabs become spaces, other controls escapes."""
    return escape_controls(_BREAKS.sub(" ", text))


def markdown_text(text: str) -> str:
    """Text for a markdown paragraph, list item or table cell (GitHub-flavoured and TensorBoard's renderer).

    One line; markdown's inline syntax backslash-escaped and ``<``, ``>``, ``&`` written as entities, so no
    link, image, emphasis, code span, HTML tag or table cell can start inside it; a leading ``#``, ``-``,
    ``+`` or ``1.`` is escaped so it cannot open a heading, a list or a rule either.
    """
    line = one_line(text).strip()
    line = _MARKDOWN_INLINE.sub(lambda m: _ENTITIES.get(m.group(), "\\" + m.group()), line)
    if _MARKDOWN_BLOCK_START.match(line):
        digits = len(line) - len(line.lstrip("0123456789"))
        line = line[:digits] + "\\" + line[digits:]
    return line


def markdown_code(text: str) -> str:
    """An identifier (a code, a layer, a path) as a markdown code span, or as escaped text when it cannot be one.

    A code span ends at the next backtick and a table cell at the next ``|``, whatever escaping is inside, so
    text holding either (or nothing) is written as plain escaped text instead.
    """
    line = one_line(text).strip()
    if not line or "`" in line or "|" in line:
        return markdown_text(text)
    return f"`{line}`"


def xml_text(text: str) -> str:
    """Text for an XML element or attribute: characters XML 1.0 cannot hold become visible escapes.

    ElementTree escapes ``<``, ``&``, quotes and (in attributes) line breaks itself; it does not refuse other
    controls or lone surrogates, which make the file unparseable (or unwritable as UTF-8).
    """
    return escape_controls(text, keep="\t\n\r")


def workflow_data(text: str) -> str:
    """The message of a GitHub Actions workflow command (``::error::<here>``): one line, as the runner requires.

    ``%``, ``\\r`` and ``\\n`` are written ``%25``, ``%0D`` and ``%0A`` (the runner turns them back into a
    multi-line message); other controls become visible escapes.
    """
    safe = escape_controls(text, keep="\r\n")
    return safe.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def workflow_property(text: str) -> str:
    """A property of a GitHub Actions workflow command (``title=<here>``): also ``:`` and ``,`` escaped."""
    return workflow_data(text).replace(":", "%3A").replace(",", "%2C")
