"""A Kolmogorov-Arnold network (KAN) fitting a function of two variables, as the KAN papers' toy problems do: every
edge of a [2, 5, 1] network carries its own learned activation, a SiLU base branch plus a cubic B-spline on a grid of
five intervals over [-1, 1]. A B-spline is non-zero only near its knots, so a coefficient whose interval no input
reaches gets no gradient, and hidden values that leave the grid reach only the base branch. At the start of the second
and third epochs the grids are refitted to where the inputs actually fall (quantiles of a fixed sample, blended with a
uniform grid) and the coefficients are re-solved by least squares so that each edge keeps its function: the usual
"grid update". Adam with an exponential decay per epoch; the validation RMSE is logged.

The target is exp(sin(pi x) + y^2) on [-1, 1]^2 with a little noise."""

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

GRID, ORDER = 5, 3
GRID_BLEND = 0.02
"""Share of a uniform grid in an updated one (the rest follows the inputs' quantiles)."""
GRID_UPDATE_EPOCHS = (1, 2)


def _uniform_knots(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Per input, GRID + 1 evenly spaced points from ``low`` to ``high``, extended by ORDER steps on each side."""
    steps = torch.arange(-ORDER, GRID + ORDER + 1, dtype=low.dtype)
    return low.unsqueeze(1) + (high - low).unsqueeze(1) / GRID * steps


def _bases(x: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline bases by the Cox-de Boor recursion: ``x [B, I]``, ``knots [I, GRID + 2 ORDER + 1]`` ->
    ``[B, I, GRID + ORDER]``."""
    x = x.unsqueeze(-1)
    bases = ((x >= knots[:, :-1]) & (x < knots[:, 1:])).to(x.dtype)
    for k in range(1, ORDER + 1):
        left = (x - knots[:, : -(k + 1)]) / (knots[:, k:-1] - knots[:, : -(k + 1)]) * bases[..., :-1]
        right = (knots[:, k + 1 :] - x) / (knots[:, k + 1 :] - knots[:, 1:-k]) * bases[..., 1:]
        bases = left + right
    return bases


class KANLayer(nn.Module):
    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.register_buffer("knots", _uniform_knots(-torch.ones(inputs), torch.ones(inputs)))
        self.base_weight = nn.Parameter(torch.randn(outputs, inputs) / math.sqrt(inputs))
        self.spline_weight = nn.Parameter(0.1 * torch.randn(outputs, inputs, GRID + ORDER))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spline = torch.einsum("bik,oik->bo", _bases(x, self.knots), self.spline_weight)
        return F.linear(F.silu(x), self.base_weight) + spline

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor) -> None:
        """Knots that follow ``x``'s distribution; coefficients re-solved so each edge's spline stays the same."""
        kept = torch.einsum("bik,oik->iob", _bases(x, self.knots), self.spline_weight)  # [I, O, B]
        ordered = x.sort(dim=0).values
        picks = torch.linspace(0, x.shape[0] - 1, GRID + 1).long()
        adaptive = ordered[picks].T  # [I, GRID + 1]
        low, high = ordered[0] - 0.01, ordered[-1] + 0.01
        uniform = _uniform_knots(low, high)
        inner = GRID_BLEND * uniform[:, ORDER : ORDER + GRID + 1] + (1 - GRID_BLEND) * adaptive
        step = (high - low).unsqueeze(1) / GRID
        below = inner[:, :1] - step * torch.arange(ORDER, 0, -1, dtype=x.dtype)
        above = inner[:, -1:] + step * torch.arange(1, ORDER + 1, dtype=x.dtype)
        self.knots.copy_(torch.cat([below, inner, above], dim=1))
        design = _bases(x, self.knots).permute(1, 0, 2)  # [I, B, K]
        solved = torch.linalg.lstsq(design, kept.transpose(1, 2)).solution  # [I, K, O]
        self.spline_weight.copy_(solved.permute(2, 0, 1))


def _target(points: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.sin(math.pi * points[:, 0]) + points[:, 1] ** 2).unsqueeze(1)


def _samples(n: int, seed: int) -> TensorDataset:
    g = generator(seed)
    points = torch.rand(n, 2, generator=g) * 2 - 1
    return TensorDataset(points, _target(points) + 0.05 * torch.randn(n, 1, generator=g))


class KAN(L.LightningModule):
    def __init__(self, grid_sample: torch.Tensor) -> None:
        super().__init__()
        self.layers = nn.ModuleList([KANLayer(2, 5), KANLayer(5, 1)])
        self.register_buffer("grid_sample", grid_sample, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def on_train_epoch_start(self) -> None:
        if self.current_epoch in GRID_UPDATE_EPOCHS:
            x = self.grid_sample
            with torch.no_grad():
                for layer in self.layers:
                    layer.update_grid(x)
                    x = layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_mse", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        mse = F.mse_loss(self(x), y)
        self.log_dict({"val_loss": mse, "val_rmse": mse.sqrt()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-2)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.85)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = _samples(2048, seed)
    return Run(
        KAN(train.tensors[0][:512].clone()),
        loader(train, 64, seed=seed),
        loader(_samples(1024, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 12},
    )


PROGRAMS = [
    Program(
        "kan_spline_regression_h",
        "function fitting",
        "a [2, 5, 1] Kolmogorov-Arnold network (a SiLU base plus a cubic B-spline per edge, local support) fitting a "
        "function of two variables, its grids refitted to the inputs' quantiles at two epoch starts with the "
        "coefficients re-solved by least squares; Adam with an exponential decay; validation RMSE",
        _build,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6", "flipped_sign"),
    )
]
