"""Link prediction with a graph auto-encoder, as PyTorch Geometric's examples train it: a two-layer GCN embeds every
node of one graph (the adjacency built from the training edges only), a dot product scores node pairs, and each batch
of training edges is scored against as many negative pairs drawn uniformly at random for that step, with binary cross
entropy. The negatives change every step, so the loss is noisy around a slow fall. Adam; validation scores held-out
edges against fixed non-edges (AUROC)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from torchmetrics.functional.classification import binary_auroc

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

NODES, COMMUNITIES, FEATURES = 240, 4, 16


def _graph(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stochastic block model: (node features [N, F], undirected edges [E, 2] with i < j)."""
    g = generator(seed)
    community = torch.arange(NODES) % COMMUNITIES
    same = community[:, None] == community[None, :]
    p = torch.where(same, torch.tensor(0.12), torch.tensor(0.006))
    upper = torch.triu(torch.rand(NODES, NODES, generator=g) < p, diagonal=1)
    edges = upper.nonzero()
    features = F.one_hot(community, COMMUNITIES).float().repeat(1, FEATURES // COMMUNITIES)
    features = features + 1.5 * torch.randn(NODES, FEATURES, generator=g)
    return features, edges


def _normalised_adjacency(edges: torch.Tensor) -> torch.Tensor:
    a = torch.zeros(NODES, NODES)
    a[edges[:, 0], edges[:, 1]] = 1.0
    a = a + a.T + torch.eye(NODES)
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


class GraphAutoEncoder(L.LightningModule):
    def __init__(self, features: torch.Tensor, train_edges: torch.Tensor, seed: int, lr: float = 0.001) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["features", "train_edges"])
        self.register_buffer("features", features, persistent=False)
        self.register_buffer("adjacency", _normalised_adjacency(train_edges), persistent=False)
        self.gcn1 = nn.Linear(FEATURES, 32)
        self.gcn2 = nn.Linear(32, 16)
        self.g = generator(seed)

    def embed(self) -> torch.Tensor:
        h = F.relu(self.adjacency @ self.gcn1(self.features))
        return self.adjacency @ self.gcn2(h)

    @staticmethod
    def score(z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return (z[pairs[:, 0]] * z[pairs[:, 1]]).sum(1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (positive,) = batch
        negative = torch.randint(0, NODES, positive.shape, generator=self.g)
        z = self.embed()
        logits = torch.cat((self.score(z, positive), self.score(z, negative)))
        labels = torch.cat((torch.ones(len(positive)), torch.zeros(len(negative))))
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pairs, labels = batch
        logits = self.score(self.embed(), pairs)
        self.log_dict(
            {
                "val_loss": F.binary_cross_entropy_with_logits(logits, labels),
                "val_auroc": binary_auroc(torch.sigmoid(logits), labels.long()),
            }
        )

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=5e-4)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    features, edges = _graph(seed)
    order = torch.randperm(len(edges), generator=generator(seed + 1))
    cut = int(0.85 * len(edges))
    train_edges, val_edges = edges[order[:cut]], edges[order[cut:]]
    g = generator(seed + 2)
    non_edges = torch.randint(0, NODES, (len(val_edges), 2), generator=g)
    val_pairs = torch.cat((val_edges, non_edges))
    val_labels = torch.cat((torch.ones(len(val_edges)), torch.zeros(len(non_edges))))
    return Run(
        GraphAutoEncoder(features, train_edges, seed),
        loader(TensorDataset(train_edges), 128, seed=seed),
        loader(TensorDataset(val_pairs, val_labels), len(val_pairs), shuffle=False),
        trainer={"max_epochs": 40},
    )


PROGRAMS = [
    Program(
        "graph_autoencoder_links_h",
        "graph",
        "link prediction with a graph auto-encoder: a two-layer GCN over the training edges' adjacency, dot-product "
        "scores, each batch of edges against as many uniformly drawn negative pairs per step, binary cross entropy; "
        "Adam; validation AUROC of held-out edges against fixed non-edges",
        _build,
        faults=("lr_x1000", "flipped_sign", "lr_div_1e6"),
    )
]
