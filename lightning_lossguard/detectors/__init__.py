"""What the numbers mean: one detector per diagnosis code. Pure: no Lightning imports."""

from lightning_lossguard.detectors.base import Detector, Thresholds
from lightning_lossguard.detectors.dead_gradients import DeadGradients
from lightning_lossguard.detectors.expensive_loss import ExpensiveLoss
from lightning_lossguard.detectors.exploding_gradients import ExplodingGradients
from lightning_lossguard.detectors.loss_divergence import LossDivergence
from lightning_lossguard.detectors.loss_oscillation import LossOscillation
from lightning_lossguard.detectors.loss_plateau import LossPlateau
from lightning_lossguard.detectors.loss_scale_shift import LossScaleShift
from lightning_lossguard.detectors.loss_term_imbalance import LossTermImbalance
from lightning_lossguard.detectors.memory_growth import MemoryGrowth
from lightning_lossguard.detectors.nonfinite_gradients import NonfiniteGradients
from lightning_lossguard.detectors.nonfinite_loss import NonfiniteLoss
from lightning_lossguard.detectors.rank_straggler import RankStraggler
from lightning_lossguard.detectors.slowing_loss_step import SlowingLossStep
from lightning_lossguard.detectors.stalled_training import StalledTraining
from lightning_lossguard.detectors.tiny_updates import TinyUpdates
from lightning_lossguard.detectors.val_loss_rising import ValLossRising
from lightning_lossguard.detectors.vanishing_gradients import VanishingGradients

DETECTORS: dict[str, type[Detector]] = {  # type: ignore[type-arg]
    cls.code: cls
    for cls in (
        NonfiniteLoss,
        NonfiniteGradients,
        ExplodingGradients,
        VanishingGradients,
        DeadGradients,
        TinyUpdates,
        LossDivergence,
        LossPlateau,
        LossOscillation,
        ValLossRising,
        LossTermImbalance,
        LossScaleShift,
        SlowingLossStep,
        ExpensiveLoss,
        MemoryGrowth,
        RankStraggler,
    )
}
"""Detector class per diagnosis code judged on windows of signals."""

EVENT_DETECTORS: dict[str, type[Detector]] = {StalledTraining.code: StalledTraining}  # type: ignore[type-arg]
"""Codes decided outside the report windows, when something happens (the watchdog thread's stalls)."""

__all__ = [
    "DETECTORS",
    "EVENT_DETECTORS",
    "DeadGradients",
    "Detector",
    "ExpensiveLoss",
    "ExplodingGradients",
    "LossDivergence",
    "LossOscillation",
    "LossPlateau",
    "LossScaleShift",
    "LossTermImbalance",
    "MemoryGrowth",
    "NonfiniteGradients",
    "NonfiniteLoss",
    "RankStraggler",
    "SlowingLossStep",
    "StalledTraining",
    "Thresholds",
    "TinyUpdates",
    "ValLossRising",
    "VanishingGradients",
]
