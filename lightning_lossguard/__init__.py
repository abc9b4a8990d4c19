"""LossGuard: Lightning callbacks that diagnose what goes wrong in a training run, and what to do about it.

>>> from lightning_lossguard import LossGuard
>>> guard = LossGuard(fail_on="error")

Exports are loaded on first use, so the ``lossguard`` command reads reports without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_lossguard.version import __version__

if TYPE_CHECKING:
    from lightning_lossguard.alarm import LossGuardAlarm
    from lightning_lossguard.callback import LossGuard
    from lightning_lossguard.catalog import CATALOG
    from lightning_lossguard.diagnosis import Diagnosis, Severity
    from lightning_lossguard.monitor import Monitor
    from lightning_lossguard.outputs import OutputMonitor
    from lightning_lossguard.signals.step_timer import timed

_EXPORTS = {
    "CATALOG": "lightning_lossguard.catalog",
    "Diagnosis": "lightning_lossguard.diagnosis",
    "LossGuard": "lightning_lossguard.callback",
    "LossGuardAlarm": "lightning_lossguard.alarm",
    "Monitor": "lightning_lossguard.monitor",
    "OutputMonitor": "lightning_lossguard.outputs",
    "Severity": "lightning_lossguard.diagnosis",
    "timed": "lightning_lossguard.signals.step_timer",
}

__all__ = [
    "CATALOG",
    "Diagnosis",
    "LossGuard",
    "LossGuardAlarm",
    "Monitor",
    "OutputMonitor",
    "Severity",
    "__version__",
    "timed",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lightning_lossguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
