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
import errno
import json
import math
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_lossguard.diagnosis import Diagnosis, Severity, json_number, worst
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
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when LossGuard watched everything it should have (no coverage gap)."""
        return not self.gaps

    def worst(self) -> Severity | None:
        return worst(d.severity for d in self.diagnoses)


def write_report(
    path: str | os.PathLike[str],
    diagnoses: Sequence[Diagnosis],
    status: str,
    global_step: int,
    notes: Sequence[str] = (),
    fail_on: str | None = None,
    gaps: Sequence[Gap] = (),
    cost: Mapping[str, float] | None = None,
) -> Path:
    """Write the report atomically (a crash mid-write never leaves a truncated file). ``cost``: what LossGuard's
    own time came to and what its budget adapted (``budget``, ``share``, ``gradient_stride``, ...)."""
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
        **cost_entry(cost),
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


def cost_entry(cost: Mapping[str, float] | None) -> dict[str, dict[str, float | str]]:
    """The report's ``cost`` entry (none when there is no cost): its numbers as JSON holds them."""
    return {"cost": {k: json_number(v) for k, v in cost.items()}} if cost else {}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- reading ------------------------------------------------------------------------------------------------
MAX_REPORT_BYTES = 16 * 1024 * 1024
"""The largest file read as a report (16 MiB). A real report holds at most a few hundred diagnoses, kilobytes;
a bigger file is refused unread, so a stray file cannot cost minutes and gigabytes."""

MAX_STEP = 2**63 - 1
"""The largest step a report may name (Lightning counts steps in a 64-bit integer)."""

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class _Malformed(ValueError):
    """A field of a parsed report has the wrong type or range (the message names the field)."""


