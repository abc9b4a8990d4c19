"""Opt-in output checks: :class:`OutputMonitor` and the feature-geometry functions it uses.

Steps hand their predictions over by returning ``{"loss": loss, "preds": preds, "target": target}``;
see :mod:`lightning_lossguard.outputs.convention`.
"""

from lightning_lossguard.outputs.output_monitor import OUTPUT_DETECTORS, OutputMonitor
from lightning_lossguard.outputs.similarity import class_separation, class_sums, linear_cka

__all__ = ["OUTPUT_DETECTORS", "OutputMonitor", "class_separation", "class_sums", "linear_cka"]
