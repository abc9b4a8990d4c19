"""Diagnoses on the console, through rich: one line per new diagnosis, a table at the end of fit.

Everything goes through rich's shared console (``rich.get_console()``), the one Lightning's
``RichProgressBar`` draws on, so live lines appear above the bar instead of tearing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.report.markdown import counts_line

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
    """All diagnoses grouped by severity (errors first, then by step), each with its first two remedies.

    The severity is named once per group and a rule separates the groups; the message and the remedies
    share one wide column so a narrow terminal still reads them in full.
    """
    table = Table(title=f"{title}: {counts_line(diagnoses)}", expand=False)
    table.add_column("severity", no_wrap=True)
    table.add_column("step", justify="right", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("what happened → what to try first")
    ordered = sorted(diagnoses, key=lambda x: (-x.severity.rank, x.step))
    for severity, group in groupby(ordered, key=lambda x: x.severity):
        rows = list(group)
        for i, d in enumerate(rows):
            what = Text(d.message)
            for remedy in d.remedies[:2]:
                what.append("\n→ ", "dim")
                what.append(remedy)
            last = i == len(rows) - 1
            if not last:
                what.append("\n")  # a blank line between entries; a rule only between severities
            label = Text(severity.value.upper(), _STYLE[severity]) if i == 0 else Text("")
            table.add_row(label, str(d.step), Text(d.code, _STYLE[severity]), what, end_section=last)
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
