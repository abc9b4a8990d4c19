"""``lossguard.json``: the run's diagnoses in a versioned schema, rewritten atomically.

Schema version 2 (``schema_version: 2``)::

    {
      "schema_version": 2,
      "lossguard_version": "0.1.0",
      "status": "running" | "finished" | "failed" | "alarm",
      "updated": "2026-11-22T07:30:00+00:00",
      "global_step": 120,
      "fail_on": "error" | "warning" | null,
      "counts": {"info": 0, "warning": 1, "error": 1},
      "diagnoses": [{"code", "severity", "step", "subject", "message", "evidence", "remedies"}, ...],
      "notes": ["signals that were unavailable, runs too short to judge, ..."],
      "coverage": {"complete": true, "gaps": [{"signal": "gradients", "reason": "..."}]}
    }

Evidence values are numbers, or the strings "nan"/"inf"/"-inf" (JSON has no such numbers). ``coverage``
lists what LossGuard should have measured and did not (version 2; a version-1 report reads as complete).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.version import __version__

SCHEMA_VERSION = 2
REPORT_NAME = "lossguard.json"
STATUSES = ("running", "finished", "failed", "alarm")


class ReportError(Exception):
    """A report file is missing, unreadable, or not a LossGuard report this version understands."""


@dataclass(frozen=True)
class Gap:
    """A signal LossGuard should have measured and did not, and why."""

    signal: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"signal": self.signal, "reason": self.reason}


@dataclass
class Report:
    """A parsed ``lossguard.json``."""

    path: Path
    status: str
    global_step: int
    diagnoses: list[Diagnosis] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    fail_on: str | None = None
    gaps: list[Gap] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when LossGuard watched everything it should have (no coverage gap)."""
        return not self.gaps

    def worst(self) -> Severity | None:
        ranks = [d.severity for d in self.diagnoses]
        return max(ranks, key=lambda s: s.rank) if ranks else None


def write_report(
    path: str | os.PathLike[str],
    diagnoses: Sequence[Diagnosis],
    status: str,
    global_step: int,
    notes: Sequence[str] = (),
    fail_on: str | None = None,
    gaps: Sequence[Gap] = (),
) -> Path:
    """Write the report atomically (a crash mid-write never leaves a truncated file)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    counts = {s.value: sum(d.severity is s for d in diagnoses) for s in Severity}
    payload = {
        "schema_version": SCHEMA_VERSION,
        "lossguard_version": __version__,
        "status": status,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "global_step": int(global_step),
        "fail_on": fail_on,
        "counts": counts,
        "diagnoses": [d.to_dict() for d in diagnoses],
        "notes": list(notes),
        "coverage": {"complete": not gaps, "gaps": [g.to_dict() for g in gaps]},
    }
    fd, tmp = tempfile.mkstemp(prefix=".lossguard-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, allow_nan=False)
            f.write("\n")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a report is meant to be read by CI and people
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_report(path: str | os.PathLike[str]) -> Report:
    """Parse a report file; :class:`ReportError` says plainly what is wrong with it."""
    source = Path(path)
    try:
        data: Any = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{source}: cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise ReportError(f"{source}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ReportError(f"{source}: not a LossGuard report (no schema_version)")
    version = data["schema_version"]
    if not isinstance(version, int) or version < 1:
        raise ReportError(f"{source}: invalid schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise ReportError(
            f"{source}: schema_version {version} was written by a newer LossGuard; this one "
            f"({__version__}) reads up to {SCHEMA_VERSION}. Upgrade lightning-lossguard."
        )
    try:
        return Report(
            path=source,
            status=str(data.get("status", "finished")),
            global_step=int(data.get("global_step", 0)),
            diagnoses=[Diagnosis.from_dict(d) for d in data.get("diagnoses", [])],
            notes=[str(n) for n in data.get("notes", [])],
            schema_version=version,
            fail_on=data.get("fail_on"),
            gaps=_gaps(data.get("coverage")),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ReportError(f"{source}: malformed diagnosis entry ({error!r})") from None


def _gaps(coverage: Any) -> list[Gap]:
    if coverage is None:
        return []  # version 1: coverage was not recorded
    if not isinstance(coverage, dict) or not isinstance(coverage.get("gaps", []), list):
        raise ValueError("coverage must be an object with a list of gaps")
    gaps = [Gap(str(g["signal"]), str(g["reason"])) for g in coverage.get("gaps", [])]
    if coverage.get("complete") is False and not gaps:
        gaps = [Gap("unknown", "the report says coverage is incomplete without naming a gap")]
    return gaps


def find_reports(path: str | os.PathLike[str]) -> list[Path]:
    """A report file itself, or every report under a directory (sorted): ``lossguard.json`` and, for named
    LossGuard instances, ``lossguard-<name>.json`` (never the ``.lossguard-*`` files of a write in progress)."""
    root = Path(path)
    if root.is_file():
        return [root]
    if root.is_dir():
        return sorted(
            p for p in root.rglob("lossguard*.json") if p.name == REPORT_NAME or p.name.startswith("lossguard-")
        )
    return []
