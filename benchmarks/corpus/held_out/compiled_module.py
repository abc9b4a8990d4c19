"""A residual CNN whose network is compiled with ``torch.compile`` inside the LightningModule (the way Lightning's
docs and many training scripts speed a model up): TorchDynamo captures the forward, AOTAutograd traces forward and
backward together, so the layers run as one compiled graph, not module by module, and a change of batch size or of
train/eval mode compiles again. ``backend="aot_eager"``: the same capture and autograd tracing as the default
inductor backend, without generating C++ (a host without a compiler can run it). SGD with Nesterov momentum, a
one-cycle schedule per batch, label smoothing."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, EPOCHS, BATCH, TRAIN = 10, 6, 64, 2048


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class CompiledResNet(L.LightningModule):
    def __init__(self, lr: float = 0.1, steps: int = EPOCHS * TRAIN // BATCH) -> None:
        super().__init__()
        self.save_hyperparameters()
        network = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            Residual(16),
            nn.MaxPool2d(2),
            Residual(16),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, CLASSES),
        )
        self.network = torch.compile(network, backend="aot_eager")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, label = batch
        loss = F.cross_entropy(self(x), label, label_smoothing=0.1)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, label = batch
        logits = self(x)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, label), "val_acc": (logits.argmax(1) == label).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(
            self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=self.hparams.steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    return Run(
        CompiledResNet(),
        loader(images(TRAIN, classes=CLASSES, noise=1.5, seed=seed), BATCH, seed=seed),
        loader(images(512, classes=CLASSES, noise=1.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "compiled_resnet_h",
        "image classification",
        "a residual CNN with BatchNorm compiled with torch.compile inside the LightningModule (one captured graph "
        "forward and backward, recompiled for eval mode); SGD with Nesterov momentum, one-cycle per batch, label "
        "smoothing",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
