"""A convolutional autoencoder trained with ``Trainer(detect_anomaly=True)`` left on, as runs often are after someone
chased a NaN once: autograd records every forward op's traceback and checks every backward output, so each step is
several times slower. Conv encoder and transposed-conv decoder with BatchNorm, MSE reconstruction, Adam with
``ReduceLROnPlateau`` on the validation loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

SIZE, EPOCHS, BATCH = 16, 5, 32


class AnomalyModeAutoencoder(L.LightningModule):
    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        loss = F.mse_loss(self(x), x)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        self.log("val_loss", F.mse_loss(self(x), x))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def _build(seed: int) -> Run:
    return Run(
        AnomalyModeAutoencoder(),
        loader(images(1536, size=SIZE, noise=0.5, seed=seed), BATCH, seed=seed),
        loader(images(256, size=SIZE, noise=0.5, seed=seed + 100), 128, shuffle=False),
        trainer={"max_epochs": EPOCHS, "detect_anomaly": True},
    )


PROGRAMS = [
    Program(
        "anomaly_mode_autoencoder_h",
        "autoencoder",
        "a conv autoencoder with BatchNorm trained under Trainer(detect_anomaly=True) (every step several times "
        "slower), MSE, Adam with ReduceLROnPlateau on val_loss",
        _build,
        faults=("frozen", "lr_div_1e6", "flipped_sign"),
    )
]
