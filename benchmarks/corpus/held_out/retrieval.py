"""Dense retrieval with a dual encoder: separate query and document towers (mean-pooled token embeddings and an MLP),
cosine scores at temperature 0.05, InfoNCE over the batch's documents plus a triplet term on each query's hardest
in-batch negative (the highest-scoring wrong document, mined on the fly). Validated four times an epoch: the loss
on held-out queries and recall@1 against every document."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

VOCAB, DOCS, DOC_TOKENS = 200, 512, 12


def _documents(task_seed: int = 23) -> torch.Tensor:
    return torch.randint(0, VOCAB, (DOCS, DOC_TOKENS), generator=generator(task_seed))


def _queries(n: int, seed: int) -> TensorDataset:
    """``n`` queries: 6 of a random document's tokens and 2 random ones; ``(query tokens, document id)``."""
    g = generator(seed)
    documents = _documents()
    target = torch.randint(0, DOCS, (n,), generator=g)
    keep = torch.rand(n, DOC_TOKENS, generator=g).argsort(1)[:, :6]
    words = torch.gather(documents[target], 1, keep)
    return TensorDataset(torch.cat([words, torch.randint(0, VOCAB, (n, 2), generator=g)], 1), target)


class Tower(nn.Module):
    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(VOCAB, dim, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.embed(tokens)), dim=-1)


class DualEncoder(L.LightningModule):
    def __init__(self, temperature: float = 0.05, margin: float = 0.2) -> None:
        super().__init__()
        self.query, self.document = Tower(), Tower()
        self.register_buffer("documents", _documents())
        self.temperature, self.margin = temperature, margin

    def losses(self, tokens: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, inverse = target.unique(return_inverse=True)  # a document drawn twice is one candidate
        scores = self.query(tokens) @ self.document(self.documents[ids]).T
        contrastive = F.cross_entropy(scores / self.temperature, inverse)
        positive = scores.gather(1, inverse[:, None])
        wrong = scores.masked_fill(F.one_hot(inverse, ids.numel()).bool(), -2.0)
        hardest = wrong.max(1, keepdim=True).values
        return contrastive, F.relu(self.margin + hardest - positive).mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        contrastive, triplet = self.losses(*batch)
        loss = contrastive + triplet
        self.log_dict({"train_loss": loss, "hard_negative_loss": triplet})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, target = batch
        contrastive, triplet = self.losses(tokens, target)
        every = self.query(tokens) @ self.document(self.documents).T
        recall = (every.argmax(1) == target).float().mean()
        self.log_dict({"val_loss": contrastive + triplet, "val_recall_at_1": recall})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        DualEncoder(),
        loader(_queries(4096, seed), 64, seed=seed),
        loader(_queries(512, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8, "val_check_interval": 0.25},
    )


PROGRAMS = [
    Program(
        "dual_encoder_hard_negatives_h",
        "dense retrieval",
        "a dual encoder (query and document towers, cosine at temperature 0.05) trained with in-batch InfoNCE plus a "
        "triplet term on the hardest in-batch negative mined each step; Adam 1e-3, validated 4x an epoch with "
        "recall@1 over all documents",
        _build,
        faults=("lr_div_1e6", "flipped_sign", "nan_batch"),
    )
]
