"""A feedback controller learnt by backpropagating through a differentiable simulation, as differentiable-physics
code does: an MLP policy maps a pendulum's state (cos, sin, angular velocity) to a bounded torque, the pendulum is
integrated for 40 semi-implicit Euler steps from a batch of random starts, and the loss is the trajectory's mean
cost (distance from upright, speed, effort). The gradient flows back through every simulation step, so it is large
and spiky where trajectories diverge; gradients are clipped, as such code does. Adam; validation from fixed starts."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

GRAVITY, DAMPING, DT, HORIZON, MAX_TORQUE = 9.8, 0.1, 0.05, 40, 12.0


class PendulumController(L.LightningModule):
    def __init__(self, lr: float = 5e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.policy = nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))

    def rollout(self, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trajectory's mean cost per start, and the final angle (0 is upright)."""
        theta, omega = start[:, 0], start[:, 1]
        cost = torch.zeros_like(theta)
        for _ in range(HORIZON):
            obs = torch.stack((theta.cos(), theta.sin(), omega), dim=1)
            torque = MAX_TORQUE * torch.tanh(self.policy(obs).squeeze(1))
            omega = omega + DT * (GRAVITY * theta.sin() - DAMPING * omega + torque)
            theta = theta + DT * omega
            cost = cost + (1 - theta.cos()) + 0.05 * omega**2 + 1e-3 * torque**2
        return cost / HORIZON, torch.atan2(theta.sin(), theta.cos())

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        cost, _ = self.rollout(batch[0])
        loss = cost.mean()
        self.log("train_cost", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        cost, final = self.rollout(batch[0])
        self.log_dict({"val_loss": cost.mean(), "val_final_angle": final.abs().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _starts(n: int, seed: int) -> TensorDataset:
    g = generator(seed)
    theta = (torch.rand(n, generator=g) * 2 - 1) * 0.8 * math.pi
    omega = torch.rand(n, generator=g) * 2 - 1
    return TensorDataset(torch.stack((theta, omega), dim=1))


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        PendulumController(),
        loader(_starts(1024, seed), 32, seed=seed),
        loader(_starts(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8, "gradient_clip_val": 1.0},
    )


PROGRAMS = [
    Program(
        "pendulum_controller_bptt_h",
        "control",
        "an MLP policy trained by backpropagation through 40 steps of a differentiable pendulum simulation from random "
        "starts (the loss a trajectory's mean cost), gradient clipping, Adam; validation from fixed starts",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
