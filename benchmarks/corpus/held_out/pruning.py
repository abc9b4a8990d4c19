"""Iterative magnitude pruning with Lightning's ``ModelPruning`` callback in its documented form: L1 unstructured
pruning of the linear layers at the end of some epochs, with its default lottery-ticket rewinding (the weights
that survive are reset to their values at the start of training, so the loss climbs back each time and the
sparser network learns again)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelPruning
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

PRUNE_AFTER = (1, 3)
"""Epochs whose end prunes 40% of the remaining weights (then rewinds the rest)."""


class PrunableMLP(L.LightningModule):
    """An MLP on flattened images, Adam; ``classifier`` is the output layer."""

    def __init__(self, inputs: int = 144, hidden: int = 128, classes: int = 10, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x.flatten(1)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _prune_now(epoch: int) -> bool:
    return epoch in PRUNE_AFTER


def _build(seed: int) -> Run:
    pruning = ModelPruning(
        "l1_unstructured", amount=0.4, apply_pruning=_prune_now, use_global_unstructured=True, verbose=0
    )
    return Run(
        PrunableMLP(),
        loader(images(2048, classes=10, size=12, noise=3.0, seed=seed), 64, seed=seed),
        loader(images(512, classes=10, size=12, noise=3.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6, "callbacks": [pruning]},
    )


PROGRAMS = [
    Program(
        "lottery_pruning_h",
        "model compression",
        "an MLP pruned by Lightning's ModelPruning (global L1 unstructured, 40% at the end of epochs 1 and 3) with "
        "its default lottery-ticket rewinding of the surviving weights to their initial values, Adam",
        _build,
        faults=("lr_x1000", "flipped_sign", "no_zero_grad"),
    )
]
