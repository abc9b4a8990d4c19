"""Run corpus programs in real fits and score LossGuard on them: false alarms on the healthy programs (every
seed), recall on their injected faults, per detector and per split.

    python -m benchmarks.corpus                        # every program: healthy x seeds, then every fault
    python -m benchmarks.corpus gan_toggle dqn_cartpole   # some programs
    python -m benchmarks.corpus --split held_out       # one half
    python -m benchmarks.corpus --no-guard NAME        # the program alone, each seed: healthy by its own numbers?
    python -m benchmarks.corpus --write-docs           # also update docs/performance.md
    python -m benchmarks.corpus --processes 1          # one fit at a time (default: one per core)
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import pytorch_lightning
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from benchmarks.corpus import FAULTS, PROGRAMS, SPLITS, Program, Run
from benchmarks.corpus.faults import advises_it, names_it
from benchmarks.corpus.workers import Fits, available_cores, quiet
from lightning_lossguard import Diagnosis, LossGuard, LossGuardAlarm, OutputMonitor, Severity

SEEDS = (0, 1, 2)
"""Seeds every healthy program runs with."""


@dataclass
class Result:
    program: str
    split: str
    seed: int
    fault: str = ""
    expect: tuple[str, ...] = ()
    onset_step: int = 0
    diagnoses: list[Diagnosis] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    steps: int = 0
    error: str = ""

    @property
    def healthy(self) -> bool:
        return not self.fault

    @property
    def alarms(self) -> list[Diagnosis]:
        return [d for d in self.diagnoses if d.severity.at_least(Severity.WARNING)]

    @property
    def correct(self) -> Diagnosis | None:
        return first_naming(self.diagnoses, self.expect)

    @property
    def correct_without_outputs(self) -> Diagnosis | None:
        """The diagnosis that names the fault among those of LossGuard's core (OutputMonitor's codes left out)."""
        return first_naming([d for d in self.diagnoses if d.code not in OutputMonitor.codes], self.expect)

    @property
    def advice_fits(self) -> bool:
        """A faulty run whose first warning or error puts, first, a remedy for its fault (``Fault.advice``): what a
        user who reads only the first alarm would fix. False when nothing alarmed."""
        advice = FAULTS[self.fault].advice if self.fault in FAULTS else ()
        return bool(self.alarms) and advises_it(self.alarms[0], advice)

    @property
    def broken(self) -> bool:
        """LossGuard hit an internal error and stopped watching (a bug, in a healthy or a faulty run alike)."""
        return any(g.startswith("monitoring: internal error") for g in self.gaps)

    @property
    def passed(self) -> bool:
        if self.error or self.broken:
            return False
        if self.healthy:
            return not self.alarms and not self.gaps
        return self.correct is not None

    @property
    def undone(self) -> list[str]:
        """The codes of this run's alarms that a later part of the run undid, by LossGuard's end-of-fit hindsight
        notes ("<code> at step N was a transient" / "did not last"); the alarms stand as reported."""
        return [m.group(1) for n in self.notes if (m := _HINDSIGHT.match(n))]

    @property
    def latency(self) -> int | None:
        found = self.correct
        return None if found is None else max(0, found.step - self.onset_step)

    def summary(self) -> str:
        codes = ", ".join(f"{d.code}@{d.step}({d.severity.value[0]})" for d in self.diagnoses) or "-"
        label = f"{self.program}[{self.seed}]" + (f" +{self.fault}" if self.fault else "")
        gaps = f" GAPS: {'; '.join(self.gaps)}" if self.gaps else ""
        undone = f" (undone later: {', '.join(self.undone)})" if self.undone else ""
        return (
            f"{'PASS' if self.passed else 'FAIL'} {label:45s} {self.wall_s:5.1f}s steps={self.steps:4d} {codes}"
            f"{undone}{gaps}{' ERROR: ' + self.error if self.error else ''}"
        )


def build(program: Program, seed: int) -> Run:
    """Build a program's run with everything random derived from ``seed``."""
    L.seed_everything(seed, verbose=False)
    random.seed(seed)
    np.random.seed(seed)
    return program.build(seed)


def trainer_for(run: Run, root: str, name: str, callbacks: list[Callback]) -> Any:
    """The Trainer of the package the program is written for: a module of the standalone ``pytorch_lightning``
    (``import pytorch_lightning as pl``) needs that package's Trainer and logger."""
    if isinstance(run.module, pytorch_lightning.LightningModule):
        logger = pytorch_lightning.loggers.TensorBoardLogger(root, name=name)
        return pytorch_lightning.Trainer(**trainer_args(run, logger, callbacks, root))
    return L.Trainer(**trainer_args(run, TensorBoardLogger(root, name=name), callbacks, root))


