"""Worker processes that run corpus fits side by side: one fit at a time each, taken in order from one queue.

Workers may join while the queue is being worked through. The suite uses that to start the corpus' fits when its
tests are collected, on every core but the one the rest of the suite runs on, and to add that core when the
corpus' own tests are reached (tests/conftest.py).
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import os
import signal
import threading
import warnings
from collections import deque
from collections.abc import Callable, Hashable
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

import torch

JobT = TypeVar("JobT", bound=Hashable)
ResultT = TypeVar("ResultT")


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def quiet() -> None:
    """One torch thread, no warnings or Lightning info lines: what every corpus fit runs with."""
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    torch.set_num_threads(1)


class WorkerDied(Exception):
    """The worker process running a job died (killed, or a crash in native code); the message says how."""


def _serve(connection: Connection, work: Callable[[Any], Any]) -> None:
    """A worker process: set up by :func:`quiet`, it runs the jobs it receives until its pipe closes. A crash in
    native code prints the Python stack of every thread to stderr first, so the log says where it died."""
    faulthandler.enable()
    quiet()
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        try:
            reply: tuple[bool, Any] = (True, work(job))
        except Exception as error:  # handed back: the caller of Fits.result sees it raised
            reply = (False, error)
        try:
            connection.send(reply)
        except Exception as error:  # a result or exception that does not pickle: nothing was sent yet
            connection.send((False, RuntimeError(f"{job} gave back what cannot be sent between processes: {error}")))


class _Worker:
    """One spawned worker process and its pipe. Spawned, not forked: forking a process whose torch thread pools
    have started can hang the child."""

    def __init__(self, work: Callable[[Any], Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        # daemonic: ended with this process even if it exits without closing the fits (a fit starts no process)
        self._process = context.Process(target=_serve, args=(child, work), name="corpus-fit", daemon=True)
        self._process.start()
        child.close()

    def run(self, job: Any) -> tuple[bool, Any]:
        try:
            self._pipe.send(job)
            reply: tuple[bool, Any] = self._pipe.recv()
        except (EOFError, OSError) as error:
            raise WorkerDied(self._how_it_ended()) from error
        return reply

    def _how_it_ended(self) -> str:
        self._process.join(timeout=5)
        code = self._process.exitcode
        if code is None:
            return "its pipe closed while the process still ran"
        if code < 0:
            name = signal.Signals(-code).name
            return f"killed by {name}" + (" (what the out-of-memory killer sends)" if name == "SIGKILL" else "")
        return f"exited with code {code}"

    def kill(self) -> None:
        self._process.kill()

    def close(self) -> None:
        """Close the pipe (the worker then returns) and wait for the process; killed if it does not end in 5 s."""
        self._pipe.close()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


class Fits(Generic[JobT, ResultT]):
    """``work(job)`` for every job, in worker processes that take the jobs in order from one queue.

    A worker runs one job at a time, so a worker that dies died in its own job. A fresh worker runs that job once
    more, since a death can come from outside the job (a process killed when the host runs short of memory) as well
    as from the job itself (a crash in native code, which comes back). A job whose worker dies twice gets
    ``died(job, how)`` as its result, and the queue goes on: one bad fit fails its own test, not every test after it.
    Every death is kept in :attr:`deaths`, those of a job that then ran too, so that a retry is never silent. An
    exception raised by ``work`` is raised again by :meth:`result`."""

    ATTEMPTS = 2
    """Runs of a job whose worker dies in it, the first one included."""

    def __init__(self, jobs: list[JobT], work: Callable[[JobT], ResultT], died: Callable[[JobT, str], ResultT]) -> None:
        self._work, self._died = work, died
        self.deaths: dict[JobT, list[str]] = {}
        """Each job whose worker died while it ran, and how, in order."""
        self._queue = deque(jobs)
        self._queued = set(jobs)
        self._done: dict[JobT, tuple[bool, Any]] = {}
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running: set[_Worker] = set()
        self._closed = False

    @property
    def workers(self) -> int:
        """Workers started so far (a worker replaced after its death counts once)."""
        return len(self._threads)

    def death_note(self, job: JobT) -> str:
        """How the job's workers died, and what became of the job: run again in a fresh worker, or given up."""
        given_up = len(self.deaths.get(job, [])) >= self.ATTEMPTS
        return self._how_they_died(job) + ("; given up" if given_up else "; run again in a fresh worker")

    def _how_they_died(self, job: JobT) -> str:
        return "; then ".join(self.deaths.get(job, []))

    def add_workers(self, count: int) -> None:
        """Start ``count`` more worker processes on the queue (none once it is empty: closing empties it)."""
        for _ in range(count):
            with self._changed:
                if not self._queue:
                    return
            thread = threading.Thread(target=self._drain, name="corpus-fits", daemon=True)
            self._threads.append(thread)
            thread.start()

    def result(self, job: JobT) -> ResultT:
        """The job's result, once a worker has it (a worker is started if none is running)."""
        if job not in self._queued:
            raise KeyError(f"{job} is not one of these fits' jobs")
        if job not in self._done and not any(thread.is_alive() for thread in self._threads):
            self.add_workers(1)
        with self._changed:
            self._changed.wait_for(lambda: job in self._done or self._closed)
            if job not in self._done:
                raise RuntimeError(f"the fits were closed before {job} ran")
            ok, value = self._done[job]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        """Take no more jobs and end every worker, killing those still in a job (a session cut short)."""
        with self._changed:
            self._closed = True
            self._queue.clear()
            self._changed.notify_all()
            running = list(self._running)
        for worker in running:
            worker.kill()
        for thread in self._threads:
            thread.join()

    def _next(self) -> JobT | None:
        with self._changed:
            return self._queue.popleft() if self._queue else None

    def _drain(self) -> None:
        worker = self._start_worker()
        try:
            while (job := self._next()) is not None:
                for _ in range(self.ATTEMPTS):
                    try:
                        outcome = worker.run(job)
                        break
                    except WorkerDied as death:
                        if self._closed:
                            return
                        with self._changed:
                            self.deaths.setdefault(job, []).append(str(death))
                        self._end(worker)
                        worker = self._start_worker()
                else:
                    outcome = (True, self._died(job, self._how_they_died(job)))
                with self._changed:
                    self._done[job] = outcome
                    self._changed.notify_all()
        finally:
            self._end(worker)

    def _start_worker(self) -> _Worker:
        worker = _Worker(self._work)
        with self._changed:
            self._running.add(worker)
        return worker

    def _end(self, worker: _Worker) -> None:
        with self._changed:
            self._running.discard(worker)
        worker.close()
