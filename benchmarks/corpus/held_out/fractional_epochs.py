"""A click-through-style binary classifier on a large table, trained on a fraction of it each epoch as code for big
datasets does: ``limit_train_batches=0.25`` (a quarter of the shuffled loader per epoch, a fresh quarter each time)
and ``limit_val_batches=0.5``. An MLP over the features with dropout, ``BCEWithLogitsLoss``, AdamW with a linear
warm-up then a linear decay stepped every batch (``interval="step"``, sized from the limited epochs)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run

DIM, EPOCHS, BATCH, SHARE = 20, 8, 128, 0.25


def clicks(n: int, seed: int) -> TensorDataset:
    """Features and a label that is 1 where a noisy smooth score is above its median (about half the rows)."""
    x, score = regression(n, dim=DIM, noise=0.6, seed=seed).tensors
    return TensorDataset(x, (score > 0.5).float())


class ClickModel(L.LightningModule):
    def __init__(self, steps: int, lr: float = 2e-3, warmup: int = 50) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(DIM, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log_dict(
            {"val_loss": F.binary_cross_entropy_with_logits(logits, y), "val_acc": ((logits > 0) == y).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        steps, warmup = self.hparams.steps, self.hparams.warmup

        def factor(step: int) -> float:
            return (step + 1) / warmup if step < warmup else max(0.05, (steps - step) / (steps - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    train = loader(clicks(32768, seed), BATCH, seed=seed)
    return Run(
        ClickModel(steps=int(len(train) * SHARE) * EPOCHS),
        train,
        loader(clicks(8192, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": EPOCHS, "limit_train_batches": SHARE, "limit_val_batches": 0.5},
    )


PROGRAMS = [
    Program(
        "quarter_epochs_click_model_h",
        "tabular classification",
        "a binary MLP classifier on a large table that sees a quarter of it per epoch (limit_train_batches=0.25, "
        "limit_val_batches=0.5), BCE with logits, AdamW with a per-step warm-up and linear decay",
        _build,
        faults=("lr_x1000", "frozen", "nan_batch"),
    )
]
