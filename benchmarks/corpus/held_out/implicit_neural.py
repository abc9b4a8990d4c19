"""An implicit neural representation: a SIREN (sine activations, the first layer's frequency scaled by 30, the
initialisation that keeps activations spread) fitted to one image from pixel coordinates, on random batches of
pixels. Its loss falls by orders of magnitude; validation is the PSNR of the whole image."""

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

SIZE = 32


def _image(seed: int) -> TensorDataset:
    """``SIZE x SIZE`` pixels of a smooth random image (a few Gaussian blobs and a stripe pattern) as
    ``(coordinates in [-1, 1]^2, grey value)`` pairs."""
    g = generator(seed)
    axis = torch.linspace(-1, 1, SIZE)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    image = 0.3 * torch.sin(6 * xx + 3 * yy)
    for _ in range(4):
        cx, cy, width = torch.rand(3, generator=g) * torch.tensor([1.6, 1.6, 0.3]) - torch.tensor([0.8, 0.8, -0.1])
        image = image + torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
    return TensorDataset(torch.stack([xx, yy], -1).reshape(-1, 2), image.reshape(-1, 1))


class Sine(nn.Module):
    def __init__(self, fan_in: int, fan_out: int, first: bool, omega: float = 30.0) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out)
        self.omega = omega
        bound = 1 / fan_in if first else math.sqrt(6 / fan_in) / omega
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega * self.linear(x))


class Siren(L.LightningModule):
    """Three sine layers of 64 and a linear output; Adam 1e-4, as in the paper's image fits."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(Sine(2, width, True), Sine(width, width, False), Sine(width, width, False))
        self.out = nn.Linear(width, 1)
        bound = math.sqrt(6 / width) / 30.0
        nn.init.uniform_(self.out.weight, -bound, bound)

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(coordinates))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        coordinates, grey = batch
        loss = F.mse_loss(self(coordinates), grey)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        coordinates, grey = batch
        mse = F.mse_loss(self(coordinates), grey)
        self.log_dict({"val_loss": mse, "val_psnr": -10 * torch.log10(mse)})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-4)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    pixels = _image(seed)
    return Run(
        Siren(),
        loader(pixels, 256, seed=seed),
        loader(pixels, SIZE * SIZE, shuffle=False),
        trainer={"max_epochs": 60, "check_val_every_n_epoch": 6},
    )


PROGRAMS = [
    Program(
        "siren_image_fit_h",
        "implicit neural representation",
        "a SIREN (sine activations, first-layer frequency 30, its special initialisation) fitted to one 32x32 image "
        "from pixel coordinates on random batches of 256 pixels, Adam 1e-4, validated by the whole image's PSNR",
        _build,
        faults=("lr_x1000", "frozen", "nan_batch"),
    )
]
