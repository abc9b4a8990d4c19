"""Rewrite the threshold table of every code's section in docs/diagnoses.md from the detectors' own
declarations (default, valid range, meaning), so the page never drifts from the code.

    python docs/sync_thresholds.py
"""

from __future__ import annotations

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
        text = text.replace(body, new)
    return text


if __name__ == "__main__":
    DOC.write_text(sync(DOC.read_text()))
