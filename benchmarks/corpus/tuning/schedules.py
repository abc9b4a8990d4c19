"""Learning-rate schedules stepped per batch: SGDR's CosineAnnealingWarmRestarts and the OneCycle policy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run
from benchmarks.corpus.tuning.shared import waveforms


class RestartsClassifier(L.LightningModule):
    """An MLP with BatchNorm1d on flattened images; SGD Nesterov with weight decay under
    CosineAnnealingWarmRestarts (T_0=32 steps, T_mult=2): the lr jumps back up at steps 32 and 96."""

    def __init__(self, classes: int = 10, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(144, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

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
        optimizer = torch.optim.SGD(
            self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=32, T_mult=2, eta_min=1e-4)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _restarts(seed: int) -> Run:
    return Run(
        RestartsClassifier(),
        loader(images(7168, size=12, noise=5.0, seed=seed), 64, seed=seed),
        loader(images(512, size=12, noise=5.0, seed=seed + 100), 512, shuffle=False),
        trainer={"max_steps": 224, "val_check_interval": 32},
    )


class OneCycleConv1d(L.LightningModule):
    """A 1-D CNN time-series classifier; AdamW under OneCycleLR (max_lr 1e-2, total steps from the Trainer's
    ``estimated_stepping_batches``) stepped every batch, as the fast.ai-style recipes do."""

    def __init__(self, classes: int = 4, max_lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv1d(1, 16, 7, padding=3),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 5, padding=2),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.max_lr, weight_decay=1e-2)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.max_lr, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _onecycle(seed: int) -> Run:
    return Run(
        OneCycleConv1d(),
        loader(waveforms(1024, seed=seed), 32, seed=seed),
        loader(waveforms(256, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "cosine_warm_restarts",
        "image classification",
        "a BatchNorm MLP classifier, SGD Nesterov + weight decay under CosineAnnealingWarmRestarts stepped per batch",
        _restarts,
        faults=("lr_x1000", "no_zero_grad", "frozen"),
    ),
    Program(
        "onecycle_conv1d",
        "time-series classification",
        "a 1-D CNN on noisy waveforms, AdamW under OneCycleLR stepped per batch (interval step)",
        _onecycle,
        faults=("lr_x1000", "flipped_sign", "frozen"),
    ),
]
