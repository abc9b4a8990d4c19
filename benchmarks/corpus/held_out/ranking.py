"""Learning to rank with RankNet's pairwise loss: for every pair of documents of one query whose relevance
differs, the logistic loss of their score difference. Many pairs are tied and carry no loss; the loss falls
slowly once the easy pairs are ordered, while NDCG@10 keeps climbing."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run


def _queries(n: int, docs: int = 20, features: int = 8, seed: int = 0, task_seed: int = 41) -> TensorDataset:
    """``n`` queries of ``docs`` documents: features ``[n, docs, features]``, graded relevance 0-3 from a nonlinear
    score plus noise (the 4 grades are quantiles of it, so most documents are 0 or 1)."""
    w = torch.randn(features, generator=generator(task_seed))
    g = generator(seed)
    x = torch.randn(n, docs, features, generator=g)
    score = x @ w / math.sqrt(features) + 0.5 * x[..., 0] * x[..., 1] + 0.5 * torch.randn(n, docs, generator=g)
    relevance = torch.bucketize(score, torch.tensor([0.5, 1.2, 1.8]))
    return TensorDataset(x, relevance)


def ranknet(scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    difference = scores[:, :, None] - scores[:, None, :]
    ordered = (relevance[:, :, None] > relevance[:, None, :]).float()
    return (F.softplus(-difference) * ordered).sum() / ordered.sum().clamp_min(1)


def ndcg_at(scores: torch.Tensor, relevance: torch.Tensor, k: int = 10) -> torch.Tensor:
    gain = 2.0 ** relevance.float() - 1
    discount = 1 / torch.log2(torch.arange(k, dtype=torch.float) + 2)
    ranked = gain.gather(1, scores.argsort(1, descending=True)[:, :k])
    ideal = gain.sort(1, descending=True).values[:, :k]
    return ((ranked * discount).sum(1) / (ideal * discount).sum(1).clamp_min(1e-9)).mean()


class RankNetScorer(L.LightningModule):
    """An MLP scoring each document alone; RankNet over all ordered pairs of a query; Adam; validation NDCG@10."""

    def __init__(self, features: int = 8, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.score = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.net(x)).squeeze(-1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, relevance = batch
        loss = ranknet(self(x), relevance)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, relevance = batch
        scores = self(x)
        self.log_dict({"val_loss": ranknet(scores, relevance), "val_ndcg10": ndcg_at(scores, relevance)})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _build(seed: int) -> Run:
    return Run(
        RankNetScorer(),
        loader(_queries(1024, seed=seed), 16, seed=seed),
        loader(_queries(256, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "ranknet_pairwise_h",
        "learning to rank",
        "an MLP document scorer trained with RankNet's pairwise logistic loss over every differently-graded pair "
        "of a query (tied pairs carry none), Adam, validation NDCG@10",
        _build,
        faults=("lr_x1000", "flipped_sign", "nan_batch"),
    )
]
