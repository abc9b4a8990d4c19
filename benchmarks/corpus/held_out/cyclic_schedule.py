"""Smith's cyclical learning rate: the rate sweeps between a low and a high bound every few hundred steps (momentum
cycling the other way), so the training loss rises on every ascent and falls on every descent, by design."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class CyclicMLP(L.LightningModule):
    """A flattening MLP classifier with dropout; SGD with momentum under ``CyclicLR`` ("triangular2": each cycle's
    amplitude half the last), stepped per batch, 60 steps up and 60 down."""

    def __init__(self, pixels: int = 256, classes: int = 10, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(pixels, width), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(width, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, classes),
        )  # fmt: skip

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
        cyclic = torch.optim.lr_scheduler.CyclicLR(
            optimizer, base_lr=0.002, max_lr=0.05, step_size_up=60, mode="triangular2", cycle_momentum=True
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cyclic, "interval": "step"}}


def _build(seed: int) -> Run:
    return Run(
        CyclicMLP(),
        loader(images(4096, noise=3.0, seed=seed), 64, seed=seed),
        loader(images(512, noise=3.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "cyclic_lr_triangular_h",
        "image classification",
        "an MLP classifier under CyclicLR (triangular2, 0.002-0.05, 60 steps up and 60 down, momentum cycling), "
        "SGD stepped per batch: the loss rises on every ascent",
        _build,
        faults=("frozen", "flipped_sign", "nan_batch"),  # the lr faults scale base_lrs, not CyclicLR's max_lrs
    )
]
