"""Diagnoses as GitHub-flavoured markdown: a headline, an overview table, then one section per diagnosis.

TensorBoard's Text tab shows this in a narrow card that scrolls, so the top must tell the story: counts
first, then a table of short cells only (long cells squeeze the others to one letter per line), then each
diagnosis in full. Plain words mark severity: emoji need fonts a browser or CI log may not have.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning_lossguard.catalog import CATALOG
from lightning_lossguard.diagnosis import Diagnosis, Severity, format_number


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _newest_first(diagnoses: Sequence[Diagnosis]) -> list[Diagnosis]:
    # Worst first among diagnoses decided at the same step.
    return sorted(diagnoses, key=lambda d: (-d.step, -d.severity.rank))


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
    """Newest first: step, severity, code, what it is about, and what it means in a few words."""
    if not diagnoses:
        return "No diagnoses: LossGuard found nothing wrong so far."
    lines = ["| step | severity | code | about | in short |", "|---:|---|---|---|---|"]
    for d in _newest_first(diagnoses):
        about = f"`{_cell(d.subject)}`" if d.subject else "the run"
        lines.append(f"| {d.step} | **{d.severity.value.upper()}** | `{d.code}` | {about} | {_cell(_title(d))} |")
    return "\n".join(lines)


def diagnosis_section(d: Diagnosis) -> str:
    """One diagnosis in full: what, when, the evidence as numbers and every remedy, most likely first."""
    subject = f" · `{d.subject}`" if d.subject else ""
    parts = [
        f"### {d.severity.value.upper()} · {_title(d)} (`{d.code}`) at step {d.step}{subject}",
        d.message,
    ]
    if d.evidence:
        rows = "\n".join(f"| {_cell(k)} | {format_number(v)} |" for k, v in d.evidence.items())
        parts.append(f"| evidence | value |\n|---|---:|\n{rows}")
    if d.remedies:
        remedies = "\n".join(f"{i}. {r}" for i, r in enumerate(d.remedies, start=1))
        parts.append(f"**What to do**, most likely first:\n\n{remedies}")
    return "\n\n".join(parts) + "\n"


def full_report(diagnoses: Sequence[Diagnosis], notes: Sequence[str] = ()) -> str:
    """The text LossGuard writes to TensorBoard: counts, the overview table, each diagnosis, then notes."""
    parts = [f"## LossGuard: {counts_line(diagnoses)}" if diagnoses else "## LossGuard"]
    if len(diagnoses) > 1:
        parts.append("Newest first. The earliest is usually the cause and the later ones its symptoms.")
    parts.append(diagnoses_table(diagnoses))
    parts += ["---\n\n" + diagnosis_section(d) for d in _newest_first(diagnoses)]
    if notes:
        parts.append("**Notes**\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)
