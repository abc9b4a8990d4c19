"""Recommendation: matrix factorisation with user and item embeddings and biases, ``sparse=True``
embeddings updated by ``torch.optim.SparseAdam`` (sparse gradients), MSE on observed ratings."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import ratings
from benchmarks.corpus.program import Program, Run


class MatrixFactorization(L.LightningModule):
    """``rating = mu + b_u + b_i + <p_u, q_i>`` with every table an ``nn.Embedding(sparse=True)``; SparseAdam;
    validation RMSE with torchmetrics."""

    def __init__(self, users: int = 200, items: int = 300, rank: int = 16, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.user = nn.Embedding(users, rank, sparse=True)
        self.item = nn.Embedding(items, rank, sparse=True)
        self.user_bias = nn.Embedding(users, 1, sparse=True)
        self.item_bias = nn.Embedding(items, 1, sparse=True)
        for table in (self.user, self.item):
            nn.init.normal_(table.weight, std=0.1)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)
        self.register_buffer("mean", torch.tensor(3.0))
        self.val_rmse = torchmetrics.MeanSquaredError(squared=False)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        dot = (self.user(user) * self.item(item)).sum(1)
        return self.mean + self.user_bias(user).squeeze(1) + self.item_bias(item).squeeze(1) + dot

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        user, item, rating = batch
        loss = F.mse_loss(self(user, item), rating)
        self.log("train_mse", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        user, item, rating = batch
        self.val_rmse(self(user, item), rating)
        self.log("val_rmse", self.val_rmse)

    def configure_optimizers(self) -> Any:
        return torch.optim.SparseAdam(list(self.parameters()), lr=self.hparams.lr)


def _build(seed: int) -> Run:
    return Run(
        MatrixFactorization(),
        loader(ratings(10000, seed=seed), 256, seed=seed),
        loader(ratings(2000, seed=seed + 100), 2000, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "mf_sparse_adam_h",
        "recommendation",
        "matrix factorisation with sparse nn.Embedding user/item factors and biases, SparseAdam on their "
        "sparse gradients, MSE on observed ratings, torchmetrics RMSE",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "nan_batch"),
    )
]
