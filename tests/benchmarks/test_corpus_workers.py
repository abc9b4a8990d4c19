"""The corpus' worker processes: jobs taken in order, workers that join later, a job that kills its worker or
raises or gives back what cannot be sent, and a session cut short."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from benchmarks.corpus.workers import Fits

Job = tuple[str, str]


def _work(job: Job) -> tuple[str, int]:
    """Stands in for a fit: returns the worker's pid, except for the jobs that crash, raise or hang."""
    name, path = job
    if name == "crash":
        os._exit(3)
    if name == "raise":
        raise ValueError("a bad job")
    if name == "unpicklable":
        return name, lambda: None  # type: ignore[return-value]
    if name == "hang":
        Path(path).touch()
        time.sleep(120)
    return name, os.getpid()


def _died(job: Job) -> tuple[str, int]:
    return "died", -1


def test_a_worker_added_later_takes_the_jobs_in_order_and_one_bad_job_fails_alone() -> None:
    jobs: list[Job] = [("first", ""), ("raise", ""), ("crash", ""), ("unpicklable", ""), ("after", "")]
    fits = Fits(jobs, _work, _died)
    try:
        assert fits.workers == 0  # nothing runs until a worker is added
        fits.add_workers(1)
        first = fits.result(jobs[0])
        with pytest.raises(ValueError, match="a bad job"):
            fits.result(jobs[1])
        assert fits.result(jobs[2]) == ("died", -1)
        with pytest.raises(RuntimeError, match="cannot be sent between processes"):
            fits.result(jobs[3])
        after = fits.result(jobs[4])
        assert first[0] == "first" and after[0] == "after"
        assert after[1] != first[1]  # a fresh worker went on after the crash
        assert fits.workers == 1
        with pytest.raises(KeyError):
            fits.result(("never queued", ""))
    finally:
        fits.close()


def test_closing_kills_a_job_still_running_and_its_result_says_so(tmp_path: Path) -> None:
    started = tmp_path / "started"
    jobs: list[Job] = [("hang", str(started)), ("next", "")]
    fits = Fits(jobs, _work, _died)
    fits.add_workers(1)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists()
    before = time.monotonic()
    fits.close()
    assert time.monotonic() - before < 30  # killed, not waited for (the job sleeps 120 s)
    with pytest.raises(RuntimeError, match="closed"):
        fits.result(jobs[1])
    fits.add_workers(1)
    assert fits.workers == 1  # a closed queue starts no worker
