"""Tabular data with many categorical columns (entity embeddings, as in click-through and retail models): six
columns of 3 to 2,000 categories drawn from Zipf-like laws, so most rows of the large tables are seen a few times an
epoch and many never in a given batch; each column gets its own embedding, concatenated with batch-normalised numeric
features into an MLP with dropout; binary target, BCE with logits, Adam; AUC-like accuracy on validation."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

CARDINALITIES = (2000, 500, 60, 12, 7, 3)
NUMERIC = 4


def _table(n: int, seed: int, task_seed: int = 29) -> TensorDataset:
    """``(categories [n, 6] long, numeric [n, 4], label [n, 1])``: a hidden effect per category plus a numeric
    trend decides the label's log-odds; category ``k`` of a column is drawn with probability ~ 1 / (k + 1)."""
    task = generator(task_seed)
    effects = [torch.randn(c, generator=task) for c in CARDINALITIES]
    weights = torch.randn(NUMERIC, generator=task)
    s = generator(seed)
    columns = []
    for c in CARDINALITIES:
        zipf = 1.0 / torch.arange(1, c + 1, dtype=torch.float)
        columns.append(torch.multinomial(zipf / zipf.sum(), n, replacement=True, generator=s))
    categories = torch.stack(columns, 1)
    numeric = torch.randn(n, NUMERIC, generator=s) * torch.tensor([1.0, 10.0, 100.0, 0.1])  # unscaled, as in a CSV
    logit = sum(e[categories[:, i]] for i, e in enumerate(effects)) * 0.7 + (numeric / numeric.std(0)) @ weights * 0.5
    label = (torch.rand(n, generator=s) < torch.sigmoid(logit)).float().unsqueeze(1)
    return TensorDataset(categories, numeric, label)


class EntityEmbeddingMLP(L.LightningModule):
    """An embedding of min(16, (c + 1) // 2) per column, BatchNorm on the numeric inputs, MLP 256-128 with dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, min(16, (c + 1) // 2)) for c in CARDINALITIES)
        width = sum(e.embedding_dim for e in self.embeddings) + NUMERIC
        self.numeric_norm = nn.BatchNorm1d(NUMERIC)
        self.mlp = nn.Sequential(
            nn.Linear(width, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 1)
        )

    def forward(self, categories: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        embedded = [e(categories[:, i]) for i, e in enumerate(self.embeddings)]
        return self.mlp(torch.cat([*embedded, self.numeric_norm(numeric)], 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        categories, numeric, label = batch
        loss = F.binary_cross_entropy_with_logits(self(categories, numeric), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        categories, numeric, label = batch
        logits = self(categories, numeric)
        accuracy = ((logits > 0).float() == label).float().mean()
        self.log_dict({"val_loss": F.binary_cross_entropy_with_logits(logits, label), "val_acc": accuracy})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=2e-3)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        EntityEmbeddingMLP(),
        loader(_table(8192, seed), 256, seed=seed),
        loader(_table(2048, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "entity_embeddings_tabular_h",
        "tabular (categorical embeddings)",
        "entity embeddings for six categorical columns of 3-2,000 Zipf-distributed categories (most rows of the large "
        "tables untouched in a batch), unscaled numeric features through BatchNorm, MLP with dropout, BCE, Adam",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
