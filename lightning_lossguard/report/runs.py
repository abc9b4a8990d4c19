"""Which of the reports found under a log directory to judge: the latest run of each run family.

A log directory collects every run ever made: ``lightning_logs/version_0`` ... ``version_41``. Judging them
all would fail today's CI job on last week's bug, so by default only the latest run counts.

- A run is the directory holding a report; its **family** is the directory above it, together with the
  report's file name (``lossguard.json``, or ``lossguard-<name>.json`` for a named LossGuard). So
  ``lightning_logs/version_*/lossguard.json`` is one family, ``logs/exp_a/version_*/lossguard.json`` and
  ``logs/exp_b/version_*/lossguard.json`` are two.
- The **latest** run of a family: the highest ``N`` when every run directory in it is named ``version_N``
  (Lightning's own numbering, so a re-copied old run cannot win on its time stamp); otherwise the report
  written last (its modification time; ties go to the later name).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

_VERSION = re.compile(r"version_(\d{1,18})")  # a longer run of digits is no version number


def latest_runs(reports: Sequence[Path]) -> list[Path]:
    """The report of the latest run in each family, in the order given (see the module docstring)."""
    families: dict[tuple[Path, str], list[Path]] = {}
    for report in reports:
        families.setdefault((report.parent.parent, report.name), []).append(report)
    chosen = {_latest(runs) for runs in families.values()}
    return [r for r in reports if r in chosen]


def _latest(runs: list[Path]) -> Path:
    if len(runs) == 1:
        return runs[0]
    numbers: dict[Path, int] = {}
    for run in runs:
        match = _VERSION.fullmatch(run.parent.name)
        if match is None:
            return max(runs, key=lambda r: (_modified(r), r.parent.name))
        numbers[run] = int(match[1])
    return max(runs, key=numbers.__getitem__)


def _modified(path: Path) -> float:
    """The report's modification time; a link that cannot be followed counts by its own time."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        try:
            return os.lstat(path).st_mtime
        except OSError:
            return 0.0
