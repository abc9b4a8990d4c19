"""A deep equilibrium model: the hidden state is the fixed point z = tanh(W z + U x + b), found by iterating under
``torch.no_grad()`` until it stops moving, and the gradient is taken through one more application of the layer at the
fixed point (the Jacobian-free, one-step gradient used in practice). One weight layer stands for infinite depth; the
number of iterations the solver needs is logged and changes as W is learned."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class EquilibriumClassifier(L.LightningModule):
    """Input injection 256 -> 64, the implicit layer 64 -> 64 (spectral norm kept below 1 at initialisation), a
    linear readout; AdamW 1e-3, weight decay 1e-4."""

    def __init__(self, width: int = 64, tolerance: float = 1e-4, max_iterations: int = 40) -> None:
        super().__init__()
        self.inject = nn.Linear(256, width)
        self.implicit = nn.Linear(width, width, bias=False)
        nn.init.normal_(self.implicit.weight, std=0.5 / width**0.5)
        self.readout = nn.Linear(width, 10)
        self.tolerance, self.max_iterations = tolerance, max_iterations

    def layer(self, z: torch.Tensor, injected: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.implicit(z) + injected)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        injected = self.inject(x.flatten(1))
        iterations = 0
        with torch.no_grad():
            z = torch.zeros_like(injected)
            while iterations < self.max_iterations:
                iterations += 1
                following = self.layer(z, injected)
                moved = (following - z).norm() / (following.norm() + 1e-8)
                z = following
                if moved < self.tolerance:
                    break
        return self.readout(self.layer(z, injected)), iterations

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits, iterations = self(x)
        loss = F.cross_entropy(logits, y)
        self.log_dict({"train_loss": loss, "solver_iterations": float(iterations)})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits, _ = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=1e-4)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        EquilibriumClassifier(),
        loader(images(2048, noise=2.0, seed=seed), 64, seed=seed),
        loader(images(512, noise=2.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "deq_fixed_point_h",
        "implicit model",
        "a deep equilibrium classifier: the hidden state is the fixed point of tanh(W z + U x + b), found by "
        "iterating under torch.no_grad(), with the one-step gradient through the layer at the fixed point; AdamW",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
