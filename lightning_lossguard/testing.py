"""Assertions for your own test suite: fail a test when LossGuard diagnosed a training run.

Example::

    import lightning as L
    from lightning_lossguard import LossGuard
    from lightning_lossguard.testing import assert_healthy

    def test_training_is_healthy(tmp_path):
        guard = LossGuard(report_every=10, verbose=False)
        trainer = L.Trainer(max_steps=100, default_root_dir=tmp_path, callbacks=[guard])
        trainer.fit(MyModel(), train_loader)
        assert_healthy(guard)                       # no warning or error
        assert_healthy(tmp_path, fail_on="error")   # or from the lossguard.json files it left
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeAlias

from lightning_lossguard.callback import LossGuard
from lightning_lossguard.catalog import cause_first
from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.report.json_report import REPORT_NAME, Gap, Report, ReportError, find_reports, read_report

Source: TypeAlias = LossGuard | Report | Sequence[Diagnosis] | str | os.PathLike[str]
"""What :func:`assert_healthy` accepts."""


def assert_healthy(
    source: Source,
    fail_on: Severity | Literal["info", "warning", "error"] = "warning",
    allow_gaps: bool = False,
) -> None:
    """Raise :class:`AssertionError` when ``source`` holds a diagnosis at or above ``fail_on``, or when LossGuard
    could not watch all of the run (coverage gaps) and ``allow_gaps`` is False.

    Args:
        source: a :class:`~lightning_lossguard.LossGuard` after ``fit`` (its ``diagnoses`` and ``gaps``), a
            parsed :class:`~lightning_lossguard.report.json_report.Report`, a list of
            :class:`~lightning_lossguard.Diagnosis`, or a path: a ``lossguard.json`` file or a log directory
            searched recursively (every report found is checked).
        fail_on: the lowest severity that fails: ``"warning"`` (default), ``"error"``, or ``"info"`` (any
            diagnosis fails).
        allow_gaps: True accepts a run that LossGuard could not watch entirely (a gap is a signal it should
            have measured and did not: an internal error, a tensor type it cannot read). By default a gap
            fails, since a run nobody watched cannot be called healthy.

    Raises:
        AssertionError: listing each offending diagnosis (cause first) with its step, message, evidence and
            remedies, then each coverage gap; also when a path holds no readable report.

    Example:
        >>> from lightning_lossguard import Diagnosis, Severity
        >>> assert_healthy([Diagnosis("loss_scale_shift", Severity.INFO, 40, "The loss scale shifted.")])
        >>> assert_healthy([Diagnosis("loss_plateau", Severity.WARNING, 90, "The loss never fell.")])
        Traceback (most recent call last):
        ...
        AssertionError: LossGuard found 1 diagnosis at or above warning:
        - step 90: warning loss_plateau: The loss never fell.
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this helper's
    level = Severity(fail_on)
    offending: list[str] = []
    missing: list[str] = []
    count = 0
    for label, diagnoses, gaps in _findings_of(source):
        found = cause_first(d for d in diagnoses if d.severity.at_least(level))
        count += len(found)
        offending += [_describe(d, label) for d in found]
        if not allow_gaps:
            missing += [_describe_gap(g, label) for g in gaps]
    parts = []
    if count:
        noun = "diagnosis" if count == 1 else "diagnoses"
        parts.append(f"LossGuard found {count} {noun} at or above {level.value}:\n" + "\n".join(offending))
    if missing:
        parts.append(
            "LossGuard could not watch all of the run (coverage gaps; allow_gaps=True accepts them):\n"
            + "\n".join(missing)
        )
    if parts:
        raise AssertionError("\n".join(parts))


def _findings_of(source: Source) -> list[tuple[str, Sequence[Diagnosis], Sequence[Gap]]]:
    """``(where, diagnoses, gaps)`` triples; ``where`` names the report file ("" when not from a file)."""
    __tracebackhide__ = True
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).exists():
            raise AssertionError(f"{os.fspath(source)}: no such file or directory (no LossGuard report to check)")
        files = find_reports(source)
        if not files:
            raise AssertionError(f"No {REPORT_NAME} under {os.fspath(source)}: did the run use LossGuard and a logger?")
        try:
            reports = [read_report(f) for f in files]
        except ReportError as error:
            raise AssertionError(str(error)) from error
        # Name the file only when several could be meant.
        return [(str(r.path) if len(reports) > 1 else "", r.diagnoses, r.gaps) for r in reports]
    if isinstance(source, LossGuard):
        return [("", source.diagnoses, list(getattr(source, "gaps", [])))]
    if isinstance(source, Report):
        return [("", source.diagnoses, source.gaps)]
    items = list(source)
    wrong = [x for x in items if not isinstance(x, Diagnosis)]
    if wrong:
        raise TypeError(f"assert_healthy expects Diagnosis objects in the list; got {type(wrong[0]).__name__}.")
    return [("", items, [])]


def _describe(d: Diagnosis, where: str) -> str:
    subject = f" ({d.subject})" if d.subject else ""
    lines = [f"- step {d.step}: {d.severity.value} {d.code}{subject}: {d.message}"]
    if where:
        lines.append(f"    report: {where}")
    if d.evidence:
        lines.append(f"    evidence: {d.evidence_text()}")
    lines += [f"    remedy {i}: {r}" for i, r in enumerate(d.remedies, start=1)]
    return "\n".join(lines)


def _describe_gap(gap: Gap, where: str) -> str:
    return f"- not watched: {gap.signal}: {gap.reason}" + (f"\n    report: {where}" if where else "")
