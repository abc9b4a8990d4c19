"""Diagnoses on the console, through rich: one line per new diagnosis, a table at the end of fit."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from lightning_lossguard.diagnosis import Diagnosis, Severity

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def render_diagnosis(d: Diagnosis) -> RenderableType:
    """One diagnosis as it appears live: severity, code, step, message, and the first remedy."""
    line = Text.assemble(
        ("LossGuard ", "bold"),
        (f"{d.severity.value.upper()} ", _STYLE[d.severity]),
        (d.code, _STYLE[d.severity]),
        (f" at step {d.step}: ", "dim"),
        d.message,
    )
    if not d.remedies:
        return line
    return Group(line, Text.assemble(("  → ", "dim"), d.remedies[0]))


def summary_table(diagnoses: Sequence[Diagnosis], title: str = "LossGuard summary") -> Table:
    """All diagnoses grouped by severity (errors first), with the first two remedies."""
    table = Table(title=title, show_lines=True, expand=False)
    table.add_column("severity")
    table.add_column("step", justify="right")
    table.add_column("code")
    table.add_column("what happened", ratio=3)
    table.add_column("try first", ratio=2)
    for d in sorted(diagnoses, key=lambda x: (-x.severity.rank, x.step)):
        table.add_row(
            Text(d.severity.value, _STYLE[d.severity]),
            str(d.step),
            d.code,
            d.message,
            "\n".join(f"• {r}" for r in d.remedies[:2]),
        )
    return table


class ConsoleReporter:
    """Prints above a RichProgressBar (rich's shared console). Silent when ``enabled`` is False."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled

    def _out(self) -> Console:
        if self.console is None:
            from rich import get_console

            return get_console()
        return self.console

    def new_diagnoses(self, new: Sequence[Diagnosis]) -> None:
        if self.enabled:
            for d in new:
                self._out().print(render_diagnosis(d))

    def note(self, text: str) -> None:
        if self.enabled:
            self._out().print(Text.assemble(("LossGuard ", "bold"), (text, "dim")))

    def summary(self, diagnoses: Sequence[Diagnosis], notes: Sequence[str], report_path: str | None) -> None:
        if not self.enabled:
            return
        out = self._out()
        if diagnoses:
            out.print(summary_table(diagnoses))
        else:
            out.print(Text.assemble(("LossGuard ", "bold"), ("no problems found.", "green")))
        for n in notes:
            out.print(Text.assemble(("  note: ", "dim"), n))
        if report_path:
            out.print(Text.assemble(("  report: ", "dim"), report_path))
