"""A classifier trained with the multi-class hinge loss (Weston-Watkins, ``F.multi_margin_loss``) instead of cross
entropy, as SVM-headed networks are: an MLP whose scores must beat every wrong class by a margin of 1. Once a sample
clears its margins it contributes exactly nothing, so on separable data the loss reaches exactly zero on more and more
batches and their gradients are exactly zero in every layer: the run has converged, not died. SGD with momentum and
weight decay (applied by the optimizer, so it never shows in the gradients), a step decay."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import clusters
from benchmarks.corpus.program import Program, Run

CLASSES, DIM = 8, 32


class MarginClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.02) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(nn.Linear(DIM, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
        self.scores = nn.Linear(128, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        scores = self(x)
        loss = F.multi_margin_loss(scores, y, margin=1.0)
        with torch.no_grad():
            cleared = (scores.gather(1, y[:, None]) - scores >= 1.0).sum(1) == CLASSES - 1
        self.log_dict({"train_loss": loss, "train_cleared": cleared.float().mean()})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        scores = self(x)
        self.log_dict({"val_loss": F.multi_margin_loss(scores, y), "val_acc": (scores.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.3)]


def _data(n: int, seed: int) -> TensorDataset:
    return clusters(n, classes=CLASSES, dim=DIM, separation=0.8, spread=0.7, seed=seed)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        MarginClassifier(),
        loader(_data(3000, seed), 16, seed=seed),
        loader(_data(1000, seed + 100), 500, shuffle=False),
        trainer={"max_epochs": 20},
    )


PROGRAMS = [
    Program(
        "margin_classifier_h",
        "tabular classification",
        "an MLP trained with the multi-class hinge loss (multi_margin_loss): samples that clear their margins give "
        "exactly zero loss and gradient, so converged batches are all-zero in every layer; SGD with momentum, "
        "weight decay in the optimizer, a step decay",
        _build,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6", "frozen"),
    )
]
