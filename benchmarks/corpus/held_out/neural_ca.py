"""A growing neural cellular automaton, as the reference "Growing Neural Cellular Automata" trains it: every cell
perceives its 3x3 neighbourhood through fixed identity and Sobel filters, a 1x1-convolution network (its last layer
zero-initialised, so the automaton starts doing nothing) proposes an update that each cell applies with probability
1/2, and cells without a living neighbour are cleared. A training step grows a batch from a pool of earlier states for
a random 10-14 iterations and matches the RGBA target; the worst state of the batch is reset to the seed, the grown
states go back to the pool. The gradients of each parameter are normalised to unit norm before the optimizer step
(the reference's trick against the unrolled iterations' exploding gradients), in the module's own hook. Adam, one
step decay; no validation."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

CHANNELS, SIZE, POOL = 12, 12, 128


def _target() -> torch.Tensor:
    """An RGBA ring with a coloured core, 10x10, padded to the 12x12 grid."""
    axis = torch.linspace(-1, 1, 10)
    r = torch.sqrt(axis[:, None] ** 2 + axis[None, :] ** 2)
    alpha = ((r < 0.95) & (r > 0.45)).float() + (r < 0.25).float()
    rgb = torch.stack((alpha * (r > 0.45), alpha * 0.5, alpha * (r < 0.25)))
    return F.pad(torch.cat((rgb, alpha[None])), (1, 1, 1, 1))


class NeuralCA(L.LightningModule):
    def __init__(self, seed: int, hidden: int = 48, lr: float = 5e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.update_rule = nn.Sequential(
            nn.Conv2d(3 * CHANNELS, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, CHANNELS, 1, bias=False)
        )
        nn.init.zeros_(self.update_rule[2].weight)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        identity = torch.zeros(3, 3)
        identity[1, 1] = 1.0
        filters = torch.stack((identity, sobel, sobel.T))[:, None].repeat(CHANNELS, 1, 1, 1)
        self.register_buffer("filters", filters, persistent=False)
        self.register_buffer("target", _target(), persistent=False)
        self.register_buffer("pool", self.seed_state().repeat(POOL, 1, 1, 1), persistent=False)
        self.g = generator(seed)

    @staticmethod
    def seed_state() -> torch.Tensor:
        state = torch.zeros(1, CHANNELS, SIZE, SIZE)
        state[:, 3:, SIZE // 2, SIZE // 2] = 1.0
        return state

    def alive(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x[:, 3:4], 3, stride=1, padding=1) > 0.1

    def iterate(self, x: torch.Tensor) -> torch.Tensor:
        before = self.alive(x)
        perceived = F.conv2d(x, self.filters, padding=1, groups=CHANNELS)
        fire = (torch.rand(x.shape[0], 1, SIZE, SIZE, generator=self.g) <= 0.5).float()
        x = x + self.update_rule(perceived) * fire
        return x * (before & self.alive(x)).float()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (index,) = batch
        with torch.no_grad():
            x = self.pool[index].clone()
            worst = ((x[:, :4] - self.target) ** 2).mean(dim=(1, 2, 3)).argmax()
            x[worst] = self.seed_state()[0]
        for _ in range(int(torch.randint(10, 15, (1,), generator=self.g))):
            x = self.iterate(x)
        loss = ((x[:, :4] - self.target) ** 2).mean()
        self.pool[index] = x.detach()
        self.log("train_loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        for p in self.parameters():
            if p.grad is not None:
                p.grad.div_(p.grad.norm() + 1e-8)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [
            {"scheduler": torch.optim.lr_scheduler.MultiStepLR(optimizer, [200], 0.1), "interval": "step"}
        ]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(NeuralCA(seed), loader(TensorDataset(torch.arange(POOL)), 8, seed=seed), trainer={"max_steps": 300})


PROGRAMS = [
    Program(
        "neural_ca_growing_h",
        "generative",
        "a growing neural cellular automaton: fixed Sobel perception, a zero-initialised 1x1-conv update applied "
        "stochastically per cell, 10-14 unrolled iterations from a pool of earlier states, each parameter's gradient "
        "normalised to unit norm in the module's on_before_optimizer_step; Adam, one step decay, no validation",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "no_zero_grad"),
    )
]
