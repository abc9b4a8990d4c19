"""A small tabular classifier trained full-batch, as code ported from scikit-learn-style training loops does: the whole
training set is one batch (one step an epoch), validated after every epoch, Adam at 1e-2, up to 300 epochs with early
stopping on the validation loss (patience 20) and the best epoch kept.

In the tuning half: written to check the end-of-fit judgement of runs early stopping ends, its frozen fault (a
validation loss that dips for two evaluations as the last bias fits the class priors, then waits out the patience)
widened that judgement from "never below the first evaluation" to any run loss_plateau could not judge."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

TRAIN, VALIDATION, FEATURES, CLASSES = 300, 600, 32, 8


def tabular_classes(n: int, seed: int, task_seed: int = 91) -> TensorDataset:
    """Features through a fixed random two-layer map, the class its largest output plus noise: ``(x, label)``."""
    task = generator(task_seed)
    hidden = torch.randn(FEATURES, 24, generator=task) / FEATURES**0.5
    out = torch.randn(24, CLASSES, generator=task)
    s = generator(seed)
    x = torch.randn(n, FEATURES, generator=s)
    scores = torch.tanh(x @ hidden * 2) @ out + 0.8 * torch.randn(n, CLASSES, generator=s)
    return TensorDataset(x, scores.argmax(1))


class TabularClassifier(L.LightningModule):
    def __init__(self, features: int = FEATURES, hidden: int = 48, classes: int = CLASSES) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        TabularClassifier(),
        loader(tabular_classes(TRAIN, seed), TRAIN, seed=seed),
        loader(tabular_classes(VALIDATION, seed + 100), VALIDATION, shuffle=False),
        trainer={
            "max_epochs": 300,
            "log_every_n_steps": 1,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_loss", mode="min", patience=20),
                ModelCheckpoint(monitor="val_loss", mode="min"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "full_batch_tabular_early_stopped",
        "tabular classification",
        "an MLP classifier on 300 samples of 8 classes trained full-batch (one step an epoch), validated every epoch, "
        "Adam at 1e-2, early stopping (patience 20) and the best epoch kept",
        _build,
        faults=("frozen", "lr_div_1e6", "flipped_sign"),
        output_module="head",
    )
]
