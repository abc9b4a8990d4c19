"""memory_growth on scripted memory series: steady growth, one-time jumps, an allocator settling."""

import numpy as np

from lightning_lossguard.detectors import MemoryGrowth
from lightning_lossguard.detectors.memory_growth import MemoryGrowthThresholds


def test_memory_growth_and_a_one_time_jump() -> None:
    growing, jump = MemoryGrowth(), MemoryGrowth()
    found, quiet = [], []
    for i in range(10):
        found += growing.update(50 * i, {"host RSS": 300.0 + 40 * i})
        quiet += jump.update(50 * i, {"host RSS": 300.0 if i < 5 else 800.0, "CUDA allocated": None})
    assert found and found[0].subject == "host RSS" and found[0].evidence["mb_per_1000_steps"] > 500
    assert quiet == []


def test_an_allocator_settling_into_new_sizes_is_not_a_leak() -> None:
    """Host RSS of a GPT with a sequence-length warm-up in a process that ran other fits first (measured, its
    growth scaled 1.5x past the 64 MiB floor): it climbs, but two thirds of the climb is in the first half."""
    measured = np.array([453, 469, 461, 476, 490, 493, 499, 498, 509], dtype=float)
    series = [453.0, *(453 + 1.5 * (measured - 453))]  # the first sample is the one-time allocations'
    steps = [0, 31, 47, 86, 125, 164, 203, 242, 281, 319]

    def found(detector: MemoryGrowth) -> list:
        return [d for s, v in zip(steps, series) for d in detector.update(s, {"host RSS": v})]

    assert found(MemoryGrowth(MemoryGrowthThresholds(late_share=0.25))), "a late share of 1/4 calls it a leak"
    assert found(MemoryGrowth()) == []
