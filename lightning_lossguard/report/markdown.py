"""Diagnoses as GitHub-flavoured markdown: an overview table, then one section per diagnosis."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_lossguard.diagnosis import Diagnosis, format_number

_ICON = {"error": "🛑", "warning": "⚠️", "info": "ℹ️"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def diagnoses_table(diagnoses: Sequence[Diagnosis]) -> str:
    """Newest first: step, severity, code, message, evidence, first remedy."""
    if not diagnoses:
        return "No diagnoses: LossGuard found nothing wrong so far."
    lines = [
        "| step | severity | code | message | evidence | first remedy |",
        "|---:|---|---|---|---|---|",
    ]
    for d in sorted(diagnoses, key=lambda x: -x.step):
        lines.append(
            f"| {d.step} | {_ICON.get(d.severity.value, '')} {d.severity.value} | `{d.code}` | {_cell(d.message)} "
            f"| {_cell(d.evidence_text())} | {_cell(d.remedies[0]) if d.remedies else ''} |"
        )
    return "\n".join(lines)


def diagnosis_section(d: Diagnosis) -> str:
    """One diagnosis in full: what, when, the evidence and every remedy."""
    subject = f" — `{d.subject}`" if d.subject else ""
    evidence = "\n".join(f"| {_cell(k)} | {format_number(v)} |" for k, v in d.evidence.items())
    remedies = "\n".join(f"{i}. {r}" for i, r in enumerate(d.remedies, start=1))
    return (
        f"### {_ICON.get(d.severity.value, '')} `{d.code}` ({d.severity.value}) at step {d.step}{subject}\n\n"
        f"{d.message}\n\n| evidence | value |\n|---|---:|\n{evidence}\n\n**What to do**\n\n{remedies}\n"
    )


def full_report(diagnoses: Sequence[Diagnosis], notes: Sequence[str] = ()) -> str:
    """The text LossGuard writes to TensorBoard: the table, each diagnosis in full, then notes."""
    parts = ["## LossGuard diagnoses", diagnoses_table(diagnoses)]
    parts += [diagnosis_section(d) for d in sorted(diagnoses, key=lambda x: -x.step)]
    if notes:
        parts.append("**Notes**\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)
