"""Denoising diffusion (DDPM): predict the noise added at a random timestep per sample, with an EMA copy of the
network kept as a submodule."""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

TIMESTEPS = 200


def _swiss_roll(n: int, seed: int) -> TensorDataset:
    g = generator(seed)
    t = torch.rand(n, generator=g) * 3 * math.pi + 1.5
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5
    return TensorDataset(points + 0.05 * torch.randn(n, 2, generator=g))


def timestep_embedding(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    """Sinusoidal features of the timestep, as the DDPM papers embed it."""
    frequencies = torch.exp(-math.log(10000) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = t[:, None].float() * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], 1)


class NoisePredictor(nn.Module):
    """An MLP on (x_t, embedded t); the output layer starts at zero (the DDPM/ADM recipe)."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.inp = nn.Linear(2, width)
        self.time = nn.Sequential(nn.Linear(32, width), nn.SiLU(), nn.Linear(width, width))
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.out = nn.Linear(width, 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.inp(x) + self.time(timestep_embedding(t))))


class DDPM(L.LightningModule):
    """Noise-prediction MSE at uniformly drawn timesteps (linear beta schedule), AdamW on the network only, a cosine
    schedule per step, clipping at 1. The EMA copy is a registered submodule whose parameters keep
    ``requires_grad`` (a plain ``deepcopy``) but never get a gradient: it is updated with ``lerp_`` after each batch.
    """

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = NoisePredictor()
        self.ema = copy.deepcopy(self.net)
        self.register_buffer("alpha_bar", torch.cumprod(1 - torch.linspace(1e-4, 0.02, TIMESTEPS), 0))

    def diffusion_loss(self, x0: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        t = torch.randint(0, TIMESTEPS, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = self.alpha_bar[t].view(-1, 1)
        return F.mse_loss(self.net(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch[0])
        self.log("train_loss", loss)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            for averaged, live in zip(self.ema.parameters(), self.net.parameters()):
                averaged.lerp_(live, 0.01)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.diffusion_loss(batch[0], generator(batch_idx)))  # the same noise every time

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _ddpm(seed: int) -> Run:
    return Run(
        DDPM(),
        loader(_swiss_roll(2048, seed), 64, seed=seed),
        loader(_swiss_roll(512, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6, "gradient_clip_val": 1.0},
    )


PROGRAMS = [
    Program(
        "ddpm_ema",
        "diffusion",
        "DDPM noise prediction at random timesteps, zero-initialised output layer, an EMA copy registered as a "
        "submodule (requires_grad left on), AdamW + per-step cosine, clipping",
        _ddpm,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
