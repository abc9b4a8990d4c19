"""A one-dimensional Fourier neural operator, as neural-operator code trains it on PDE data: a lift to 32 channels,
four spectral blocks (an FFT, a learned complex ``torch.cfloat`` weight per kept mode and channel pair, an inverse FFT,
plus a pointwise 1x1 convolution, GELU), a projection; the spectral weights are most of the model's parameters. The data
are solutions of a viscous Burgers-like heat equation (smooth random initial conditions evolved exactly in Fourier space
with a mild nonlinear correction), the loss the relative L2 error such code reports. Adam with weight decay and a step
decay."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

GRID, MODES, WIDTH, BLOCKS, EPOCHS, BATCH = 64, 12, 32, 4, 6, 32


def _solutions(n: int, seed: int, time: float = 0.05) -> TensorDataset:
    """``(u0 [n, 1, GRID], u_T [n, 1, GRID])``: smooth random periodic fields and the field after diffusion over
    ``time``, with a small quadratic term so the map is not diagonal in Fourier space."""
    g = generator(seed)
    k = torch.arange(GRID // 2 + 1, dtype=torch.float32)
    decay = (1 + k**2) ** -1.25
    coeffs = torch.complex(torch.randn(n, k.numel(), generator=g), torch.randn(n, k.numel(), generator=g)) * decay
    u0 = torch.fft.irfft(coeffs, n=GRID) * GRID / 4
    evolved = torch.fft.irfft(torch.fft.rfft(u0) * torch.exp(-((2 * math.pi * k) ** 2) * time / 4), n=GRID)
    u_t = evolved - 0.1 * evolved**2 + 0.1 * evolved.pow(2).mean(dim=1, keepdim=True)
    return TensorDataset(u0.unsqueeze(1), u_t.unsqueeze(1))


class SpectralConv(nn.Module):
    def __init__(self, channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1 / (channels * channels)
        self.weight = nn.Parameter(scale * torch.rand(channels, channels, modes, dtype=torch.cfloat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x)
        out = torch.zeros_like(spectrum)
        out[..., : self.modes] = torch.einsum("bim,iom->bom", spectrum[..., : self.modes], self.weight)
        return torch.fft.irfft(out, n=x.shape[-1])


class FourierOperator(L.LightningModule):
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lift = nn.Conv1d(2, WIDTH, 1)  # the field and the grid coordinate
        self.spectral = nn.ModuleList(SpectralConv(WIDTH, MODES) for _ in range(BLOCKS))
        self.pointwise = nn.ModuleList(nn.Conv1d(WIDTH, WIDTH, 1) for _ in range(BLOCKS))
        self.project = nn.Sequential(nn.Conv1d(WIDTH, 64, 1), nn.GELU(), nn.Conv1d(64, 1, 1))
        self.register_buffer("grid", torch.linspace(0, 1, GRID).view(1, 1, GRID), persistent=False)

    def forward(self, u0: torch.Tensor) -> torch.Tensor:
        h = self.lift(torch.cat([u0, self.grid.expand(u0.shape[0], -1, -1)], dim=1))
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            h = spectral(h) + pointwise(h)
            h = F.gelu(h) if i < BLOCKS - 1 else h
        return self.project(h)

    @staticmethod
    def relative_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((pred - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)).mean()

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        u0, target = batch
        pred = self(u0)
        loss = self.relative_l2(pred, target)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": pred, "target": target}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        u0, target = batch
        self.log("val_loss", self.relative_l2(self(u0), target))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)]


def _build(seed: int) -> Run:
    return Run(
        FourierOperator(),
        loader(_solutions(1024, seed), BATCH, seed=seed),
        loader(_solutions(256, seed + 100), 128, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "fourier_operator_h",
        "PDE surrogate",
        "a 1-D Fourier neural operator: spectral blocks with complex (torch.cfloat) weights per kept mode, most of its "
        "parameters, plus pointwise convolutions; relative L2 loss, Adam with weight decay and a step decay",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
        output_monitor=True,
    )
]
