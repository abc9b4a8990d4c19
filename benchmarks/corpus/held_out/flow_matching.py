"""Flow matching on 2-D data (a rectified flow), as the recent generative models train it: a velocity network
v(x_t, t) is regressed on the straight path from a noise point x_0 to a data point x_1, x_t = (1 - t) x_0 + t x_1,
whose velocity is x_1 - x_0, with t uniform in [0, 1] drawn afresh for every example of every batch. The loss cannot
go to zero: the same x_t lies on paths to many data points, so it falls fast to about half its start and then
creeps down, noisy from batch to batch. The network is an MLP on x_t and sinusoidal features of t (SiLU). AdamW with
a linear warm-up per step; validation reports the loss on fixed (x_0, x_1, t) triples, and the quality of samples
drawn with 16 Euler steps from fixed noise: their mean distance to the nearest mode.

The data: eight Gaussian modes on a circle of radius 2 (standard deviation 0.12)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

MODES, RADIUS, SPREAD, TIME_FEATURES = 8, 2.0, 0.12, 16
_angles = torch.arange(MODES) * 2 * math.pi / MODES
CENTRES = torch.stack([torch.cos(_angles), torch.sin(_angles)], 1) * RADIUS


def _points(n: int, g: torch.Generator) -> torch.Tensor:
    mode = torch.randint(0, MODES, (n,), generator=g)
    return CENTRES[mode] + SPREAD * torch.randn(n, 2, generator=g)


def _train_points(n: int, seed: int) -> TensorDataset:
    return TensorDataset(_points(n, generator(seed)))


def _val_triples(n: int, seed: int) -> TensorDataset:
    """Fixed ``(x_0, x_1, t)`` so the validation loss is comparable between epochs."""
    g = generator(seed)
    return TensorDataset(torch.randn(n, 2, generator=g), _points(n, g), torch.rand(n, 1, generator=g))


class VelocityField(L.LightningModule):
    def __init__(self, width: int = 128, sample_seed: int = 0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 + TIME_FEATURES, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, 2),
        )
        frequencies = torch.exp(torch.linspace(0, math.log(100.0), TIME_FEATURES // 2))
        self.register_buffer("frequencies", frequencies)
        self.register_buffer("sample_noise", torch.randn(512, 2, generator=generator(sample_seed)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        phase = t * self.frequencies
        velocity: torch.Tensor = self.net(torch.cat([x, torch.sin(phase), torch.cos(phase)], 1))
        return velocity

    def _loss(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xt = (1 - t) * x0 + t * x1
        return ((self(xt, t) - (x1 - x0)) ** 2).sum(1).mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x1,) = batch
        x0 = torch.randn_like(x1)
        t = torch.rand(len(x1), 1, device=x1.device)
        loss = self._loss(x0, x1, t)
        self.log("train_flow_matching", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x0, x1, t = batch
        self.log("val_loss", self._loss(x0, x1, t))
        if batch_idx == 0:
            self.log("val_mode_distance", self._sample_quality())

    def _sample_quality(self, steps: int = 16) -> torch.Tensor:
        x = self.sample_noise.clone()
        for i in range(steps):
            t = torch.full((len(x), 1), i / steps, device=x.device)
            x = x + self(x, t) / steps
        return torch.cdist(x, CENTRES.to(x.device)).min(1).values.mean()

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=2e-3, weight_decay=1e-4)
        warmup = 100
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        VelocityField(sample_seed=seed + 200),
        loader(_train_points(8192, seed), 128, seed=seed),
        loader(_val_triples(4096, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "flow_matching_2d_h",
        "flow matching",
        "a rectified flow on 2-D data: an MLP velocity field on x_t and sinusoidal time features, regressed on the "
        "straight noise-to-data path's velocity with a fresh t per example (a loss that stays high and noisy); AdamW "
        "with a per-step warm-up; the loss on fixed triples and 16-step Euler samples validated",
        _build,
        faults=("lr_x1000", "flipped_sign", "frozen", "no_zero_grad"),
    )
]
