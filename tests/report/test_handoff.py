"""The handoff from a rank run in a child process to the object the user holds in the launching process."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.report.handoff import Handoff
from lightning_lossguard.report.json_report import write_report


def _leave_from_a_child(handoff: Handoff, report_path: str) -> None:
    handoff.leave(report_path)


def leave_in_child(handoff: Handoff, report_path: str) -> None:
    child = multiprocessing.get_context("fork").Process(target=_leave_from_a_child, args=(handoff, report_path))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0


def test_a_child_leaves_its_report_and_the_builder_takes_it_once(tmp_path: Path) -> None:
    report = write_report(
        tmp_path / "lossguard.json", [Diagnosis("nonfinite_loss", Severity.ERROR, 7, "NaN")], "alarm", 9
    )
    handoff = Handoff()
    handoff.leave(str(report))  # the builder's own fit leaves nothing: its object already holds the results
    assert handoff.take() is None
    leave_in_child(handoff, str(report))
    taken = handoff.take()
    assert taken is not None and taken.status == "alarm" and [d.code for d in taken.diagnoses] == ["nonfinite_loss"]
    assert not handoff.path.exists() and handoff.take() is None


def test_a_report_that_cannot_be_read_is_no_report(tmp_path: Path) -> None:
    handoff = Handoff()
    leave_in_child(handoff, str(tmp_path / "never-written.json"))  # e.g. the rank died before writing it
    assert handoff.take() is None and not handoff.path.exists()
