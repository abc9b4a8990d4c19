"""Logistic regression, the smallest model there is: one linear layer on a nearly separable problem, Adagrad
as in click-through-rate models; it converges within a few dozen steps and the run keeps going long after."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import separable
from benchmarks.corpus.program import Program, Run


class LogisticRegression(L.LightningModule):
    """``nn.Linear(dim, 1)`` with ``BCEWithLogitsLoss`` and a small L2 term, Adagrad; validation loss and
    torchmetrics accuracy once per epoch."""

    def __init__(self, dim: int = 20, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(dim, 1)
        self.val_acc = torchmetrics.Accuracy(task="binary")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self(x), y) + 1e-4 * self.linear.weight.pow(2).sum()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log_dict({"val_loss": F.binary_cross_entropy_with_logits(logits, y), "val_acc": self.val_acc})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adagrad(self.parameters(), lr=self.hparams.lr)


def _build(seed: int) -> Run:
    return Run(
        LogisticRegression(),
        loader(separable(1024, seed=seed), 32, seed=seed),
        loader(separable(512, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 10},
    )


PROGRAMS = [
    Program(
        "logreg_adagrad_long_h",
        "linear model",
        "logistic regression (one nn.Linear, BCE with logits, L2) with Adagrad on a nearly separable problem: "
        "converged after a few dozen steps, trained for 10 epochs anyway",
        _build,
        faults=("lr_div_1e6", "flipped_sign", "nan_batch"),
    )
]
