"""A VAE trained under a cyclical KL schedule (Fu et al., 2019: "Cyclical Annealing Schedule"), written against the
standalone ``pytorch_lightning`` package: the KL weight climbs linearly from 0 to 1 over the first half of each of
four cycles and holds at 1 for the second half, then drops back to 0. The training loss (reconstruction + beta * KL)
falls at each restart and climbs while beta ramps up: a saw-tooth of four teeth by design, not an instability. The
validation loss is the full ELBO (beta = 1). Adam, summed-over-pixels reconstruction error averaged over the batch."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

PIXELS, LATENT, CYCLES = 16 * 16, 8, 4


class CyclicalVAE(pl.LightningModule):
    def __init__(self, total_steps: int, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 128), nn.ReLU(), nn.Linear(128, 2 * LATENT))
        self.decoder = nn.Sequential(nn.Linear(LATENT, 128), nn.ReLU(), nn.Linear(128, PIXELS))

    def beta(self) -> float:
        period = self.hparams.total_steps / CYCLES
        phase = (self.global_step % period) / period
        return min(1.0, 2.0 * phase)

    def _terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        reconstruction = self.decoder(z)
        error = F.mse_loss(reconstruction, x.flatten(1), reduction="sum") / len(x)
        kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp()) / len(x)
        return error, kl

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        error, kl = self._terms(batch[0])
        beta = self.beta()
        loss = error + beta * kl
        self.log_dict({"train_loss": loss, "recon": error, "kl": kl, "beta": beta})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        error, kl = self._terms(batch[0])
        self.log("val_loss", error + kl)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = images(3200, classes=8, size=16, noise=0.3, seed=seed, task_seed=59)
    epochs, batch = 8, 64
    return Run(
        CyclicalVAE(total_steps=epochs * len(train) // batch),
        loader(train, batch, seed=seed),
        loader(images(640, classes=8, size=16, noise=0.3, seed=seed + 100, task_seed=59), 320, shuffle=False),
        trainer={"max_epochs": epochs},
    )


PROGRAMS = [
    Program(
        "cyclical_kl_vae_h",
        "VAE",
        "an MLP VAE under a cyclical KL schedule (pytorch_lightning): beta climbs 0 -> 1 over half of each of four "
        "cycles and restarts at 0, so the training loss is a four-tooth saw-tooth by design; validation on the "
        "full ELBO; Adam",
        _build,
        faults=("lr_x1000", "nan_batch", "exp_output", "lr_div_1e6"),
        output_module="decoder",
    )
]
