"""The report of a fit that ran in other processes, for the LossGuard object the user holds.

Under ``strategy="ddp_spawn"`` and ``"ddp_notebook"`` (fork) Lightning runs the whole fit in child processes: the
``LossGuard`` in the launching process runs no hook, and its ``diagnoses`` would read as a clean run whatever the
children found. Rank 0 leaves the path of its report in a small file named when the object was built, and the
launching process reads that report back when asked (the file is removed once read, or when the process exits).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import uuid
from pathlib import Path

from lightning_lossguard.report.json_report import Report, ReportError, read_report


class Handoff:
    """Where a child process tells the process that built this object where its report is."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.path = Path(tempfile.gettempdir()) / f"lossguard-handoff-{self.pid}-{uuid.uuid4().hex}"
        atexit.register(_remove, self.path)  # a child leaves the file; its builder may never ask for it

    def elsewhere(self) -> bool:
        """Whether this process is not the one that built the object (a spawned or forked rank)."""
        return os.getpid() != self.pid

    def leave(self, report_path: str) -> None:
        """In a child: say where the report is (written whole, then renamed, so it is never read half-written)."""
        if not self.elsewhere():
            return
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        partial.write_text(report_path, encoding="utf-8")
        os.replace(partial, self.path)

    def take(self) -> Report | None:
        """In the builder: the report a child left since the last call (None if none, or if it cannot be read)."""
        if self.elsewhere():
            return None
        try:
            report_path = self.path.read_text(encoding="utf-8")
        except OSError:
            return None
        _remove(self.path)
        try:
            return read_report(report_path)
        except ReportError:
            return None


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
