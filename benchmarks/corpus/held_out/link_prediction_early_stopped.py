"""Link prediction with a graph auto-encoder trained full-batch, as its reference code does (``link_prediction.py``
is the mini-batched form, without early stopping): a two-layer GCN encodes every node of one graph, a dot product
scores node pairs, the loss is a binary cross entropy on the training edges and as many random non-edges (drawn again
every epoch); the validation loss on held-out edges and fixed non-edges after every epoch, Adam at 1e-2, up to 200
epochs, early stopping (patience 20) and the best epoch kept."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from benchmarks.corpus.data import generator
from benchmarks.corpus.held_out.synthetic import community_graphs
from benchmarks.corpus.program import Program, Run

NODES, FEATURES = 300, 16


class GraphAutoEncoder(L.LightningModule):
    def __init__(self, hidden: int = 32, embedding: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.conv1 = nn.Linear(FEATURES, hidden)
        self.conv2 = nn.Linear(hidden, embedding)

    def encode(self, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return adjacency @ self.conv2(adjacency @ F.relu(self.conv1(x)))

    @staticmethod
    def pair_loss(z: torch.Tensor, edges: torch.Tensor, non_edges: torch.Tensor) -> torch.Tensor:
        pairs = torch.cat([edges, non_edges], 1)
        scores = (z[pairs[0]] * z[pairs[1]]).sum(1)
        targets = torch.cat([torch.ones(edges.shape[1]), torch.zeros(non_edges.shape[1])])
        return F.binary_cross_entropy_with_logits(scores, targets)

    def training_step(self, graph: Any, batch_idx: int) -> torch.Tensor:
        adjacency, x, train_edges, _, _ = graph
        non_edges = torch.randint(0, NODES, train_edges.shape)  # drawn again every epoch
        loss = self.pair_loss(self.encode(adjacency, x), train_edges, non_edges)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, graph: Any, batch_idx: int) -> None:
        adjacency, x, _, val_edges, val_non_edges = graph
        self.log("val_loss", self.pair_loss(self.encode(adjacency, x), val_edges, val_non_edges))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def split_edges(seed: int) -> list[tuple[torch.Tensor, ...]]:
    """One graph whose edges are split 85/15 into training and validation edges; the encoder sees only the training
    edges (its normalised adjacency is rebuilt from them). A one-item dataset: one batch an epoch."""
    [(adjacency, x, _)] = community_graphs(1, nodes=NODES, communities=6, features=FEATURES, seed=seed)
    upper = torch.triu(adjacency > 0, 1).nonzero().T
    order = torch.randperm(upper.shape[1], generator=generator(seed + 1))
    cut = int(0.85 * upper.shape[1])
    train_edges, val_edges = upper[:, order[:cut]], upper[:, order[cut:]]
    kept = torch.zeros(NODES, NODES)
    kept[train_edges[0], train_edges[1]] = 1.0
    kept = kept + kept.T + torch.eye(NODES)
    d = kept.sum(1).rsqrt()
    val_non_edges = torch.randint(0, NODES, val_edges.shape, generator=generator(seed + 2))
    return [(d[:, None] * kept * d[None], x, train_edges, val_edges, val_non_edges)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    graph = split_edges(seed)
    return Run(
        GraphAutoEncoder(),
        DataLoader(graph, batch_size=None),
        DataLoader(graph, batch_size=None),
        trainer={
            "max_epochs": 200,
            "log_every_n_steps": 1,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_loss", mode="min", patience=20),
                ModelCheckpoint(monitor="val_loss", mode="min"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "gae_full_batch_early_stopped_h",
        "graph learning",
        "a two-layer GCN auto-encoder scoring node pairs by dot product, trained full-batch on one graph's training "
        "edges and fresh random non-edges each epoch, validated on held-out edges every epoch, Adam 1e-2, early "
        "stopping (patience 20) and the best epoch kept",
        _build,
        faults=("frozen", "flipped_sign", "lr_div_1e6"),
    )
]
