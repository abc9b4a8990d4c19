"""What a corpus program is: a real training pattern, built for a seed, with the faults it can be given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

SPLITS = ("tuning", "held_out")
"""``tuning``: programs the detectors may be tuned on. ``held_out``: written apart, measured, never tuned on."""


@dataclass
class Run:
    """One built training run: the module, its data, and the Trainer arguments it needs.

    ``trainer`` holds what the pattern itself sets (``max_steps``, ``gradient_clip_val``, ``precision``,
    ``accumulate_grad_batches``, ``overfit_batches``, extra ``callbacks`` such as ``BackboneFinetuning``...).
    The runner adds the logger, LossGuard and quiet defaults.
    """

    module: L.LightningModule
    # A data module brings its own validation loader; a dict of loaders is combined by Lightning (max_size_cycle).
    train: DataLoader[Any] | L.LightningDataModule | dict[str, DataLoader[Any]]
    val: DataLoader[Any] | list[DataLoader[Any]] | None = None
    trainer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Program:
    """A healthy training program modelled on a pattern public Lightning code uses.

    Attributes:
        name: unique, snake_case.
        family: what kind of training it is ("image classification", "GAN", "RL", "language model", ...).
        pattern: one sentence on the real-world pattern it reproduces (model, optimizer, schedule, step).
        build: ``seed -> Run``; everything random (init, data, order) derives from the seed.
        faults: names from :data:`benchmarks.corpus.faults.FAULTS` that make sense for this program (2-3).
        output_module: dotted name of the submodule whose output is the model's prediction (for the
            ``exp_output`` fault); "" when the program does not offer that fault.
        output_monitor: its ``training_step`` hands over ``{"loss", "preds", "target"}`` (a regression or
            reconstruction head), so the runner adds ``OutputMonitor()``, the opt-in check of predictions against
            targets, to LossGuard.
        split: "tuning" or "held_out", set from the package the program lives in.
    """

    name: str
    family: str
    pattern: str
    build: Callable[[int], Run]
    faults: tuple[str, ...] = ()
    output_module: str = ""
    output_monitor: bool = False
    split: str = ""
