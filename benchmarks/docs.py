"""Keeps the measured sections of docs/performance.md up to date (each benchmark owns one section)."""

from __future__ import annotations

from pathlib import Path

PERFORMANCE = Path(__file__).parents[1] / "docs" / "performance.md"


def replace_section(name: str, body: str, path: Path = PERFORMANCE) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` with ``body``."""
    text = path.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} section")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{body.strip()}\n{end}{tail}")
