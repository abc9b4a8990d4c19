"""Diagnoses on the console, through rich: one line per new diagnosis, a table at the end of fit.

Live lines must not tear a progress bar. Lightning's ``RichProgressBar`` draws on rich's shared console
(``rich.get_console()``), the one this reporter prints to, so rich itself puts the lines above the bar. A
``TQDMProgressBar`` draws with a carriage return and no newline: a plain print would continue the bar's line,
and the bar would then overdraw it. Given that bar (``progress_bar=trainer.progress_bar_callback``), the
reporter clears tqdm's bars around each print and redraws them below it (``tqdm.external_write_mode``).

Every string from a diagnosis is shown through :func:`~.safe_text.one_line`: no line break, escape sequence
or other control character reaches the terminal. Tables wrap, never cut: long words fold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from lightning_lossguard.catalog import cause_first
from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.report.json_report import Gap
from lightning_lossguard.report.markdown import counts_line
from lightning_lossguard.report.safe_text import one_line

STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
"""The colour of each severity, on the console and in the ``lossguard`` command."""

_PREFIX = "LossGuard"


def render_diagnosis(d: Diagnosis) -> RenderableType:
    """One diagnosis as it appears live: severity, code, step, message, and the first remedy."""
    style = STYLE[d.severity]
    line = Text.assemble(
        (f"{_PREFIX} ", "bold"),
        (f"{d.severity.value.upper()} ", style),
        (one_line(d.code), style),
        (f" at step {d.step}: ", "dim"),
        one_line(d.message),
    )
    if not d.remedies:
        return line
    return Group(line, Text.assemble(("  → ", "dim"), one_line(d.remedies[0])))


def details(d: Diagnosis, remedies: int | None = None, evidence: bool = False) -> RenderableType:
    """What happened and what to do, for a table cell: the message, then (``evidence``) the subject and the
    evidence, then the first ``remedies`` remedies (all, numbered, when None), each with a hanging indent."""
    text = Text(one_line(d.message))
    if evidence and d.subject:
        text.append(f"\nabout: {one_line(d.subject)}", "dim")
    if evidence and d.evidence:
        text.append(f"\nevidence: {one_line(d.evidence_text())}", "dim")
    shown = d.remedies if remedies is None else d.remedies[:remedies]
    if not shown:
        return text
    steps = Table.grid(padding=(0, 1, 0, 0))
    steps.add_column(style="dim", no_wrap=True)
    steps.add_column(overflow="fold")
    for i, remedy in enumerate(shown, start=1):
        steps.add_row(f"{i}." if remedies is None else "→", Text(one_line(remedy)))
    return Group(text, steps)


def summary_table(diagnoses: Sequence[Diagnosis], title: str | None = "LossGuard summary", full: bool = False) -> Table:
    """The diagnoses cause first (by step, causes before symptoms within a step), one row each.

    Three columns, so that the text column stays wide in 80 columns: the step; the severity and code; what
    happened and what to try. ``full`` adds the subject, the evidence and every remedy (the ``lossguard
    report`` table); otherwise the first two remedies. Cells wrap and long words fold: nothing is cut.
    """
    table = Table(title=f"{title}: {counts_line(diagnoses)}" if title else None, show_lines=True)
    table.add_column("step", justify="right", overflow="fold")
    table.add_column("diagnosis", overflow="fold")
    table.add_column("what happened → what to do" if full else "what happened → what to try first", overflow="fold")
    for d in cause_first(diagnoses):
        style = STYLE[d.severity]
        label = Text.assemble((d.severity.value.upper(), style), "\n", (one_line(d.code), style))
        table.add_row(str(d.step), label, details(d, None if full else 2, evidence=full))
    return table


def gap_line(gap: Gap) -> Text:
    """``  not watched: <signal>: <reason>``."""
    return Text.assemble(("  not watched: ", "yellow"), (one_line(gap.signal), "bold"), ": ", one_line(gap.reason))


def cost_text(line: str) -> Text:
    """``  cost: <what LossGuard cost the run>``."""
    return Text.assemble(("  cost: ", "dim"), (one_line(line), "dim"))


class ConsoleReporter:
    """Prints diagnoses as they happen and a summary at the end of fit; silent when ``enabled`` is False.

    Args:
        console: where to print (default: rich's shared console, the one a ``RichProgressBar`` draws on).
        enabled: False prints nothing.
        progress_bar: the trainer's progress bar (``trainer.progress_bar_callback``), if any. A tqdm-based bar
            (one with ``init_train_tqdm``, like Lightning's ``TQDMProgressBar``) is cleared around each print
            and redrawn below it, so lines are never glued to or overdrawn by the bar. Any other bar, or none,
            needs nothing.
    """

    def __init__(self, console: Console | None = None, enabled: bool = True, progress_bar: object = None) -> None:
        self.console = console
        self.enabled = enabled
        self.progress_bar = progress_bar

    def _out(self) -> Console:
        if self.console is None:
            from rich import get_console

            return get_console()
        return self.console

    def _print(self, *renderables: RenderableType) -> None:
        out = self._out()
        with self._bars_cleared(out):
            for renderable in renderables:
                out.print(renderable)

    @contextlib.contextmanager
    def _bars_cleared(self, out: Console) -> Iterator[None]:
        if not callable(getattr(self.progress_bar, "init_train_tqdm", None)):
            yield
            return
        try:
            from tqdm import tqdm  # type: ignore[import-untyped]
        except ImportError:  # no tqdm, so no tqdm bar on screen
            yield
            return
        with tqdm.external_write_mode(file=out.file):
            yield

    def new_diagnoses(self, new: Sequence[Diagnosis]) -> None:
        if self.enabled and new:
            self._print(*(render_diagnosis(d) for d in new))

    def note(self, text: str) -> None:
        """``LossGuard <text>``; a text that already starts with "LossGuard" is not prefixed twice."""
        if not self.enabled:
            return
        rest = one_line(text)
        rest = rest[len(_PREFIX) :].lstrip() if rest.startswith(f"{_PREFIX} ") else rest
        self._print(Text.assemble((f"{_PREFIX} ", "bold"), (rest, "dim")))

    def summary(
        self,
        diagnoses: Sequence[Diagnosis],
        notes: Sequence[str],
        report_path: str | None,
        gaps: Sequence[Gap] = (),
        cost: str | None = None,
        failed: bool = False,
    ) -> None:
        """The end-of-fit summary: the diagnoses as a table (cause first), what was not watched, the notes, what
        LossGuard cost (``cost``: one line) and the report's path. Says "no problems found" only when there is no
        diagnosis and no gap, in a fit that did not fail (``failed``: it stopped on an exception; a note says
        which)."""
        if not self.enabled:
            return
        parts: list[RenderableType] = []
        if diagnoses:
            parts.append(summary_table(diagnoses))
        elif failed:
            parts.append(
                Text.assemble(
                    (f"{_PREFIX} ", "bold"),
                    ("the fit failed: ", "red"),
                    "no diagnosis in the batches before it (see the note).",
                )
            )
        elif gaps:
            parts.append(
                Text.assemble(
                    (f"{_PREFIX} ", "bold"),
                    ("coverage incomplete: ", "yellow"),
                    "no diagnosis in what it watched, but it could not watch everything:",
                )
            )
        else:
            parts.append(Text.assemble((f"{_PREFIX} ", "bold"), ("no problems found.", "green")))
        if diagnoses and gaps:
            parts.append(Text.assemble((f"{_PREFIX} ", "bold"), ("could not watch everything:", "yellow")))
        parts += [gap_line(g) for g in gaps]
        parts += [Text.assemble(("  note: ", "dim"), one_line(n)) for n in notes]
        if cost:
            parts.append(cost_text(cost))
        if report_path:
            parts.append(Text.assemble(("  report: ", "dim"), one_line(report_path)))
        self._print(*parts)
