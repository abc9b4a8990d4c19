"""A Siamese encoder trained on pairs with ``nn.CosineEmbeddingLoss``, its gradient accumulation scheduled by
Lightning's ``GradientAccumulationScheduler``, as fine-tuning recipes do to take large effective batches early and
small ones late: 4 batches per step for two epochs, 2 for two more, then 1. Pairs of noisy signals are "same" when
both come from one of twelve prototype classes; a small 1-D convolutional encoder maps each to a unit vector. SGD
with Nesterov momentum at a constant rate; validation logs the loss and the accuracy of a cosine threshold."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import GradientAccumulationScheduler
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

CLASSES = 12
LENGTH = 48
EPOCHS = 7
MARGIN = 0.3


def signal_pairs(n: int, seed: int, task_seed: int = 47) -> TensorDataset:
    """``(left [n, 1, LENGTH], right [n, 1, LENGTH], same [n] in {1, -1})``: each signal is a smoothed random
    prototype of its class, shifted by up to 4 samples, plus noise; half the pairs share a class."""
    g_task = generator(task_seed)
    prototypes = F.avg_pool1d(torch.randn(CLASSES, 1, LENGTH, generator=g_task), 5, 1, 2) * 2.0
    g = generator(seed)
    left_class = torch.randint(0, CLASSES, (n,), generator=g)
    same = torch.rand(n, generator=g) < 0.5
    other = (left_class + torch.randint(1, CLASSES, (n,), generator=g)) % CLASSES
    right_class = torch.where(same, left_class, other)

    def draw(classes: torch.Tensor) -> torch.Tensor:
        shifts = torch.randint(-4, 5, (n,), generator=g)
        base = torch.stack([torch.roll(prototypes[c], int(s), dims=1) for c, s in zip(classes, shifts)])
        return base + 0.5 * torch.randn(n, 1, LENGTH, generator=g)

    return TensorDataset(draw(left_class), draw(right_class), same.float() * 2 - 1)


class SiameseEncoder(L.LightningModule):
    def __init__(self, width: int = 32, embedding: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(width, width, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(width, embedding),
        )
        self.criterion = nn.CosineEmbeddingLoss(margin=MARGIN)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(signal), dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        left, right, same = batch
        loss = self.criterion(self(left), self(right), same)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        left, right, same = batch
        a, b = self(left), self(right)
        cosine = (a * b).sum(1)
        accuracy = ((cosine > (1 + MARGIN) / 2).float() * 2 - 1 == same).float().mean()
        self.log_dict({"val_loss": self.criterion(a, b, same), "val_pair_acc": accuracy})

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    schedule = GradientAccumulationScheduler(scheduling={0: 4, 2: 2, 4: 1})
    return Run(
        SiameseEncoder(),
        loader(signal_pairs(2048, seed), batch_size=32, seed=seed),
        loader(signal_pairs(512, seed + 100), batch_size=256, shuffle=False),
        trainer={"max_epochs": EPOCHS, "callbacks": [schedule]},
    )


PROGRAMS = [
    Program(
        "siamese_cosine_pairs_h",
        "metric learning",
        "a 1-D convolutional Siamese encoder on same/different pairs with CosineEmbeddingLoss, gradient accumulation "
        "scheduled 4 -> 2 -> 1 batches per step by GradientAccumulationScheduler, SGD with Nesterov momentum",
        _build,
        faults=("lr_x1000", "no_zero_grad", "nan_batch"),
    )
]