def read_report(path: str | os.PathLike[str]) -> Report:
    """Parse a report file; :class:`ReportError` says plainly what is wrong with it.

    Only a regular file of at most :data:`MAX_REPORT_BYTES` is read (a named pipe, a device or a socket is
    refused without being opened for reading); a symbolic link is followed unless it loops. Every field is
    checked for its type and range, so no content can make this raise anything but :class:`ReportError`.
    """
    source = Path(path)
    data = _parse_json(source, _read_text(source))
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ReportError(f"{source}: not a LossGuard report (no schema_version)")
    version = data["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ReportError(f"{source}: invalid schema_version ({_kind(version)})")
    if version > SCHEMA_VERSION:
        raise ReportError(
            f"{source}: schema_version {version} was written by a newer LossGuard; this one "
            f"({__version__}) reads up to {SCHEMA_VERSION}. Upgrade lightning-lossguard."
        )
    try:
        head = Report(
            path=source,
            status=_text(data.get("status", "finished"), "status"),
            global_step=_step(data.get("global_step", 0), "global_step"),
            notes=[_text(n, f"notes[{i}]") for i, n in enumerate(_list(data.get("notes", []), "notes"))],
            schema_version=version,
            fail_on=None if data.get("fail_on") is None else _text(data["fail_on"], "fail_on"),
            gaps=_gaps(data.get("coverage")),
            cost=_cost(data.get("cost")),
        )
    except _Malformed as error:
        raise ReportError(f"{source}: malformed report ({error})") from None
    try:
        entries = _list(data.get("diagnoses", []), "diagnoses")
        head.diagnoses = [_diagnosis(entry, f"diagnoses[{i}]") for i, entry in enumerate(entries)]
    except _Malformed as error:
        raise ReportError(f"{source}: malformed diagnosis entry ({error})") from None
    return head


def _read_text(source: Path) -> str:
    try:
        info = os.stat(source)
    except FileNotFoundError:
        if os.path.lexists(source):
            raise ReportError(f"{source}: a broken symbolic link (its target does not exist)") from None
        raise ReportError(f"{source}: no such file") from None
    except OSError as error:
        raise ReportError(f"{source}: cannot be read ({_os_reason(error)})") from None
    _refuse_unless_regular(source, info)
    try:
        # Non-blocking: should the file have become a named pipe since the check, opening it cannot hang.
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as error:
        raise ReportError(f"{source}: cannot be read ({_os_reason(error)})") from None
    try:
        _refuse_unless_regular(source, os.fstat(fd))
        chunks: list[bytes] = []
        left = MAX_REPORT_BYTES + 1  # one byte more tells a file that grew past the limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as error:
        raise ReportError(f"{source}: cannot be read ({_os_reason(error)})") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > MAX_REPORT_BYTES:
        _refuse_size(source, len(raw))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ReportError(f"{source}: not UTF-8 text (invalid byte at offset {error.start})") from None


def _refuse_unless_regular(source: Path, info: os.stat_result) -> None:
    for test, kind in _FILE_KINDS:
        if test(info.st_mode):
            raise ReportError(f"{source}: {kind}, not a report file (refused unread)")
    if not stat.S_ISREG(info.st_mode):
        raise ReportError(f"{source}: not a regular file (refused unread)")
    if info.st_size > MAX_REPORT_BYTES:
        _refuse_size(source, info.st_size)


def _refuse_size(source: Path, size: int) -> None:
    raise ReportError(
        f"{source}: {size / 2**20:.1f} MiB is more than a LossGuard report can be "
        f"(at most {MAX_REPORT_BYTES // 2**20} MiB): refused unread"
    )


def _os_reason(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "a symbolic link loop"
    return error.strerror or type(error).__name__


def _parse_json(source: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"{source}: not valid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise ReportError(f"{source}: not a LossGuard report (JSON nested too deeply)") from None
    except ValueError:  # an integer literal longer than Python converts (sys.get_int_max_str_digits)
        raise ReportError(f"{source}: not a LossGuard report (a number too long to read)") from None


def _kind(value: Any) -> str:
    """What a JSON value is, in words, without printing it (it may be huge)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return "an integer out of range"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return "infinity" if math.isinf(value) else "a fraction"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{where} must be a string, not {_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Malformed(f"{where} must be a list, not {_kind(value)}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"{where} must be an object, not {_kind(value)}")
    return value


def _field(entry: dict[str, Any], name: str, where: str) -> Any:
    if name not in entry:
        raise _Malformed(f"{where} has no {name!r}")
    return entry[name]


def _step(value: Any, where: str) -> int:
    integer = isinstance(value, int) and not isinstance(value, bool)
    integral = isinstance(value, float) and math.isfinite(value) and value.is_integer()
    if (integer or integral) and 0 <= value <= MAX_STEP:
        return int(value)
    raise _Malformed(f"{where} must be an integer from 0 to 2**63-1, not {_kind(value)}")


def _number(value: Any, where: str) -> float:
    try:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return float(value)  # "nan", "inf", "-inf": JSON has no such numbers
    except (ValueError, OverflowError):
        pass
    raise _Malformed(f"{where} must be a number or one of 'nan', 'inf', '-inf', not {_kind(value)}")


def _diagnosis(entry: Any, where: str) -> Diagnosis:
    entry = _object(entry, where)
    severity = _text(_field(entry, "severity", where), f"{where}.severity")
    if severity not in {s.value for s in Severity}:
        raise _Malformed(f"{where}.severity must be 'info', 'warning' or 'error'")
    evidence = _object(entry.get("evidence", {}), f"{where}.evidence")
    remedies = _list(entry.get("remedies", []), f"{where}.remedies")
    return Diagnosis(
        code=_text(_field(entry, "code", where), f"{where}.code"),
        severity=Severity(severity),
        step=_step(_field(entry, "step", where), f"{where}.step"),
        message=_text(_field(entry, "message", where), f"{where}.message"),
        evidence={k: _number(v, f"{where}.evidence") for k, v in evidence.items()},
        remedies=[_text(r, f"{where}.remedies[{i}]") for i, r in enumerate(remedies)],
        subject=_text(entry.get("subject", ""), f"{where}.subject"),
    )


def _cost(cost: Any) -> dict[str, float]:
    if cost is None:
        return {}  # written before the budget existed, or by a fit that never started
    return {_text(k, "cost key"): _number(v, f"cost.{k}") for k, v in _object(cost, "cost").items()}


def _gaps(coverage: Any) -> list[Gap]:
    if coverage is None:
        return []  # version 1: coverage was not recorded
    coverage = _object(coverage, "coverage")
    gaps = []
    for i, entry in enumerate(_list(coverage.get("gaps", []), "coverage.gaps")):
        where = f"coverage.gaps[{i}]"
        gap = _object(entry, where)
        signal = _text(_field(gap, "signal", where), f"{where}.signal")
        gaps.append(Gap(signal, _text(_field(gap, "reason", where), f"{where}.reason")))
    if coverage.get("complete") is False and not gaps:
        gaps = [Gap("unknown", "the report says coverage is incomplete without naming a gap")]
    return gaps


# -- finding ------------------------------------------------------------------------------------------------
def is_report_name(name: str) -> bool:
    """``lossguard.json``, or ``lossguard-<name>.json`` for a named LossGuard (never the ``.lossguard-*`` files
    of a write in progress)."""
    return name == REPORT_NAME or (name.startswith("lossguard-") and name.endswith(".json"))


def find_reports(path: str | os.PathLike[str]) -> list[Path]:
    """A report file itself, or every report under a directory, sorted (:func:`is_report_name`).

    A directory is searched recursively without following symbolic links to directories (no loops); anything
    with a report's name is returned, also a named pipe or a broken link, so that :func:`read_report` says
    what is wrong with it instead of it being silently skipped. A missing path gives ``[]``. Subdirectories
    that cannot be listed are skipped; :class:`OSError` when ``path`` itself cannot be.
    """
    root = Path(path)
    try:
        is_dir = stat.S_ISDIR(os.stat(root).st_mode)
    except OSError:
        return [root] if os.path.lexists(root) else []  # a broken link or a loop: read_report says which
    if not is_dir:
        return [root]
    found: list[str] = []
    pending = [os.fspath(root)]
    first = True
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif is_report_name(entry.name):
                        found.append(entry.path)
        except OSError:
            if first:
                raise
        first = False
    return [Path(p) for p in sorted(found, key=lambda p: p.split(os.sep))]
