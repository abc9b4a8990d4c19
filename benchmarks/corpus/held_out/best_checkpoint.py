"""An image classifier trained the way most tutorials end their training section: a small BatchNorm CNN under Adam,
stopped by ``EarlyStopping(monitor="val_loss", patience=5)`` with a ``ModelCheckpoint`` keeping the epoch of the lowest
validation loss. The training set is small, so the validation loss bottoms out and climbs before the patience ends
the run."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class BlobCNN(L.LightningModule):
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        BlobCNN(),
        loader(images(400, size=16, noise=4.0, seed=seed), 32, seed=seed),
        loader(images(1000, size=16, noise=4.0, seed=seed + 100), 250, shuffle=False),
        trainer={
            "max_epochs": 40,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_loss", mode="min", patience=5),
                ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=1),
            ],
        },
    )


PROGRAMS = [
    Program(
        "early_stopped_cnn_h",
        "image classification",
        "a BatchNorm CNN on a small image set under Adam, EarlyStopping(val_loss, patience 5) and a ModelCheckpoint "
        "keeping the lowest validation loss, as tutorials end their training section",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
