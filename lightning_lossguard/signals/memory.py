"""Process memory, sampled once per report interval (host counters: no device wait)."""

from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import cast

import torch

_STATM: list[int] = []  # [descriptor, pid]: opened once per process (an open() per report costs ~0.3 ms)


def host_rss_mb() -> float | None:
    """Resident set size of this process in MiB (Linux ``/proc``; None elsewhere)."""
    try:
        if not _STATM or _STATM[1] != os.getpid():  # a forked worker has its own /proc/self
            _STATM[:] = [os.open("/proc/self/statm", os.O_RDONLY), os.getpid()]
        resident_pages = int(os.pread(_STATM[0], 128, 0).split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33+): byte counts of the C allocator's arenas."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


SLOW_ALLOCATOR_READ_MS = 2.0
"""A read of the allocator's free memory walks its free chunks (~0.1 ms per 1,000; a badly fragmented heap can
cost tens of ms). A read that cost more CPU time than this is not repeated for as many reports as it cost limits, so
the reads average at most this much per report."""


@dataclasses.dataclass
class _AllocatorReader:
    pid: int
    read: Callable[[], _MallInfo2] | None
    skip: int = 0  # reports left out after a costly read


_READER: list[_AllocatorReader] = []  # one per process (a forked worker reads its own arenas)


def allocator_free_mb() -> float | None:
    """Memory the C allocator (glibc malloc) has freed but keeps in its arenas, in MiB: resident, but held by no
    object. None where it cannot be read (another C library, glibc before 2.33); NaN at a report where it is not read
    (after a costly read, :data:`SLOW_ALLOCATOR_READ_MS`), never a stale value: the RSS less an old reading is the
    RSS again, allocator creep included.

    The cost is the read's CPU time, not its wall time: in a corpus worker on a busy host one read took 3.5 ms of wall
    time for 1.6 ms of CPU, and the old wall-clock rule then stopped reading for the rest of the process, while the
    last value stood for every later fit (a GPT's allocator creep then read as a leak)."""
    if not _READER or _READER[0].pid != os.getpid():
        _READER[:] = [_AllocatorReader(os.getpid(), _mallinfo2())]
    reader = _READER[0]
    if reader.read is None:
        return None
    if reader.skip > 0:
        reader.skip -= 1
        return math.nan
    start = time.thread_time()
    try:
        free = float(reader.read().fordblks) / 2**20
    except Exception:  # a monitoring read never breaks training
        reader.read = None
        return None
    cost_ms = (time.thread_time() - start) * 1000
    reader.skip = max(0, math.ceil(cost_ms / SLOW_ALLOCATOR_READ_MS) - 1)  # reads average at most the limit
    return free


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        read = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError, TypeError):
        return None
    read.restype, read.argtypes = _MallInfo2, []
    return cast(Callable[[], _MallInfo2], read)


def device_allocated_mb(device: torch.device) -> float | None:
    """Memory held by tensors on a CUDA device in MiB (the allocator's counter; None off CUDA)."""
    if device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(device) / 2**20
