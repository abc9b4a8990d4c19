"""A physics-informed neural network: a tanh MLP ``u(x, t)`` trained so that the heat equation's residual
``u_t - k u_xx`` vanishes on collocation points drawn afresh every batch, with the initial and boundary conditions as
extra loss terms. The derivatives come from ``torch.autograd.grad(..., create_graph=True)`` inside
``training_step``; the loss falls by orders of magnitude; validation is the error against the exact solution."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

DIFFUSIVITY = 0.1


def exact(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``u = exp(-k pi^2 t) sin(pi x)`` on ``x in [0, 1]``, ``t in [0, 1]``: zero at both ends."""
    return torch.exp(-DIFFUSIVITY * math.pi**2 * t) * torch.sin(math.pi * x)


class Collocation(Dataset[torch.Tensor]):
    """Batch ``i``'s random points: interior ``(x, t)``, initial ``x`` and boundary ``t`` samples, 128 of each,
    seeded by the index and the epoch so that every batch is new."""

    def __init__(self, batches: int, seed: int) -> None:
        self.batches, self.seed, self.epoch = batches, seed, 0

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, i: int) -> torch.Tensor:
        g = generator(self.seed * 100_003 + self.epoch * 1009 + i)
        return torch.rand(3, 128, 2, generator=g)


class HeatPINN(L.LightningModule):
    def __init__(self, points: Collocation, width: int = 32) -> None:
        super().__init__()
        self.points = points
        self.u = nn.Sequential(
            nn.Linear(2, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, 1),
        )

    def on_train_epoch_start(self) -> None:
        self.points.epoch = self.current_epoch

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        interior, initial, boundary = batch[0]
        xt = interior.clone().requires_grad_(True)
        u = self.u(xt)
        du = torch.autograd.grad(u.sum(), xt, create_graph=True)[0]
        u_xx = torch.autograd.grad(du[:, 0].sum(), xt, create_graph=True)[0][:, 0]
        residual = (du[:, 1] - DIFFUSIVITY * u_xx).pow(2).mean()
        x0 = torch.stack([initial[:, 0], torch.zeros_like(initial[:, 0])], 1)
        start = (self.u(x0).squeeze(1) - torch.sin(math.pi * initial[:, 0])).pow(2).mean()
        ends = torch.stack([(boundary[:, 0] > 0.5).float(), boundary[:, 1]], 1)
        edge = self.u(ends).pow(2).mean()
        loss = residual + 10 * (start + edge)
        self.log_dict({"train_loss": loss, "residual": residual, "initial": start, "boundary": edge})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        xt, target = batch
        self.log("val_loss", (self.u(xt) - target).pow(2).mean())

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=2e-3)


def _grid() -> TensorDataset:
    axis = torch.linspace(0, 1, 33)
    x, t = torch.meshgrid(axis, axis, indexing="ij")
    xt = torch.stack([x.flatten(), t.flatten()], 1)
    return TensorDataset(xt, exact(xt[:, :1], xt[:, 1:]))


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    points = Collocation(48, seed)
    return Run(
        HeatPINN(points),
        loader(points, 1, seed=seed),
        loader(_grid(), 33 * 33, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "pinn_heat_equation_h",
        "physics-informed network",
        "a tanh MLP u(x, t) trained on the heat equation's residual (derivatives by autograd.grad with "
        "create_graph inside training_step) plus initial and boundary terms, fresh collocation points every batch, "
        "Adam",
        _build,
        faults=("lr_x1000", "flipped_sign", "frozen"),
    )
]
