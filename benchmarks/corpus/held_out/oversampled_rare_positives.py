"""A rare-event classifier trained on oversampled batches, as fraud and defect detection code often is: about 6% of
the rows are positive, a ``WeightedRandomSampler`` draws each class equally often (with replacement, a new draw
every epoch), and validation runs on the natural distribution. The validation binary cross-entropy is logged as
``val_loss`` beside torchmetrics' AUROC and average precision, and the best checkpoint is kept on the average
precision. RAdam with decoupled weight decay, batches of 256."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

FEATURES = 20


def rare_positives(n: int, seed: int, task_seed: int = 29) -> TensorDataset:
    """``(x [n, FEATURES], y [n, 1])``: positives where a nonlinear score of the features is in its top tail (about
    6%), with a few labels flipped either way."""
    w = torch.randn(FEATURES, generator=generator(task_seed)) / math.sqrt(FEATURES)
    g = generator(seed)
    x = torch.randn(n, FEATURES, generator=g)
    score = x @ w + 0.5 * x[:, 0] * x[:, 1] + 0.3 * torch.randn(n, generator=g)
    y = (score > 1.6).float()
    flip = torch.rand(n, generator=g) < 0.01
    y[flip] = 1 - y[flip]
    return TensorDataset(x, y.unsqueeze(1))


def oversampling(data: TensorDataset, seed: int) -> DataLoader[Any]:
    """Batches that hold each class about equally often: each row weighted by the inverse of its class' count."""
    labels = data.tensors[1].squeeze(1).long()
    counts = torch.bincount(labels, minlength=2).float()
    weights = (1.0 / counts)[labels]
    sampler = WeightedRandomSampler(weights, num_samples=len(data), replacement=True, generator=generator(seed))
    return DataLoader(data, batch_size=256, sampler=sampler)


class RarePositives(L.LightningModule):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(FEATURES, hidden),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        self.val_auroc = BinaryAUROC()
        self.val_ap = BinaryAveragePrecision()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_auroc.update(logits.squeeze(1), y.squeeze(1).long())
        self.val_ap.update(logits.squeeze(1), y.squeeze(1).long())
        self.log("val_loss", F.binary_cross_entropy_with_logits(logits, y))
        self.log_dict({"val_auroc": self.val_auroc, "val_ap": self.val_ap}, on_epoch=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.RAdam(self.parameters(), lr=2e-3, weight_decay=1e-2, decoupled_weight_decay=True)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        RarePositives(),
        oversampling(rare_positives(8192, seed), seed),
        loader(rare_positives(4096, seed + 100), batch_size=1024, shuffle=False),
        trainer={
            "max_epochs": 10,
            "enable_checkpointing": True,
            "callbacks": [ModelCheckpoint(monitor="val_ap", mode="max")],
        },
    )


PROGRAMS = [
    Program(
        "oversampled_rare_positives_h",
        "imbalanced classification",
        "an MLP on ~6% positives, a WeightedRandomSampler that balances the classes in every batch, validation "
        "on the natural distribution (BCE as val_loss, torchmetrics AUROC and average precision), the best "
        "checkpoint on average precision, RAdam with decoupled weight decay",
        _build,
        faults=("lr_x1000", "nan_batch", "exp_output"),
        output_module="net.5",
    )
]
