"""Online hard example mining (OHEM), written against the standalone ``pytorch_lightning`` package: each batch's
per-example cross-entropy is computed, and only the hardest quarter is averaged and back-propagated. On data with
12% flipped labels the hardest quarter is mostly mislabelled examples, so the training loss stays high and noisy
while the validation loss (all clean examples) falls: the loss a user watches is not the one that improves. SGD with
momentum, step decay every four epochs."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.held_out.synthetic import clusters
from benchmarks.corpus.program import Program, Run

CLASSES, DIM, KEEP, FLIPPED = 10, 32, 0.25, 0.12


class HardMiningClassifier(pl.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(DIM, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        losses = F.cross_entropy(self(x), y, reduction="none")
        hardest = losses.topk(max(1, int(KEEP * len(losses)))).values
        loss = hardest.mean()
        self.log_dict({"train_loss": loss, "train_loss_all": losses.mean().detach()})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)]


def _noisy(data: TensorDataset, seed: int) -> TensorDataset:
    x, y = data.tensors
    g = generator(seed + 7)
    flip = torch.rand(len(y), generator=g) < FLIPPED
    y = torch.where(flip, torch.randint(0, CLASSES, (len(y),), generator=g), y)
    return TensorDataset(x, y)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = _noisy(clusters(4000, classes=CLASSES, dim=DIM, separation=0.8, spread=0.7, seed=seed, task_seed=43), seed)
    val = clusters(1000, classes=CLASSES, dim=DIM, separation=0.8, spread=0.7, seed=seed + 100, task_seed=43)
    return Run(
        HardMiningClassifier(),
        loader(train, 64, seed=seed),
        loader(val, 500, shuffle=False),
        trainer={"max_epochs": 10},
    )


PROGRAMS = [
    Program(
        "ohem_noisy_labels_h",
        "noisy-label classification (hard example mining)",
        "online hard example mining (pytorch_lightning): the hardest 25% of each batch's per-example losses averaged, "
        "on 12% flipped labels, so the training loss stays high while the clean validation loss falls; SGD with "
        "momentum and a step decay",
        _build,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6", "flipped_sign"),
    )
]
