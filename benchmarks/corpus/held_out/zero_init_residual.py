"""A BatchNorm residual CNN with the last BatchNorm of each residual branch started at a zero scale
(``zero_init_residual``, as large-batch ImageNet recipes do), so each block starts as the identity; label smoothing,
no weight decay on BatchNorm parameters and biases, SGD with Nesterov momentum under a one-cycle schedule per step."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, CHANNELS, WIDTH, BLOCKS, EPOCHS, BATCH, SAMPLES = 10, 16, 3, 24, 3, 5, 64, 2048


class BasicBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTH)
        self.conv2 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(WIDTH)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ZeroInitResNet(L.LightningModule):
    def __init__(self, lr: float = 0.2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = nn.Sequential(
            nn.Conv2d(CHANNELS, WIDTH, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(WIDTH), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[BasicBlock() for _ in range(BLOCKS)])
        self.fc = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        decay = [p for p in self.parameters() if p.ndim > 1]
        no_decay = [p for p in self.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.SGD(groups, lr=self.hparams.lr, momentum=0.9, nesterov=True)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        ZeroInitResNet(),
        loader(images(SAMPLES, CLASSES, SIZE, CHANNELS, noise=2.5, seed=seed), BATCH, seed=seed),
        loader(images(512, CLASSES, SIZE, CHANNELS, noise=2.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "zero_init_residual_resnet_h",
        "image classification",
        "a BatchNorm ResNet with each branch's last BatchNorm scale at zero (zero_init_residual), label smoothing, "
        "no weight decay on BatchNorm and biases; SGD Nesterov under OneCycleLR per step",
        _build,
        faults=("lr_x1000", "flipped_sign", "frozen"),
    )
]
