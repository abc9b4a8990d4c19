"""What LossGuard should have watched and could not: the report's ``coverage`` gaps.

A gap is a signal that should have been measured and was not (an internal error, a tensor type it cannot
read, parameters it could not watch, gradients that never passed through Lightning's optimizer hook). A
run too short to judge, or without validation, is a note, not a gap.
"""

from __future__ import annotations

from typing import Any

from lightning_lossguard.report.json_report import Gap


class Coverage:
    """The run's gaps, each ``(signal, reason)`` once, in the order found."""

    def __init__(self) -> None:
        self.gaps: list[Gap] = []

    def add(self, signal: str, reason: str) -> Gap | None:
        """Record a gap; returns it when it is new (so the caller can tell the user once)."""
        gap = Gap(signal, reason)
        if gap in self.gaps:
            return None
        self.gaps.append(gap)
        return gap

    def missing(self, signal: str) -> bool:
        """Whether a gap already says ``signal`` is not watched."""
        return any(gap.signal == signal for gap in self.gaps)

    def unmeasured_gradients(self, gradient_rows: int, watched: int, batches: int, report_batches: int) -> str | None:
        """Why no gradient was measured, when optimizer steps never passed through Lightning's hook (manual
        optimization that steps its optimizers directly) for two report intervals with parameters watched; None
        otherwise, or when a gap already says gradients are not watched."""
        if self.missing("gradients") or gradient_rows or not watched or batches < 2 * report_batches:
            return None
        return (
            f"no optimizer step went through Lightning in {batches} batches (on_before_optimizer_step never ran), so "
            "no gradient was measured: call the optimizers from self.optimizers() in manual optimization."
        )

    @property
    def complete(self) -> bool:
        return not self.gaps

    def state_dict(self) -> list[dict[str, str]]:
        return [g.to_dict() for g in self.gaps]

    def load_state_dict(self, state: Any) -> None:
        self.gaps = [Gap(str(g["signal"]), str(g["reason"])) for g in state or []]
