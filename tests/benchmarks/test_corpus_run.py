"""The corpus runner: a fit whose worker process dies fails alone, in job order; the suite's faulty fits stop once
named."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.corpus.faults import FAULTS
from benchmarks.corpus.run import Job, Result, StopWhenNamed, run_all, run_program, run_until_named
from lightning_lossguard import Diagnosis, Severity


def _work(job: Job) -> Result:
    """Stands in for a fit: instant, except that the job named "crash" kills its worker process."""
    name, seed, fault = job
    if name == "crash":
        os._exit(3)
    return Result(name, "held_out", seed, fault)


def test_a_fit_that_kills_its_worker_is_given_up_and_every_other_fit_still_reports() -> None:
    # Two jobs keep the worker pools (each worker imports torch and Lightning) to three: both jobs, then the crashing
    # one alone, twice (it is run again in a fresh worker before it is given up).
    jobs: list[Job] = [("first", 0, ""), ("crash", 1, "nan_batch")]
    results = list(run_all(jobs, processes=2, work=_work))
    assert [(r.program, r.seed, r.fault) for r in results] == jobs
    assert results[0].error == ""
    assert "worker process died" in results[1].error
    assert "exited with code 3; then exited with code 3" in results[1].error


def test_the_suite_stops_a_faulty_fit_once_its_fault_is_named_and_keeps_the_verdict(tmp_path: Path) -> None:
    healthy_length = run_program("cnn_classifier", str(tmp_path), 0, "nan_batch").steps
    stopped = run_until_named(("cnn_classifier", 0, "nan_batch"))
    assert stopped.correct is not None and stopped.correct.code == "nonfinite_loss"
    assert stopped.correct.step <= stopped.steps < healthy_length


def test_only_an_alarm_that_names_the_fault_stops_the_fit() -> None:
    # An info that names the code (a rising loss said "for the record") is not a diagnosis the corpus counts: a first
    # version stopped on it and a run whose warning would have come later failed.
    said: list[Diagnosis] = []
    stopper = StopWhenNamed(SimpleNamespace(diagnoses=said), FAULTS["lr_x1000"].expect)  # type: ignore[arg-type]
    trainer: Any = SimpleNamespace(should_stop=False)
    said.append(Diagnosis("loss_divergence", Severity.INFO, 54, "the loss rose", {}, [], ""))
    stopper.on_train_batch_end(trainer, None)  # type: ignore[arg-type]
    assert not trainer.should_stop
    said.append(Diagnosis("loss_divergence", Severity.WARNING, 60, "the loss rose", {}, [], ""))
    stopper.on_train_batch_end(trainer, None)  # type: ignore[arg-type]
    assert trainer.should_stop
