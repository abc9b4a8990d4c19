"""LossGuard: Lightning callbacks that diagnose what goes wrong in a training run, and what to do about it.

>>> from lightning_lossguard import LossGuard
>>> guard = LossGuard(fail_on="error")
"""

from lightning_lossguard.alarm import LossGuardAlarm
from lightning_lossguard.callback import LossGuard
from lightning_lossguard.catalog import CATALOG
from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.monitor import Monitor
from lightning_lossguard.signals.step_timer import timed
from lightning_lossguard.version import __version__

__all__ = ["CATALOG", "Diagnosis", "LossGuard", "LossGuardAlarm", "Monitor", "Severity", "__version__", "timed"]
