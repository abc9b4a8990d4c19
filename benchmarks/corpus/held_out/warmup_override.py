"""A CNN classifier that warms its learning rate up by hand in an ``optimizer_step`` override, the pattern Lightning's
own documentation shows: for the first 300 steps each param group's ``lr`` is scaled by ``(step + 1) / 300`` before
``optimizer.step(closure=optimizer_closure)``. No scheduler is configured. SGD with Nesterov momentum and weight
decay, label smoothing."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

SIZE, CLASSES, EPOCHS, BATCH, WARMUP = 16, 10, 5, 64, 300


class HandWarmedCNN(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, CLASSES),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y, label_smoothing=0.1)
        self.log("train_loss", loss)
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        if self.trainer.global_step < WARMUP:
            scale = min(1.0, (self.trainer.global_step + 1) / WARMUP)
            for group in optimizer.param_groups:
                group["lr"] = scale * self.hparams.lr
        optimizer.step(closure=optimizer_closure)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


def _build(seed: int) -> Run:
    return Run(
        HandWarmedCNN(),
        loader(images(4096, classes=CLASSES, size=SIZE, noise=1.5, seed=seed), BATCH, seed=seed),
        loader(images(1024, classes=CLASSES, size=SIZE, noise=1.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "hand_warmed_cnn_h",
        "image classification",
        "a CNN whose optimizer_step override warms the learning rate up by hand for 300 steps (no scheduler), SGD "
        "with Nesterov momentum, label smoothing",
        _build,
        # lr_x1000 and lr_div_1e6 were offered at first and had no effect: the override sets each group's rate from
        # hparams.lr on every step of the 300-step warm-up, which outlasts the 320-step run (the losses were identical
        # to the healthy run's).
        faults=("nan_batch", "no_zero_grad", "frozen"),
    )
]
