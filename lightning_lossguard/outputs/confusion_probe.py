"""A validation confusion matrix accumulated on the device (torchmetrics), read back once per validation."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix


class _DeviceConfusionMatrix(MulticlassConfusionMatrix):
    """torchmetrics' confusion matrix with an update that never waits for the device.

    The stock update drops ``ignore_index`` targets by boolean indexing and counts with ``torch.bincount``;
    both read a size back from CUDA. Here out-of-range labels are masked and counted with ``index_add_``.
    """

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        classes = self.num_classes
        valid = (target >= 0) & (target < classes) & (preds >= 0) & (preds < classes)
        index = torch.where(valid, target * classes + preds, torch.zeros_like(target))
        self.confmat.view(-1).index_add_(0, index, valid.long())


class ConfusionProbe:
    """Validation predictions per (true, predicted) class pair.

    Under DDP each rank keeps its own shard (``sync_on_compute=False``): a collective here could hang
    ranks that saw different batches, and a shard is a fair sample of the validation set.
    """

    def __init__(self) -> None:
        self.metric: _DeviceConfusionMatrix | None = None
        self.samples = 0

    @property
    def classes(self) -> int:
        return self.metric.num_classes if self.metric is not None else 0

    def add(self, preds: torch.Tensor, target: torch.Tensor, classes: int) -> None:
        """Add flattened predicted and true class indices (device tensors)."""
        if self.metric is None or self.metric.num_classes != classes:
            self.metric = _DeviceConfusionMatrix(classes, validate_args=False, sync_on_compute=False).to(preds.device)
            self.samples = 0
        self.metric.update(preds, target)
        self.samples += preds.numel()

    def take(self) -> np.ndarray | None:
        """The matrix since the last call (rows: true class, columns: predicted), and start over."""
        if self.metric is None or not self.samples:
            return None
        matrix = self.metric.compute().cpu().numpy().astype(np.int64)
        self.metric.reset()
        self.samples = 0
        return matrix
