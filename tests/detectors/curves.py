"""Scripted loss curves and timings shared by the detector tests."""

import numpy as np

RNG = np.random.default_rng(0)


def decaying(n: int, start: float = 2.3, floor: float = 0.05, rate: float = 0.02, noise: float = 0.2) -> np.ndarray:
    """A healthy curve: exponential decay to a floor with multiplicative minibatch noise."""
    t = np.arange(n)
    return (floor + (start - floor) * np.exp(-rate * t)) * 10 ** (noise * RNG.standard_normal(n))


def jitter(values: np.ndarray, spread: float = 0.1) -> np.ndarray:
    """Multiplicative noise of ``spread`` (a relative standard deviation) on scripted timings."""
    return values * (1 + spread * RNG.standard_normal(len(values)))


def flat(n: int, level: float = 2.3, noise: float = 0.05) -> np.ndarray:
    return level * 10 ** (noise * RNG.standard_normal(n))


def feed(detector, values: np.ndarray, chunk: int = 10, start: int = 0, **kwargs) -> list:  # type: ignore[no-untyped-def]
    """Feed ``values`` in windows of ``chunk``; array keyword arguments as long as ``values`` are split alike."""
    found = []
    for i in range(0, len(values), chunk):
        part = values[i : i + chunk]
        extra = {
            k: (v[i : i + chunk] if isinstance(v, np.ndarray) and len(v) == len(values) else v)
            for k, v in kwargs.items()
        }
        found += detector.update(list(range(start + i, start + i + len(part))), part, **extra)
    return found