def trainer_args(run: Run, logger: Any, callbacks: list[Callback], root: str) -> dict[str, Any]:
    """Lightning's defaults as a new user gets them, minus the progress bar, model summary and checkpoints. The
    root folder takes what Lightning writes beside the logs (a learning-rate or batch-size finder's checkpoint)."""
    extra = list(run.trainer.get("callbacks", []))
    return {
        "default_root_dir": root,
        "accelerator": "cpu",
        "devices": 1,
        "logger": logger,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        **{k: v for k, v in run.trainer.items() if k != "callbacks"},
        "callbacks": [*extra, *callbacks],
    }


def run_program(
    name: str,
    root: str,
    seed: int = 0,
    fault: str = "",
    guard: dict[str, Any] | None = None,
    stop_when_named: bool = False,
) -> Result:
    """One corpus program (optionally with one injected fault) in a real fit with ``LossGuard()``.

    ``stop_when_named``: a faulty fit stops at the end of the batch where a diagnosis first names its fault (its
    verdict cannot change after that; the suite uses it, the benchmark runs every fit to its end for the table's
    other codes)."""
    program = PROGRAMS[name]
    run = build(program, seed)
    onset = 0
    expect: tuple[str, ...] = ()
    if fault:
        if fault not in program.faults:
            raise ValueError(f"{name} does not offer fault {fault!r}; it offers {program.faults}")
        onset = FAULTS[fault].inject(run, program)
        expect = FAULTS[fault].expect
    accumulate = int(run.trainer.get("accumulate_grad_batches", 1))
    monitors = [OutputMonitor()] if program.output_monitor else []
    lossguard = LossGuard(verbose=False, monitors=monitors, **(guard or {}))
    label = f"{name}-{seed}" + (f"-{fault}" if fault else "")
    callbacks: list[Callback] = [lossguard]
    if stop_when_named and expect:
        callbacks.append(StopWhenNamed(lossguard, expect))
    fit = trainer_for(run, root, label, callbacks)
    result = Result(name, program.split, seed, fault, expect, onset // accumulate)
    start = time.perf_counter()
    try:
        fit.fit(run.module, run.train, run.val)
    except LossGuardAlarm:
        pass
    except Exception as error:  # a program that crashes is reported, not hidden
        result.error = f"{type(error).__name__}: {error}"
    result.wall_s = time.perf_counter() - start
    result.steps = fit.global_step
    result.diagnoses = lossguard.diagnoses
    result.gaps = [f"{g.signal}: {g.reason}" for g in getattr(lossguard, "gaps", [])]
    result.notes = list(lossguard.notes)
    return result


_HINDSIGHT = re.compile(r"^(\w+) at step \d+ (?:was a transient|did not last)")
"""How LossGuard's end-of-fit hindsight notes begin (``Detector.undone_by``)."""


def first_naming(diagnoses: list[Diagnosis], expect: tuple[str, ...]) -> Diagnosis | None:
    """The first alarm (a warning or an error; an info does not count) that names the fault: its diagnosis."""
    return next((d for d in diagnoses if d.severity.at_least(Severity.WARNING) and names_it(d, expect)), None)


class StopWhenNamed(Callback):
    """Stops the fit once LossGuard's diagnoses name the injected fault as :attr:`Result.correct` counts it (after
    LossGuard's hooks: it comes after it in the callbacks)."""

    def __init__(self, lossguard: LossGuard, expect: tuple[str, ...]) -> None:
        self.lossguard, self.expect = lossguard, expect

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if first_naming(self.lossguard.diagnoses, self.expect) is not None:
            trainer.should_stop = True


class _LossTrace(Callback):
    """Records the training loss of every batch (a host read per step: only for ``--no-guard``)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.val: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self.losses.append(float(loss.detach()))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val.append({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})


def trace_program(name: str, root: str, seed: int = 0, fault: str = "") -> str:
    """The program without LossGuard: its own training-loss curve and logged metrics, to judge its health
    (and, with ``fault``, that the injected fault really breaks it)."""
    program = PROGRAMS[name]
    run = build(program, seed)
    if fault:
        FAULTS[fault].inject(run, program)
    trace = _LossTrace()
    fit = trainer_for(run, root, f"{name}-trace", [trace])
    start = time.perf_counter()
    try:
        fit.fit(run.module, run.train, run.val)
        crashed = ""
    except Exception as error:
        crashed = f"  CRASHED: {type(error).__name__}: {error}"
    wall = time.perf_counter() - start
    losses = trace.losses
    tenth = max(1, len(losses) // 10)
    title = f"{name} seed {seed}" + (f" +{fault}" if fault else "")
    lines = [f"{title}: {fit.global_step} steps, {len(losses)} batches with a loss, {wall:.1f} s"]
    if crashed:
        lines.append(crashed)
    if losses:
        lines.append(
            f"  train loss median: first 10% {statistics.median(losses[:tenth]):.4g}, "
            f"last 10% {statistics.median(losses[-tenth:]):.4g} (min {min(losses):.4g}, max {max(losses):.4g})"
        )
    for i, metrics in enumerate(trace.val):
        lines.append(f"  validation {i}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    metrics = {k: float(v) for k, v in fit.callback_metrics.items() if v.numel() == 1}
    lines.append("  final logged metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return "\n".join(lines)


# -- scoring -----------------------------------------------------------------------------------------------
def score(results: list[Result]) -> str:
    """Markdown: per split, false alarms on healthy runs and recall on faults, then per detector and fault."""
    rows = [
        "| split | healthy runs (programs x seeds) | with a warning/error | with a coverage gap | "
        "faults injected | correctly diagnosed | without OutputMonitor | median latency (steps) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for split in SPLITS:
        mine = [r for r in results if r.split == split]
        if not mine:
            continue
        healthy = [r for r in mine if r.healthy]
        faulty = [r for r in mine if not r.healthy]
        caught = [r for r in faulty if r.correct is not None]
        core = [r for r in faulty if r.correct_without_outputs is not None]
        latencies = [r.latency for r in caught if r.latency is not None]
        median = f"{statistics.median(latencies):.0f}" if latencies else "–"
        rows.append(
            f"| {split} | {len(healthy)} ({len({r.program for r in healthy})} programs) | "
            f"{sum(bool(r.alarms) or bool(r.error) for r in healthy)} | {sum(bool(r.gaps) for r in healthy)} | "
            f"{len(faulty)} | {len(caught)} ({_percent(len(caught), len(faulty))}) | "
            f"{len(core)} ({_percent(len(core), len(faulty))}) | {median} |"
        )
    false_by_code = Counter(d.code for r in results if r.healthy for d in {d.code: d for d in r.alarms}.values())
    rows += [
        "",
        "False alarms per code (healthy runs with a warning or error of that code): "
        + (", ".join(f"`{c}` {n}" for c, n in false_by_code.most_common()) or "none")
        + ".",
        "",
        "Runs where LossGuard hit an internal error and stopped watching (healthy or faulty): "
        + (
            ", ".join(f"{r.program}[{r.seed}]" + (f" +{r.fault}" if r.fault else "") for r in results if r.broken)
            or "none"
        )
        + ".",
    ]
    rows += [
        "",
        "| fault | expected codes | injected | diagnosed | first alarm's first remedy fits | missed (program[seed]: "
        "what was said) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for fault in FAULTS.values():
        mine = [r for r in results if r.fault == fault.name]
        if not mine:
            continue
        missed = [r for r in mine if r.correct is None]
        said = "; ".join(
            f"{r.program}: " + (", ".join(sorted({d.code for d in r.alarms})) or r.error or "nothing") for r in missed
        )
        rows.append(
            f"| {fault.name} | {', '.join(f'`{c}`' for c in fault.expect)} | {len(mine)} | "
            f"{len(mine) - len(missed)} | {sum(r.advice_fits for r in mine)} | {said or '–'} |"
        )
    alarmed = [r for r in results if r.healthy and r.alarms]
    undone = Counter(c for r in results for c in set(r.undone) if r.healthy)
    undone_faulty = Counter(c for r in results for c in set(r.undone) if not r.healthy)
    rows += [
        "",
        f"Alarms the run undid later (an end-of-fit hindsight note; the alarm stands): healthy runs "
        f"{sum(bool(r.undone) for r in alarmed)} of the {len(alarmed)} that alarmed"
        + (f" ({', '.join(f'`{c}` {n}' for c, n in undone.most_common())})" if undone else "")
        + f"; faulty runs {sum(bool(r.undone) for r in results if not r.healthy)}"
        + (f" ({', '.join(f'`{c}` {n}' for c, n in undone_faulty.most_common())})" if undone_faulty else "")
        + ".",
    ]
    by_code = Counter(r.correct.code for r in results if r.correct is not None)
    rows += ["", "Faults named per code: " + ", ".join(f"`{c}` {n}" for c, n in by_code.most_common()) + "."]
    rows += [
        "",
        "A first remedy fits when it contains one of the fault's advice phrases: "
        + "; ".join(f"{f.name}: " + ", ".join(f"'{a}'" for a in f.advice) for f in FAULTS.values() if f.advice)
        + ".",
    ]
    return "\n".join(rows)


def _percent(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "–"


Job = tuple[str, int, str]


def run_all(jobs: list[Job], processes: int = 1, work: Callable[[Job], Result] | None = None) -> Iterator[Result]:
    """Each ``(program, seed, fault)`` job in a real fit, results in job order. Every fit runs on one torch thread,
    so ``processes`` > 1 spreads the jobs over that many worker processes (:class:`Fits`), one per core at most;
    with 1 they run here, as this process is set up. ``work`` runs one job (default: its real fit). A fit that
    kills its worker process is run once more in a fresh one (said on stderr), and given up (:func:`given_up`) if
    it kills that one too; every other fit still reports."""
    work = work or _run_job
    if processes <= 1:
        for job in jobs:
            yield work(job)
        return
    fits = Fits(jobs, work, given_up)
    fits.add_workers(processes)
    try:
        for job in jobs:
            result = fits.result(job)
            if job in fits.deaths and not result.error:
                print(f"{job}: its worker died: {fits.death_note(job)}", file=sys.stderr)
            yield result
    finally:
        fits.close()


def given_up(job: Job, how: str) -> Result:
    """The result of a job whose worker process died while it ran, in each of its attempts (``how``: how each
    died)."""
    name, seed, fault = job
    program = PROGRAMS.get(name)
    result = Result(name, program.split if program else "", seed, fault)
    result.error = f"its worker process died while it ran, in a fresh worker too ({how})"
    return result


def _run_job(job: Job, stop_when_named: bool = False) -> Result:
    name, seed, fault = job
    with tempfile.TemporaryDirectory() as root:
        return run_program(name, root, seed, fault, stop_when_named=stop_when_named)


def run_until_named(job: Job) -> Result:
    """A job as the suite runs it: a faulty fit stops once its fault is named (see :func:`run_program`)."""
    return _run_job(job, stop_when_named=True)


def plan(names: list[str], seeds: tuple[int, ...], faults: bool) -> list[Job]:
    """(program, seed, fault) triples: each program healthy with every seed, then each fault with seed 0."""
    jobs = [(n, s, "") for n in names for s in seeds]
    if faults:
        jobs += [(n, 0, f) for n in names for f in PROGRAMS[n].faults]
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="programs to run (default: all)")
    parser.add_argument("--split", choices=SPLITS, help="only this half")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds per healthy program")
    parser.add_argument("--no-faults", action="store_true", help="healthy runs only")
    parser.add_argument("--faults-only", action="store_true", help="injected faults only")
    parser.add_argument("--no-guard", action="store_true", help="run without LossGuard and print the loss curve")
    parser.add_argument("--fault", default="", help="with --no-guard: inject this fault")
    parser.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
    parser.add_argument(
        "--processes", type=int, default=available_cores(), help="fits run side by side (default: one per core)"
    )
    args = parser.parse_args(argv)
    quiet()
    names = args.names or [n for n, p in PROGRAMS.items() if args.split in (None, p.split)]
    if args.no_guard:
        with tempfile.TemporaryDirectory() as root:
            for name in names:
                for seed in range(args.seeds):
                    print(trace_program(name, root, seed, args.fault), flush=True)
        return 0
    seeds = () if args.faults_only else tuple(range(args.seeds))
    results = []
    for result in run_all(plan(names, seeds, not args.no_faults), args.processes):
        results.append(result)
        print(result.summary(), flush=True)
    text = score(results)
    print(text)
    if args.write_docs:
        from benchmarks.docs import replace_section
        from benchmarks.overhead import machine

        stamp = time.strftime("%Y-%m-%d")
        total = sum(r.wall_s for r in results)
        replace_section(
            "corpus",
            f"Measured {stamp} on {machine()} (`python -m benchmarks.corpus --write-docs`, "
            f"{len(results)} fits, {total / 60:.0f} min of fitting).\n\n{text}",
        )
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
