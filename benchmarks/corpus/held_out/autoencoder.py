"""Denoising autoencoder: an MLP encoder-decoder with BatchNorm, corrupting inputs in the training step and
reconstructing the clean image."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, outputs), nn.BatchNorm1d(outputs), nn.ReLU())


class DenoisingAE(L.LightningModule):
    """Gaussian noise and pixel dropout on the input, MSE against the clean image, Adam with
    CosineAnnealingLR per epoch; validation reconstructs a fixed corruption and logs val_loss and PSNR."""

    def __init__(self, pixels: int = 256, code: int = 16, noise: float = 0.5, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(_block(pixels, 128), _block(128, code))
        self.decoder = nn.Sequential(_block(code, 128), nn.Linear(128, pixels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def corrupt(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        keep = (torch.rand(x.shape, generator=g) > 0.2).float()
        return x * keep + self.hparams.noise * torch.randn(x.shape, generator=g)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch[0].flatten(1)
        reconstruction = self(self.corrupt(x))
        loss = F.mse_loss(reconstruction, x)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": reconstruction, "target": x}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0].flatten(1)
        mse = F.mse_loss(self(self.corrupt(x, torch.Generator().manual_seed(batch_idx))), x)
        peak = x.abs().max()
        self.log_dict({"val_loss": mse, "val_psnr": 10 * torch.log10(peak**2 / mse)})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=8)]


def _build(seed: int) -> Run:
    return Run(
        DenoisingAE(),
        loader(images(1536, classes=10, noise=0.2, seed=seed), 64, seed=seed),
        loader(images(256, classes=10, noise=0.2, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "denoising_ae_bn_h",
        "autoencoder",
        "an MLP denoising autoencoder with BatchNorm, noise and pixel-dropout corruption in the training step, "
        "MSE to the clean image, Adam with cosine annealing per epoch, validation PSNR",
        _build,
        faults=("nan_batch", "flipped_sign", "exp_output"),
        output_module="decoder",
        output_monitor=True,
    )
]
