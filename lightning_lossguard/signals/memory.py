"""Process memory, sampled once per report interval (host counters: no device wait)."""

from __future__ import annotations

import os

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


def device_allocated_mb(device: torch.device) -> float | None:
    """Memory held by tensors on a CUDA device in MiB (the allocator's counter; None off CUDA)."""
    if device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(device) / 2**20
