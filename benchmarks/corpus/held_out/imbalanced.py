"""Rare-event classification (fraud, click-through): 2% positives, categorical features through embeddings
beside numeric ones, ``BCEWithLogitsLoss(pos_weight=...)`` to balance the classes (no resampling), Adam, the
average precision on validation. With the positives weighted up, the training loss is dominated by the few
positives each batch happens to hold, so it jumps from batch to batch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

NUMERIC, CATEGORIES, CARDINALITY, POSITIVE_SHARE = 10, 3, 20, 0.02


def _transactions(n: int, seed: int, task_seed: int = 51) -> TensorDataset:
    """``(numeric [n, NUMERIC], categories [n, CATEGORIES] long, label [n])`` with ~2% positives."""
    g = generator(task_seed)
    w = torch.randn(NUMERIC, generator=g)
    category_effect = torch.randn(CATEGORIES, CARDINALITY, generator=g) * 1.5
    s = generator(seed)
    numeric = torch.randn(n, NUMERIC, generator=s)
    categories = torch.randint(0, CARDINALITY, (n, CATEGORIES), generator=s)
    score = numeric @ w / NUMERIC**0.5 * 2 + category_effect.gather(1, categories.T).T.sum(1)
    score = score + torch.randn(n, generator=s) * 0.8
    threshold = torch.quantile(score, 1 - POSITIVE_SHARE)
    return TensorDataset(numeric, categories, (score > threshold).float())


def average_precision(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(logits, descending=True)
    hits = labels[order]
    precision_at = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    return (precision_at * hits).sum() / hits.sum().clamp(min=1)


class FraudNet(L.LightningModule):
    def __init__(self, lr: float = 2e-3, pos_weight: float = 1 / POSITIVE_SHARE - 1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embeddings = nn.ModuleList(nn.Embedding(CARDINALITY, 4) for _ in range(CATEGORIES))
        self.net = nn.Sequential(
            nn.Linear(NUMERIC + 4 * CATEGORIES, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 32), nn.ReLU()
        )
        self.output = nn.Linear(32, 1)

    def forward(self, numeric: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        embedded = [table(categories[:, i]) for i, table in enumerate(self.embeddings)]
        return self.output(self.net(torch.cat([numeric, *embedded], dim=1))).squeeze(-1)

    def _loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        weight = torch.tensor(self.hparams.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, label, pos_weight=weight)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        numeric, categories, label = batch
        loss = self._loss(self(numeric, categories), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        numeric, categories, label = batch
        logits = self(numeric, categories)
        self.log_dict({"val_loss": self._loss(logits, label), "val_ap": average_precision(logits, label)})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _build(seed: int) -> Run:
    return Run(
        FraudNet(),
        loader(_transactions(16384, seed), 128, seed=seed),
        loader(_transactions(4096, seed + 100), 4096, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "rare_event_bce_h",
        "imbalanced classification",
        "fraud-style rare events (2% positives): categorical embeddings beside numeric features, "
        "BCEWithLogitsLoss(pos_weight=49), Adam, average precision on validation",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
