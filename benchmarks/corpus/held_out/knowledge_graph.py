"""Knowledge-graph embeddings (TransE): head + relation ~ tail, a margin ranking loss against corrupted triples,
entity embeddings renormalised to the unit sphere after every step, Adam."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

ENTITIES, RELATIONS, DIM = 200, 6, 32


def _triples(n: int, seed: int) -> TensorDataset:
    """Triples of a graph with a translational structure TransE can learn: entities are cells of a 20 x 10 grid and
    each relation moves by a fixed offset; only moves that stay on the grid are facts."""
    offsets = torch.tensor([[1, 0], [0, 1], [2, 1], [-1, 2], [3, -1], [-2, -2]])
    g = generator(seed)
    heads = torch.randint(0, ENTITIES, (4 * n,), generator=g)
    relations = torch.randint(0, RELATIONS, (4 * n,), generator=g)
    x, y = heads // 10 + offsets[relations, 0], heads % 10 + offsets[relations, 1]
    valid = (x >= 0) & (x < 20) & (y >= 0) & (y < 10)
    triples = torch.stack([heads, relations, x * 10 + y], 1)[valid][:n]
    return TensorDataset(triples)


class TransE(L.LightningModule):
    """Scores ``-||h + r - t||``; each triple against one corrupted head or tail (drawn per batch), margin 1.
    Validation: the same loss on held-out triples with fixed corruptions, and hits@10 of the true tail."""

    def __init__(self, lr: float = 0.01, margin: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.entities = nn.Embedding(ENTITIES, DIM)
        self.relations = nn.Embedding(RELATIONS, DIM)
        nn.init.uniform_(self.entities.weight, -6 / DIM**0.5, 6 / DIM**0.5)
        nn.init.uniform_(self.relations.weight, -6 / DIM**0.5, 6 / DIM**0.5)
        self.relations.weight.data = F.normalize(self.relations.weight.data, dim=1)

    def distance(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (self.entities(h) + self.relations(r) - self.entities(t)).norm(dim=1)

    def ranking_loss(self, triples: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        h, r, t = triples.unbind(1)
        random_entities = torch.randint(0, ENTITIES, (len(h),), generator=g)
        corrupt_head = torch.rand(len(h), generator=g) < 0.5
        h2 = torch.where(corrupt_head, random_entities, h)
        t2 = torch.where(corrupt_head, t, random_entities)
        return F.relu(self.hparams.margin + self.distance(h, r, t) - self.distance(h2, r, t2)).mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.ranking_loss(batch[0])
        self.log("train_loss", loss)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            self.entities.weight.data = F.normalize(self.entities.weight.data, dim=1)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        triples = batch[0]
        h, r, t = triples.unbind(1)
        scores = (self.entities(h) + self.relations(r))[:, None] - self.entities.weight[None]
        rank = (scores.norm(dim=2) < self.distance(h, r, t)[:, None]).sum(1)
        self.log_dict(
            {"val_loss": self.ranking_loss(triples, generator(batch_idx)), "val_hits10": (rank < 10).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _transe(seed: int) -> Run:
    return Run(
        TransE(),
        loader(_triples(4096, seed), 128, seed=seed),
        loader(_triples(512, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "transe_kg_h",
        "knowledge graph embedding",
        "TransE: margin ranking loss against corrupted triples, entities renormalised after every step, Adam",
        _transe,
        faults=("lr_div_1e6", "flipped_sign", "nan_batch"),
    )
]
