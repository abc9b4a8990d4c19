"""``LossGuardAlarm``: raised by the fit when a diagnosis reaches ``fail_on``."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_lossguard.diagnosis import Diagnosis


class LossGuardAlarm(RuntimeError):
    """Training was stopped because of diagnoses at or above ``fail_on``; the reports are already written.

    Attributes:
        diagnoses: the diagnoses that triggered the alarm.
        report_path: where ``lossguard.json`` was written (None when there is no log directory).
    """

    def __init__(self, diagnoses: Sequence[Diagnosis], report_path: str | None = None) -> None:
        self.diagnoses = list(diagnoses)
        self.report_path = report_path
        lines = [f"LossGuard stopped training: {len(self.diagnoses)} diagnosis(es) at or above fail_on."]
        for d in self.diagnoses:
            lines.append(f"  {d.one_line()}")
            if d.remedies:
                lines.append(f"    try: {d.remedies[0]}")
        if report_path:
            lines.append(f"Report: {report_path}")
        lines.append("To silence a code: LossGuard(suppress=[...]); to only report: LossGuard(fail_on=None).")
        super().__init__("\n".join(lines))
