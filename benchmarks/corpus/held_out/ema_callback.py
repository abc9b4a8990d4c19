"""A CNN classifier trained as current vision recipes do on accelerators, here on CPU: the model and every batch in
``channels_last`` memory format, AdamW with ``fused=True`` (one kernel for the whole update), a one-cycle schedule,
and Lightning's own ``EMAWeightAveraging`` callback, which keeps an exponential moving average of the weights from
step 40, swaps it in for each validation and copies it into the model at the end of the fit."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, CHANNELS, EPOCHS, BATCH, SAMPLES = 10, 16, 3, 8, 64, 2048


class ChannelsLastCNN(L.LightningModule):
    def __init__(self, lr: float = 3e-3, total_steps: int = EPOCHS * SAMPLES // BATCH) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(CHANNELS, 24, 3, padding=1, bias=False),
            nn.BatchNorm2d(24),
            nn.SiLU(),
            nn.Conv2d(24, 48, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(48),
            nn.SiLU(),
            nn.Conv2d(48, 48, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(48),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(48, CLASSES)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x).flatten(1))

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
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05, fused=True)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=self.hparams.total_steps, pct_start=0.2
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        ChannelsLastCNN(),
        loader(images(SAMPLES, CLASSES, SIZE, CHANNELS, noise=2.0, seed=seed), BATCH, seed=seed),
        loader(images(512, CLASSES, SIZE, CHANNELS, noise=2.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS, "callbacks": [EMAWeightAveraging(decay=0.98, update_starting_at_step=40)]},
    )


PROGRAMS = [
    Program(
        "ema_callback_channels_last_h",
        "image classification",
        "Lightning's EMAWeightAveraging callback (the average swapped in for validation and kept at the end) on a CNN "
        "in channels_last memory format, AdamW with fused=True, one-cycle schedule per step",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "nan_batch"),
    )
]
