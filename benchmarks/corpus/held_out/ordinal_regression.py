"""Ordinal regression with a rank-consistent binary decomposition (CORAL), as graders of ordered outcomes train it
(credit grades, ages in bands, star ratings): an MLP scores each example, one shared weight maps the score to a
logit, and K-1 learned biases turn it into K-1 binary questions "is the grade above k?", each trained with a binary
cross entropy against the cumulative labels (summed over the questions, averaged over the batch). The predicted grade
is the number of questions answered yes. SGD with Nesterov momentum and weight decay, cosine-annealed per epoch;
validation reports the mean absolute error in grades and the exact-grade rate.

The data: ten standard-normal features; a latent score linear in them with one interaction and noise, cut into five
grades at uneven thresholds (the middle grades are the common ones)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

FEATURES, GRADES = 10, 5
CUTS = (-1.6, -0.5, 0.6, 1.7)
"""Where the standardised latent score is cut into grades."""


def _applicants(n: int, seed: int) -> TensorDataset:
    g = generator(seed)
    task = generator(11)  # the same scoring rule for every seed and split
    weights = torch.randn(FEATURES, generator=task) / FEATURES**0.5
    x = torch.randn(n, FEATURES, generator=g)
    score = x @ weights + 0.4 * torch.tanh(x[:, 0] * x[:, 1]) + 0.35 * torch.randn(n, generator=g)
    score = (score - score.mean()) / score.std()
    grade = (score.unsqueeze(1) > torch.tensor(CUTS)).sum(1)
    return TensorDataset(x, grade)


class CoralGrader(L.LightningModule):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, width), nn.ReLU(), nn.Linear(width, width // 2), nn.ReLU())
        self.score = nn.Linear(width // 2, 1, bias=False)
        self.thresholds = nn.Parameter(torch.zeros(GRADES - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.score(self.body(x)) + self.thresholds
        return logits

    @staticmethod
    def _levels(grade: torch.Tensor) -> torch.Tensor:
        """Grade g as K-1 binary targets: 1 for the questions "above k?" with k < g."""
        return (grade.unsqueeze(1) > torch.arange(GRADES - 1, device=grade.device)).float()

    def _loss(self, logits: torch.Tensor, grade: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, self._levels(grade), reduction="none").sum(1).mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, grade = batch
        loss = self._loss(self(x), grade)
        self.log("train_coral", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, grade = batch
        logits = self(x)
        predicted = (logits > 0).sum(1)
        self.log_dict(
            {
                "val_loss": self._loss(logits, grade),
                "val_grade_mae": (predicted - grade).abs().float().mean(),
                "val_exact": (predicted == grade).float().mean(),
            }
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=8)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        CoralGrader(),
        loader(_applicants(4096, seed), 64, seed=seed),
        loader(_applicants(1024, seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "ordinal_coral_h",
        "ordinal regression",
        "an MLP scoring examples into five ordered grades through a shared weight and K-1 learned thresholds (CORAL), "
        "a binary cross entropy per cumulative question summed over the questions; SGD with Nesterov momentum and "
        "weight decay, cosine-annealed per epoch; grade MAE validated",
        _build,
        faults=("lr_x1000", "flipped_sign", "nan_batch", "lr_div_1e6"),
    )
]
