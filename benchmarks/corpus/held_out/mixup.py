"""Mixup and CutMix augmentation (the timm recipe's switch between them per batch): every training batch is a
blend of two shuffled batches and the loss is the blend of the two cross-entropies, so the training loss stays
high and noisy while the clean validation loss falls; SGD Nesterov with a linear warm-up then cosine decay per
step."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class MixupCNN(L.LightningModule):
    def __init__(self, classes: int = 10, lr: float = 0.05, alpha: float = 0.4, warmup: int = 40, total: int = 600):
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 24, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(24, 48, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(48, classes)
        self.beta = torch.distributions.Beta(alpha, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    def _mix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        share = float(self.beta.sample())
        order = torch.randperm(len(x), device=x.device)
        if torch.rand(()) < 0.5:  # mixup: blend whole images
            return share * x + (1 - share) * x[order], order, share
        # CutMix: paste a box of the shuffled batch; the label share is the box's area
        size = x.shape[-1]
        side = int(size * math.sqrt(1 - share))
        top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,)))
        mixed = x.clone()
        mixed[..., top : top + side, left : left + side] = x[order][..., top : top + side, left : left + side]
        return mixed, order, 1 - side * side / (size * size)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        mixed, order, share = self._mix(x)
        logits = self(mixed)
        loss = share * F.cross_entropy(logits, y) + (1 - share) * F.cross_entropy(logits, y[order])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True)
        warmup, total = self.hparams.warmup, self.hparams.total

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    train = loader(images(1920, classes=10, size=12, noise=2.5, seed=seed), 32, seed=seed)
    epochs = 8
    return Run(
        MixupCNN(total=len(train) * epochs),
        train,
        loader(images(512, classes=10, size=12, noise=2.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": epochs},
    )


PROGRAMS = [
    Program(
        "mixup_cutmix_h",
        "image classification",
        "a CNN trained on Mixup or CutMix batches (Beta(0.4, 0.4), one of the two per batch) with the blended "
        "cross-entropy, SGD Nesterov with linear warm-up and cosine decay per step, clean validation",
        _build,
        faults=("flipped_sign", "lr_div_1e6", "exp_output"),
        output_module="head",
    )
]
