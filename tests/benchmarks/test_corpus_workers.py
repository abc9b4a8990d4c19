"""The corpus' worker processes: jobs taken in order, workers that join later, a job that kills its worker (every
time, or once) or raises or gives back what cannot be sent, and a session cut short."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from benchmarks.corpus.workers import Fits

Job = tuple[str, str]


def _work(job: Job) -> tuple[str, int]:
    """Stands in for a fit: returns the worker's pid, except for the jobs that crash, raise or hang. "killed_once"
    is killed from outside the first time it runs (it leaves a file to tell), as a host short of memory would."""
    name, path = job
    if name == "crash":
        os._exit(3)
    if name == "killed_once" and not Path(path).exists():
        Path(path).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if name == "raise":
        raise ValueError("a bad job")
    if name == "unpicklable":
        return name, lambda: None  # type: ignore[return-value]
    if name == "hang":
        Path(path).touch()
        time.sleep(120)
    return name, os.getpid()


def _died(job: Job, how: str) -> tuple[str, str]:
    return "died", how


def test_a_worker_added_later_takes_the_jobs_in_order_and_one_bad_job_fails_alone() -> None:
    jobs: list[Job] = [("first", ""), ("raise", ""), ("crash", ""), ("unpicklable", ""), ("after", "")]
    fits = Fits(jobs, _work, _died)
    try:
        assert fits.workers == 0  # nothing runs until a worker is added
        fits.add_workers(1)
        first = fits.result(jobs[0])
        with pytest.raises(ValueError, match="a bad job"):
            fits.result(jobs[1])
        assert fits.result(jobs[2]) == ("died", "exited with code 3; then exited with code 3")  # run twice
        with pytest.raises(RuntimeError, match="cannot be sent between processes"):
            fits.result(jobs[3])
        after = fits.result(jobs[4])
        assert first[0] == "first" and after[0] == "after"
        assert after[1] != first[1]  # a fresh worker went on after the crash
        assert fits.workers == 1
        assert fits.deaths == {jobs[2]: ["exited with code 3"] * 2}
        assert fits.death_note(jobs[2]) == "exited with code 3; then exited with code 3; given up"
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


def test_a_job_whose_worker_is_killed_once_runs_again_in_a_fresh_worker_and_the_death_is_kept(tmp_path: Path) -> None:
    jobs: list[Job] = [("first", ""), ("killed_once", str(tmp_path / "killed")), ("after", "")]
    fits = Fits(jobs, _work, _died)
    try:
        fits.add_workers(1)
        first = fits.result(jobs[0])
        name, pid = fits.result(jobs[1])
        assert name == "killed_once" and pid != first[1]  # its result, from the fresh worker
        assert fits.result(jobs[2])[0] == "after"
        assert fits.deaths == {jobs[1]: ["killed by SIGKILL (what the out-of-memory killer sends)"]}
        assert fits.death_note(jobs[1]).endswith("; run again in a fresh worker")
    finally:
        fits.close()
