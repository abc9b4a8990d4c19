"""Stochastic weight averaging with Lightning's own callback: a BatchNorm CNN trained by SGD with momentum and a
per-epoch cosine schedule, then ``StochasticWeightAveraging`` swaps in its constant SWA learning rate, averages
the weights once per epoch and, because the model has BatchNorm, adds one epoch of forward passes only (no
backward) to recompute the running statistics of the averaged weights."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import StochasticWeightAveraging
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class SmallBNNet(L.LightningModule):
    """Two conv-BN-ReLU-pool blocks and a linear classifier."""

    def __init__(self, classes: int = 10, width: int = 16, lr: float = 0.05, epochs: int = 6) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(8 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.epochs)
        return [optimizer], [schedule]


def _build(seed: int) -> Run:
    epochs = 6
    return Run(
        SmallBNNet(epochs=epochs),
        loader(images(1536, classes=10, size=12, noise=3.0, seed=seed), 32, seed=seed),
        loader(images(512, classes=10, size=12, noise=3.0, seed=seed + 100), 256, shuffle=False),
        # SWA from epoch 3 (0.5 of 6) at a constant 0.01 after one epoch of cosine annealing to it.
        trainer={
            "max_epochs": epochs,
            "callbacks": [StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=0.5, annealing_epochs=1)],
        },
    )


PROGRAMS = [
    Program(
        "swa_bn_cnn_h",
        "image classification",
        "a BatchNorm CNN, SGD momentum + per-epoch cosine, then Lightning's StochasticWeightAveraging (SWA "
        "learning rate from mid-run, weights averaged per epoch, an extra forward-only epoch for BatchNorm)",
        _build,
        faults=("lr_x1000", "no_zero_grad", "nan_batch"),
    )
]
