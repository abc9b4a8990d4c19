"""The catalog page the LossGuard tab links to: every diagnosis code, with an anchor each, from ``CATALOG``."""

from __future__ import annotations

from html import escape

from lightning_lossguard.catalog import CATALOG, CodeInfo

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LossGuard diagnosis codes</title>
<link rel="stylesheet" href="style.css"></head>
<body class="catalog">
<h1>LossGuard diagnosis codes</h1>
<p>What each code means, its default severity, what to try (most likely first) and when silencing it
is legitimate. Change a severity with <code>LossGuard(severity={{...}})</code>, silence a code with
<code>LossGuard(suppress=[...])</code>.</p>
<nav><ul>
{index}
</ul></nav>
{sections}
</body></html>
"""


def catalog_page() -> str:
    """The whole page as HTML; every text from the catalog is escaped."""
    index = "\n".join(
        f'<li><a href="#{escape(info.code)}"><code>{escape(info.code)}</code></a> {escape(info.title)}</li>'
        for info in CATALOG.values()
    )
    sections = "\n".join(_section(info) for info in CATALOG.values())
    return _PAGE.format(index=index, sections=sections)


def _section(info: CodeInfo) -> str:
    remedies = "".join(f"<li>{escape(r)}</li>" for r in info.remedies)
    return (
        f'<section class="code" id="{escape(info.code)}">'
        f"<h2><code>{escape(info.code)}</code> {escape(info.title)}</h2>"
        f'<p><span class="badge {escape(info.severity.value)}">{escape(info.severity.value)}</span> by default</p>'
        f"<p>{escape(info.meaning)}</p>"
        f"<h3>What to try</h3><ol>{remedies}</ol>"
        f"<h3>When silencing it is legitimate</h3><p>{escape(info.silence_when)}</p>"
        "</section>"
    )
