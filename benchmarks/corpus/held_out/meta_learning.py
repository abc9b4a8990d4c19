"""MAML on sine waves: each batch holds tasks; the inner loop adapts a copy of the weights by one gradient step
taken with ``torch.autograd.grad(create_graph=True)`` (no optimizer), the outer loss is the adapted weights'
error on each task's query points, backpropagated through the inner step under manual optimization. Validation
adapts too, so it turns gradients back on."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

SHOTS = 10


def sine_tasks(n: int, seed: int) -> TensorDataset:
    """``n`` tasks ``a sin(x + phase)``: support and query points, ``[n, SHOTS, 1]`` each."""
    g = generator(seed)
    amplitude = 0.1 + 4.9 * torch.rand(n, 1, 1, generator=g)
    phase = math.pi * torch.rand(n, 1, 1, generator=g)
    xs, xq = (10 * torch.rand(n, SHOTS, 1, generator=g) - 5 for _ in range(2))
    return TensorDataset(xs, amplitude * torch.sin(xs + phase), xq, amplitude * torch.sin(xq + phase))


class MAML(L.LightningModule):
    def __init__(self, inner_lr: float = 0.01, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))

    def adapted_loss(self, batch: Any) -> torch.Tensor:
        xs, ys, xq, yq = batch
        weights = dict(self.net.named_parameters())
        total = torch.zeros(())
        for task in range(len(xs)):
            support = F.mse_loss(functional_call(self.net, weights, (xs[task],)), ys[task])
            grads = torch.autograd.grad(support, list(weights.values()), create_graph=self.training)
            fast = {name: w - self.hparams.inner_lr * g for (name, w), g in zip(weights.items(), grads)}
            total = total + F.mse_loss(functional_call(self.net, fast, (xq[task],)), yq[task])
        return total / len(xs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        loss = self.adapted_loss(batch)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.log("meta_train_loss", loss)
        return loss.detach()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with torch.enable_grad():  # adaptation needs gradients, which Lightning turns off in validation
            self.log("val_loss", self.adapted_loss(batch).detach())

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        MAML(),
        loader(sine_tasks(4096, seed), 8, seed=seed),
        loader(sine_tasks(64, seed + 100), 16, shuffle=False),
        trainer={"max_steps": 600, "val_check_interval": 128},
    )


PROGRAMS = [
    Program(
        "maml_sine_h",
        "meta-learning",
        "MAML on sine regression: one inner step per task with autograd.grad(create_graph=True) and "
        "torch.func.functional_call, outer loss through it under manual optimization, adaptation in validation",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
