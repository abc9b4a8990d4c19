"""``Monitor``: an opt-in extension that LossGuard drives with the same measure -> judge -> tell contract.

A monitor watches something LossGuard does not watch by default (model outputs, features). It receives
the training and validation step outputs, must keep the per-step path free of host reads (buffer on the
device), and returns diagnoses only from its ``judge_*`` methods, which LossGuard calls on report steps
and at validation end. LossGuard applies suppression, severity overrides, report-once and ``fail_on`` to
them like to its own, and writes them to the same console, TensorBoard text and ``lossguard.json``.

    guard = LossGuard(monitors=[MyMonitor()])
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from lightning_lossguard.diagnosis import Diagnosis


class Monitor:
    """Base class: every hook is optional. Override what you need; keep the state picklable primitives."""

    codes: ClassVar[tuple[str, ...]] = ()
    """The diagnosis codes this monitor can emit (each must be in the catalog)."""

    every_batch: ClassVar[bool] = True
    """Whether :meth:`on_train_batch_end` must see every training batch. A monitor whose per-batch work only adds
    to sums that a sample of batches judges as well sets False: LossGuard then calls it on the batches its cost
    budget times (every one while the run fits the budget, every stride-th when it does not, and always the batch
    before a report), and plans that work with the gradient passes."""

    def setup(self, module: nn.Module, device: torch.device) -> None:
        """Fit start: register forward hooks, allocate buffers."""

    def on_train_batch_end(self, outputs: Any, batch: Any, step: int) -> None:
        """Per training batch (or per sampled one: see :attr:`every_batch`): device work only (no host reads)."""

    def on_validation_batch_end(self, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        """Per validation batch: device work only."""

    def judge_training(self, step: int) -> list[Diagnosis]:
        """Report step: read the buffers back (once) and judge them."""
        return []

    def judge_validation(self, step: int, epoch: int) -> list[Diagnosis]:
        """End of a validation run (sanity check excluded)."""
        return []

    def log(self, writers: list[Any], step: int) -> None:
        """Optional extra TensorBoard output (images, histograms) on the given SummaryWriters (rank 0)."""

    def notes(self) -> list[str]:
        """Plain notes for the end-of-fit summary (signals that were unavailable, and why)."""
        return []

    def teardown(self) -> None:
        """Fit end: remove hooks, free buffers."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
