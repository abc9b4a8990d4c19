"""A sparse autoencoder (dictionary learning) on activations that superpose many sparse features: an overcomplete
ReLU code with an L1 penalty, the decoder's columns put back to unit length after every step. Most latents fire on
a few percent of inputs and some never do: the penalty's price, not a fault."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run


def _activations(n: int, dim: int = 32, features: int = 96, active: int = 3, seed: int = 0) -> TensorDataset:
    """``n`` vectors of ``dim``, each the sum of ``active`` of ``features`` fixed unit directions (more directions
    than dimensions: superposition) with exponential magnitudes, plus a little noise."""
    directions = F.normalize(torch.randn(features, dim, generator=generator(53)), dim=1)
    g = generator(seed)
    chosen = torch.rand(n, features, generator=g).argsort(1)[:, :active]
    magnitudes = -torch.log(torch.rand(n, active, generator=g).clamp_min(1e-6))
    codes = torch.zeros(n, features).scatter_(1, chosen, magnitudes)
    return TensorDataset(codes @ directions + 0.05 * torch.randn(n, dim, generator=g))


class SparseAutoencoder(L.LightningModule):
    """Encoder ``relu(W_e (x - b_d) + b_e)``, decoder ``W_d z + b_d`` with unit-norm columns; MSE plus ``l1`` times
    the code's L1 norm; Adam."""

    def __init__(self, dim: int = 32, latents: int = 192, l1: float = 2e-2) -> None:
        super().__init__()
        self.encoder = nn.Linear(dim, latents)
        self.decoder = nn.Linear(latents, dim)
        self.l1 = l1
        self._unit_columns()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = F.relu(self.encoder(x - self.decoder.bias))
        return self.decoder(codes), codes

    def _losses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reconstruction, codes = self(x)
        mse = F.mse_loss(reconstruction, x)
        return mse + self.l1 * codes.abs().sum(1).mean(), mse, codes

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        loss, mse, codes = self._losses(x)
        self.log_dict({"train_loss": loss, "train_mse": mse, "train_l0": (codes > 0).float().sum(1).mean()})
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._unit_columns()

    @torch.no_grad()
    def _unit_columns(self) -> None:
        weight = self.decoder.weight
        weight.div_(weight.norm(dim=0, keepdim=True).clamp_min(1e-8))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        (x,) = batch
        loss, mse, codes = self._losses(x)
        never = (codes.amax(0) == 0).float().mean()
        self.log_dict({"val_loss": loss, "val_mse": mse, "val_dead_latents": never})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        SparseAutoencoder(),
        loader(_activations(4096, seed=seed), 64, seed=seed),
        loader(_activations(1024, seed=seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "sparse_autoencoder_h",
        "dictionary learning",
        "an overcomplete sparse autoencoder (32 -> 192 ReLU latents) with an L1 penalty on the code and unit-norm "
        "decoder columns restored after every step, Adam, on superposed sparse features",
        _build,
        faults=("lr_x1000", "frozen", "nan_batch"),
    )
]
