"""An energy-based model trained by contrastive divergence: an MLP gives each 2-D point an energy; negatives come
from a replay buffer refreshed by 20 steps of stochastic-gradient Langevin dynamics on the energy (5% restarted from
uniform noise each step); the loss is the data's mean energy minus the negatives' plus a small penalty on squared
energies. Its loss is negative, moves with the sampler rather than falling, and has no validation set."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run


def _rings(n: int, seed: int) -> TensorDataset:
    """Eight Gaussians (std 0.15) on a circle of radius 2."""
    g = generator(seed)
    angle = 2 * math.pi * torch.randint(0, 8, (n,), generator=g).float() / 8
    centres = 2 * torch.stack([angle.cos(), angle.sin()], 1)
    return TensorDataset(centres + 0.15 * torch.randn(n, 2, generator=g))


class LangevinEBM(L.LightningModule):
    """Energy MLP 2-128-128-1 with SiLU (smooth, so its input gradient guides the sampler); Adam 1e-3 with beta1 0,
    as energy-based models are usually trained."""

    def __init__(self, buffer: int = 2048, steps: int = 20, step_size: float = 0.05, noise: float = 0.01) -> None:
        super().__init__()
        self.energy = nn.Sequential(nn.Linear(2, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 1))
        self.register_buffer("replay", 6 * torch.rand(buffer, 2) - 3)
        self.steps, self.step_size, self.noise = steps, step_size, noise

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Negatives: ``n`` replay samples (5% restarted from noise) moved down the energy by Langevin steps."""
        index = torch.randint(0, self.replay.shape[0], (n,), device=self.replay.device)
        x = self.replay[index].clone()
        restart = torch.rand(n, device=x.device) < 0.05
        x[restart] = 6 * torch.rand(int(restart.sum()), 2, device=x.device) - 3
        for _ in range(self.steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x).sum(), x)
            x = (x - self.step_size * grad + self.noise * torch.randn_like(x)).detach().clamp(-3, 3)
        return x, index

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (positive,) = batch
        negative, index = self.sample(positive.shape[0])
        self.replay[index] = negative
        e_pos, e_neg = self.energy(positive), self.energy(negative)
        loss = e_pos.mean() - e_neg.mean() + 0.1 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        self.log_dict({"train_loss": loss, "energy_gap": e_neg.mean() - e_pos.mean()})
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3, betas=(0.0, 0.999))


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(LangevinEBM(), loader(_rings(4096, seed), 128, seed=seed), trainer={"max_epochs": 8})


PROGRAMS = [
    Program(
        "ebm_langevin_h",
        "energy-based model",
        "an energy-based model on 2-D data trained by contrastive divergence: negatives from a replay buffer moved by "
        "20 Langevin steps (torch.autograd.grad on the inputs inside training_step), loss = E(data) - E(samples) "
        "+ 0.1 * squared energies, Adam beta1 0, no validation",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
