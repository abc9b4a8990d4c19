"""Process memory, sampled once per report interval (host counters: no device wait)."""

from __future__ import annotations

import os

import torch


def host_rss_mb() -> float | None:
    """Resident set size of this process in MiB (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def device_allocated_mb(device: torch.device) -> float | None:
    """Memory held by tensors on a CUDA device in MiB (the allocator's counter; None off CUDA)."""
    if device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(device) / 2**20
