"""A neural ODE: an MLP gives the time derivative of a 2-D state, a fixed-step fourth-order Runge-Kutta solver
integrates it (backpropagation through the unrolled solver, 4 evaluations of the MLP per step), and the loss
compares the solved trajectories with observed ones: noisy spirals from random starting points."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

TIMES, DT = 20, 0.1
SPIRAL = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])  # dx/dt = x @ SPIRAL^T: a decaying rotation


def _spirals(n: int, seed: int) -> TensorDataset:
    """``n`` trajectories of ``TIMES`` states of the cubic spiral dx/dt = (x^3) @ SPIRAL^T, observed with noise."""
    g = generator(seed)
    x = 2 * torch.rand(n, 2, generator=g) - 1
    states = [x]
    for _ in range(TIMES - 1):
        for _ in range(10):  # a fine Euler integration for the ground truth
            x = x + (DT / 10) * (x**3) @ SPIRAL.T
        states.append(x)
    path = torch.stack(states, 1)
    return TensorDataset(path[:, 0], path + 0.01 * torch.randn(path.shape, generator=g))


class NeuralODE(L.LightningModule):
    """Dynamics MLP 2-64-64-2 with tanh, inputs cubed as in the classic example; Adam 1e-3 with a step decay."""

    def __init__(self) -> None:
        super().__init__()
        self.dynamics = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return self.dynamics(x**3)

    def forward(self, start: torch.Tensor) -> torch.Tensor:
        x, states = start, [start]
        for _ in range(TIMES - 1):
            k1 = self.derivative(x)
            k2 = self.derivative(x + DT / 2 * k1)
            k3 = self.derivative(x + DT / 2 * k2)
            k4 = self.derivative(x + DT * k3)
            x = x + DT / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            states.append(x)
        return torch.stack(states, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        start, path = batch
        loss = F.mse_loss(self(start), path)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        start, path = batch
        self.log("val_loss", F.mse_loss(self(start), path))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 4, 0.5)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        NeuralODE(),
        loader(_spirals(1024, seed), 32, seed=seed),
        loader(_spirals(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 10},
    )


PROGRAMS = [
    Program(
        "neural_ode_spirals_h",
        "neural ODE",
        "a neural ODE: an MLP time derivative integrated by an unrolled fixed-step RK4 solver (backpropagation "
        "through the solver), fitted to noisy spiral trajectories; Adam 1e-3 with a step decay",
        _build,
        faults=("lr_x1000", "no_zero_grad", "frozen"),
    )
]
