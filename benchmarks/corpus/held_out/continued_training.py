"""Continued training of a converged image classifier on newly collected data, the way a model in production is
refreshed: the pretrained weights are loaded, every layer is trained again at a small learning rate (AdamW 1e-4), with
``EarlyStopping`` (patience 3) and a best ``ModelCheckpoint`` on the validation loss. The model had little left to
learn, so the losses barely move and early stopping ends the run after a few epochs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES = 10


class SmallCNN(L.LightningModule):
    def __init__(self, lr: float = 1e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)


def pretrained(seed: int) -> SmallCNN:
    """The model as it was shipped: trained to convergence on the first collection (a plain loop, as a
    pretraining script outside this run would)."""
    torch.manual_seed(seed)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(6):
        for x, y in loader(images(2000, CLASSES, noise=1.5, seed=seed + 1000), 64, seed=seed):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model


def _build(seed: int) -> Run:
    model = pretrained(seed)
    return Run(
        model,
        loader(images(1000, CLASSES, noise=1.5, seed=seed), 64, seed=seed),
        loader(images(1000, CLASSES, noise=1.5, seed=seed + 100), 500, shuffle=False),
        trainer={
            "max_epochs": 30,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_loss", mode="min", patience=3),
                ModelCheckpoint(monitor="val_loss", mode="min"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "continued_training_early_stopped_h",
        "fine-tuning",
        "a converged CNN classifier trained again on newly collected data, every layer at AdamW 1e-4, early stopping "
        "(patience 3) and the best epoch kept",
        _build,
        faults=("frozen", "lr_x1000", "lr_div_1e6"),
        output_module="head",
    )
]
