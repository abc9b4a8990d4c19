"""Process memory signals: the RSS, and the freed memory glibc's malloc keeps (read, logged, and spaced out when a
read costs CPU time)."""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from lightning_lossguard.signals import memory
from lightning_lossguard.signals.memory import allocator_free_mb, host_rss_mb
from tests.conftest import events, trainer

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc's free memory is read from glibc")
BLOCK = 100 * 1024  # below malloc's smallest mmap threshold: from the heap


@pytest.fixture
def fresh_reader() -> Iterator[None]:
    memory._READER.clear()
    yield
    memory._READER.clear()


@contextmanager
def blocks(count: int = 400) -> Iterator[Callable[[], None]]:
    """Allocate ``count`` blocks; the context gives a call that frees every other one (their neighbours keep the
    holes apart, so none goes back to the system); the rest are freed on exit."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    held = [libc.malloc(BLOCK) for _ in range(count)]

    def free_every_other() -> None:
        for block in held[::2]:
            libc.free(block)
        held[::2] = [None] * len(held[::2])

    try:
        yield free_every_other
    finally:
        for block in held:
            if block is not None:
                libc.free(block)


@glibc
def test_freed_blocks_the_allocator_keeps_are_read_as_free_memory(fresh_reader: None) -> None:
    with blocks() as free_every_other:
        before = allocator_free_mb()
        free_every_other()
        after = allocator_free_mb()
    assert before is not None and after is not None
    assert after - before > 0.8 * 200 * BLOCK / 2**20, (before, after)  # 200 holes of 100 KiB, ~19.5 MiB
    assert (host_rss_mb() or 0) > after


def reader_that(spend: Callable[[], None], calls: list[int]) -> memory._AllocatorReader:
    """An allocator reader whose every read runs ``spend`` first, counted in ``calls``, and reads 7 MiB free."""

    def read() -> memory._MallInfo2:
        calls.append(1)
        spend()
        return memory._MallInfo2(fordblks=7 * 2**20)

    return memory._AllocatorReader(os.getpid(), read)


def busy(ms: float) -> Callable[[], None]:
    def spin() -> None:
        end = time.thread_time() + ms / 1000
        while time.thread_time() < end:
            pass

    return spin


def test_a_costly_read_is_spaced_out_and_never_stands_in_for_a_fresh_one(fresh_reader: None) -> None:
    # 5 ms of CPU against a 2 ms limit: read, then two reports without a reading (NaN, not the old value), again.
    calls: list[int] = []
    memory._READER[:] = [reader_that(busy(5), calls)]
    readings = [allocator_free_mb() for _ in range(7)]
    assert [r if r is None or r == r else "not read" for r in readings] == [
        7.0,
        "not read",
        "not read",
        7.0,
        "not read",
        "not read",
        7.0,
    ]
    assert len(calls) == 3


def test_a_read_stretched_by_preemption_is_not_costly(fresh_reader: None) -> None:
    # 5 ms of wall time off the CPU (a busy host): the read cost almost nothing, so it is repeated at every report.
    calls: list[int] = []
    memory._READER[:] = [reader_that(lambda: time.sleep(0.005), calls)]
    assert [allocator_free_mb() for _ in range(4)] == [7.0] * 4 and len(calls) == 4


@glibc
def test_a_real_fit_logs_the_free_memory_beside_the_rss(tmp_path: Path) -> None:
    run = build("adam_regression")
    t = trainer(tmp_path, [LossGuard(verbose=False, report_every=20)], max_steps=60)
    t.fit(run.module, run.train)
    logged = events(t.logger.log_dir)  # type: ignore[union-attr]
    free = logged.Scalars("lossguard/memory/allocator_free_mb")
    rss = logged.Scalars("lossguard/memory/host_rss_mb")
    assert [s.step for s in free] == [s.step for s in rss] and len(free) >= 3
    assert all(0 <= f.value < r.value for f, r in zip(free, rss, strict=True))
