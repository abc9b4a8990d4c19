"""One run as the LossGuard tab shows it: a verdict, the diagnoses cause first, the reports' notes and coverage
gaps, and the curves, as JSON-ready values.

Reports are read from the run's directory (``lossguard.json``, ``lossguard-<name>.json``; not its
subdirectories, which are runs of their own). Curves come from TensorBoard's data provider.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tensorboard.data.provider import RunTagFilter
from tensorboard.plugins.scalar.metadata import PLUGIN_NAME

from lightning_lossguard.catalog import CATALOG, cause_first
from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.report.cost import cost_and_notes
from lightning_lossguard.report.json_report import REPORT_NAME, Report, ReportError, read_report

PREFIX = "lossguard/"
VAL_PREFIX = "lossguard/val/"
CURVES = tuple(
    PREFIX + name for name in ("train_loss", "grad_norm", "grad_norm_max", "grad_norm_band_low", "grad_norm_band_high")
)
"""The scalars the tab draws, besides the validation metrics under ``lossguard/val/``."""

MAX_POINTS = 2000
"""Points per curve at most (LossGuard logs one per report interval: a long run stays far below)."""

_STATUS = {
    "running": "running, step {step}",
    "finished": "finished at step {step}",
    "failed": "training failed at step {step}",
    "alarm": "stopped by LossGuard at step {step}",
}


def report_files(run_dir: Path | None) -> list[Path]:
    """The LossGuard reports in one run directory (never the temporary files of a write in progress)."""
    if run_dir is None or not run_dir.is_dir():
        return []
    return sorted(
        p
        for p in run_dir.glob("lossguard*.json")
        if p.is_file() and (p.name == REPORT_NAME or p.name.startswith("lossguard-"))
    )


def read_curves(provider: Any, ctx: Any, experiment: str, run: str) -> dict[str, list[list[float]]]:
    """``{"train_loss": [[step, value], ...], "val/val_loss": ..., "grad_norm": ..., ...}``: finite points only,
    keyed by tag without ``lossguard/``."""
    listed = provider.list_scalars(
        ctx, experiment_id=experiment, plugin_name=PLUGIN_NAME, run_tag_filter=RunTagFilter(runs=[run])
    )
    tags = sorted(t for t in listed.get(run, {}) if t in CURVES or t.startswith(VAL_PREFIX))
    if not tags:
        return {}
    data = provider.read_scalars(
        ctx,
        experiment_id=experiment,
        plugin_name=PLUGIN_NAME,
        downsample=MAX_POINTS,
        run_tag_filter=RunTagFilter(runs=[run], tags=tags),
    )
    series = data.get(run, {})
    return {
        tag.removeprefix(PREFIX): [[d.step, d.value] for d in series.get(tag, []) if math.isfinite(d.value)]
        for tag in tags
    }


def run_view(run: str, run_dir: Path | None, curves: dict[str, list[list[float]]]) -> dict[str, Any]:
    """Everything the page draws for one run."""
    reports: list[dict[str, Any]] = []
    found: list[tuple[Report, str]] = []
    for path in report_files(run_dir):
        try:
            report = read_report(path)
        except ReportError as error:
            reports.append({"file": path.name, "error": str(error).replace(str(path), path.name)})
            continue
        found.append((report, path.name))
        gaps = [gap.to_dict() for gap in report.gaps]
        reports.append({"file": path.name, "status": _status(report), "gaps": gaps, **_notes_and_cost(report)})
    of_file = {id(d): name for report, name in found for d in report.diagnoses}
    diagnoses = cause_first(d for report, _ in found for d in report.diagnoses)
    return {
        "run": run,
        "verdict": verdict([report for report, _ in found], unreadable=len(reports) - len(found)),
        "reports": reports,
        "diagnoses": [_diagnosis(d, of_file[id(d)]) for d in diagnoses],
        "last_step": max((report.global_step for report, _ in found), default=None),
        "curves": curves,
    }


def verdict(reports: Sequence[Report], unreadable: int = 0) -> dict[str, str]:
    """``{"level": "error"|"warning"|"failed"|"gaps"|"healthy"|"unknown", "text": ...}``: the run's headline.

    Healthy means no warning and no error in everything LossGuard watched, in a fit that did not fail; a fit that
    stopped on an exception is never called healthy; a coverage gap says that part of the run was not watched, so
    "no problems found" covers less than the whole run.
    """
    if not reports:
        text = "The LossGuard report cannot be read" if unreadable else "No LossGuard report yet"
        return {"level": "unknown", "text": text}
    count = {s: sum(d.severity is s for r in reports for d in r.diagnoses) for s in Severity}
    errors, warnings, infos = count[Severity.ERROR], count[Severity.WARNING], count[Severity.INFO]
    if errors or warnings:
        level = "error" if errors else "warning"
        text = f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"
    elif any(r.status == "failed" for r in reports):
        level, text = "failed", "Training failed: nothing diagnosed before it (the notes say where it stopped)"
    elif any(r.gaps for r in reports):
        level, text = "gaps", "No problems found in what was watched, but not everything was watched"
    else:
        level, text = "healthy", "Healthy: no problems found"
    if infos:
        text += f" ({infos} info)"
    return {"level": level, "text": text}


def _notes_and_cost(report: Report) -> dict[str, Any]:
    """The report's notes, and its cost in one line: a run over budget has the line's why (its note) folded under
    it (``cost_detail``) instead of among the notes, where on a healthy run it was the only text under "no problems
    found" and read like one."""
    cost, notes, detail = cost_and_notes(report.cost, report.notes)
    return {"notes": notes, "cost": cost, "cost_detail": detail}


def _status(report: Report) -> str:
    template = _STATUS.get(report.status)
    return template.format(step=report.global_step) if template else f"{report.status} at step {report.global_step}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _diagnosis(d: Diagnosis, file: str) -> dict[str, Any]:
    info = CATALOG.get(d.code)
    return {**d.to_dict(), "title": info.title if info else "", "documented": info is not None, "report": file}
