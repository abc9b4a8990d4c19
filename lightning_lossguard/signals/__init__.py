"""What is measured: gradient norms, losses, step timings and memory, buffered on the device."""

from lightning_lossguard.signals.recorder import SignalRecorder
from lightning_lossguard.signals.step_timer import PHASES, timed
from lightning_lossguard.signals.window import Window

__all__ = ["PHASES", "SignalRecorder", "Window", "timed"]
