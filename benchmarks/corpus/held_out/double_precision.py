"""A Hamiltonian neural network in double precision, as scientific code trains one (``precision="64-true"``: the
weights, the data and every gradient are float64). An MLP gives a scalar energy ``H(q, p)``; the predicted motion is
its symplectic gradient (``dq/dt = dH/dp``, ``dp/dt = -dH/dq``, from ``torch.autograd.grad(..., create_graph=True)``
inside ``training_step``), fitted to the measured motion of a pendulum at random states. The loss falls by orders
of magnitude. Adam with a step decay every 5 epochs; validation is the same error on states the model never saw."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

EPOCHS = 15


def pendulum(n: int, seed: int, noise: float = 0.01) -> TensorDataset:
    """States ``(q, p)`` with energies up to just below the separatrix, and their measured time derivatives:
    ``H = p^2 / 2 + (1 - cos q)``, so ``dq/dt = p`` and ``dp/dt = -sin q``, plus measurement noise."""
    g = generator(seed)
    q = (torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 - 1) * 2.5
    p = (torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 - 1) * 1.5
    motion = torch.cat([p, -torch.sin(q)], dim=1)
    return TensorDataset(torch.cat([q, p], dim=1), motion + noise * torch.randn(n, 2, generator=g, dtype=torch.float64))


class HamiltonianNetwork(L.LightningModule):
    def __init__(self, lr: float = 1e-3, width: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.energy = nn.Sequential(
            nn.Linear(2, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1)
        )

    def motion(self, state: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():  # validation runs under no_grad; the motion is a gradient of the energy
            state = state.requires_grad_(True)
            energy = self.energy(state).sum()
            (gradient,) = torch.autograd.grad(energy, state, create_graph=self.training)
        return torch.stack([gradient[:, 1], -gradient[:, 0]], dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        state, measured = batch
        loss = (self.motion(state) - measured).pow(2).mean()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        state, measured = batch
        self.log("val_loss", (self.motion(state) - measured).pow(2).mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        HamiltonianNetwork(),
        loader(pendulum(4096, seed), 128, seed=seed),
        loader(pendulum(1024, seed + 100), 512, shuffle=False),
        trainer={"max_epochs": EPOCHS, "precision": "64-true"},
    )


PROGRAMS = [
    Program(
        "hamiltonian_float64_h",
        "scientific machine learning",
        "a Hamiltonian neural network in double precision (precision='64-true'): the motion is the symplectic "
        "gradient of a learned energy (autograd.grad with create_graph in training_step), fitted to a pendulum's; "
        "Adam with a step decay",
        _build,
        faults=("lr_x1000", "flipped_sign", "lr_div_1e6"),
    )
]
