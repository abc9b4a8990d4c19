"""Diagnoses as GitHub-flavoured markdown: a headline, what was not watched, an overview table, then each diagnosis.

TensorBoard's Text tab shows this in a narrow card that scrolls, so the top must tell the story: counts
first, then a table of short cells only (long cells squeeze the others to one letter per line), then each
diagnosis in full. Plain words mark severity: emoji need fonts a browser or CI log may not have.

One order everywhere (:func:`~lightning_lossguard.catalog.cause_first`): by step, and within a step causes
before their symptoms. Every string from a diagnosis is escaped (:mod:`.safe_text`): a message or a layer
name cannot open a heading, an image, a link or an HTML tag.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning_lossguard.catalog import CATALOG, cause_first
from lightning_lossguard.diagnosis import Diagnosis, Severity, format_number
from lightning_lossguard.report.json_report import Gap
from lightning_lossguard.report.safe_text import markdown_code, markdown_text

ORDER_NOTE = "By step, causes before their symptoms: the first is usually the cause, the later ones its consequences."


def _title(d: Diagnosis) -> str:
    info = CATALOG.get(d.code)
    return info.title if info is not None else d.code


def counts_line(diagnoses: Sequence[Diagnosis]) -> str:
    """``2 errors, 1 warning, 0 info``."""
    n = {s: sum(d.severity is s for d in diagnoses) for s in Severity}
    errors = f"{n[Severity.ERROR]} error" + ("" if n[Severity.ERROR] == 1 else "s")
    warnings = f"{n[Severity.WARNING]} warning" + ("" if n[Severity.WARNING] == 1 else "s")
    return f"{errors}, {warnings}, {n[Severity.INFO]} info"


def diagnoses_table(diagnoses: Sequence[Diagnosis]) -> str:
    """Cause first: step, severity, code, what it is about, and what it means in a few words."""
    if not diagnoses:
        return "No diagnoses: LossGuard found nothing wrong so far."
    lines = ["| step | severity | code | about | in short |", "|---:|---|---|---|---|"]
    for d in cause_first(diagnoses):
        about = markdown_code(d.subject) if d.subject else "the run"
        code = markdown_code(d.code)
        lines.append(f"| {d.step} | **{d.severity.value.upper()}** | {code} | {about} | {markdown_text(_title(d))} |")
    return "\n".join(lines)


def diagnosis_section(d: Diagnosis) -> str:
    """One diagnosis in full: what, when, the evidence as numbers and every remedy, most likely first."""
    subject = f" · {markdown_code(d.subject)}" if d.subject else ""
    title = f"{d.severity.value.upper()} · {markdown_text(_title(d))} ({markdown_code(d.code)})"
    parts = [
        f"### {title} at step {d.step}{subject}",
        markdown_text(d.message),
    ]
    if d.evidence:
        rows = "\n".join(f"| {markdown_text(k)} | {format_number(v)} |" for k, v in d.evidence.items())
        parts.append(f"| evidence | value |\n|---|---:|\n{rows}")
    if d.remedies:
        remedies = "\n".join(f"{i}. {markdown_text(r)}" for i, r in enumerate(d.remedies, start=1))
        parts.append(f"**What to do**, most likely first:\n\n{remedies}")
    return "\n\n".join(parts) + "\n"


def coverage_section(gaps: Sequence[Gap]) -> str:
    """What LossGuard should have watched and did not: a clean result says nothing about these."""
    items = "\n".join(f"- **{markdown_text(g.signal)}**: {markdown_text(g.reason)}" for g in gaps)
    return f"**Not watched.** LossGuard could not watch all of this run; it cannot vouch for:\n\n{items}"


def full_report(
    diagnoses: Sequence[Diagnosis], notes: Sequence[str] = (), gaps: Sequence[Gap] = (), failed: bool = False
) -> str:
    """The text LossGuard writes to TensorBoard: counts, what was not watched, the overview table, each
    diagnosis (cause first), then notes. ``failed``: the fit stopped on an exception (a note says which)."""
    headline = ["the fit failed"] if failed else []
    headline += [counts_line(diagnoses)] if diagnoses else []
    headline += ["coverage incomplete"] if gaps else []
    parts = ["## LossGuard" + (": " + "; ".join(headline) if headline else "")]
    if gaps:
        parts.append(coverage_section(gaps))
    if len(diagnoses) > 1:
        parts.append(ORDER_NOTE)
    if failed and not diagnoses:
        parts.append("No diagnoses in the batches before the fit failed: see the notes for where it stopped and why.")
    elif diagnoses or not gaps:
        parts.append(diagnoses_table(diagnoses))
    else:
        parts.append("No diagnoses in what LossGuard watched.")
    parts += ["---\n\n" + diagnosis_section(d) for d in cause_first(diagnoses)]
    if notes:
        parts.append("**Notes**\n\n" + "\n".join(f"- {markdown_text(n)}" for n in notes))
    return "\n\n".join(parts)
