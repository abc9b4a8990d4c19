"""Rewrite the threshold table and the "How it decides" text of every code's section in docs/diagnoses.md from
the detectors' own declarations (default, valid range, meaning) and module docstrings, so the page never
drifts from the code.

    python docs/sync_thresholds.py
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from lightning_lossguard.detectors import DETECTORS
from lightning_lossguard.detectors.base import valid_range
from lightning_lossguard.outputs import OUTPUT_DETECTORS

DOC = Path(__file__).parent / "diagnoses.md"
HEADER = "| threshold | default | valid range | meaning |\n|---|---:|---|---|\n"


def table(detector: Any) -> str:
    import dataclasses

    thresholds = detector.Thresholds()
    rows = [
        f"| `{f.name}` | {getattr(thresholds, f.name):g} | {valid_range(f.metadata)} | {f.metadata.get('doc', '')} |"
        for f in dataclasses.fields(thresholds)
    ]
    return HEADER + "\n".join(rows) + "\n"


def decides(detector: Any) -> str | None:
    """The detector module's docstring after its first paragraph, as markdown: how it decides."""
    doc = inspect.getdoc(inspect.getmodule(detector)) or ""
    rest = doc.split("\n\n", 1)[1].strip() if "\n\n" in doc else ""
    if not rest:
        return None
    rest = re.sub(r"``([^`]+)``", r"`\1`", rest)
    rest = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", rest)  # :class:`~a.b.C` -> `C`
    return "**How it decides.**" + ("\n\n" if rest.startswith("- ") else " ") + rest + "\n\n"


DECIDES = re.compile(r"^\*\*How it decides\.\*\*.*?(?=^\*\*Remedies\*\*)", flags=re.MULTILINE | re.DOTALL)


def sync(text: str) -> str:
    for code, detector in {**DETECTORS, **OUTPUT_DETECTORS}.items():
        section = re.search(rf"^## `{code}`\n.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
        if section is None:
            raise SystemExit(f"docs/diagnoses.md has no section for {code}")
        body = section.group(0)
        old = re.search(r"^\| threshold \| default \|.*?\n(?:\|.*\n)+", body, flags=re.MULTILINE)
        new = (
            body.replace(old.group(0), table(detector)) if old else body.rstrip("\n") + "\n\n" + table(detector) + "\n"
        )
        how = decides(detector)
        if how is not None:
            if DECIDES.search(new):
                new = DECIDES.sub(lambda _, text=how: text, new, count=1)
            elif "**Remedies**" in new:
                new = new.replace("**Remedies**", how + "**Remedies**", 1)
        text = text.replace(body, new)
    return text


if __name__ == "__main__":
    DOC.write_text(sync(DOC.read_text()))
