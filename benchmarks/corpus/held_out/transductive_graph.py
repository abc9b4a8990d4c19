"""Node classification on one graph, trained full-batch as the GCN paper and its many ports do: every epoch is one
step over the whole graph, the loss taken on a few labelled nodes, the validation loss on others of the same graph
after every epoch, Adam (lr 0.01, weight decay 5e-4), dropout 0.5, up to 200 epochs with early stopping on the
validation loss (patience 10) and the best epoch kept."""

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

NODES, CLASSES, LABELLED, VALIDATION = 400, 7, 70, 150


class GraphConvolution(nn.Module):
    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(inputs, outputs)

    def forward(self, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return adjacency @ self.linear(x)


class TransductiveGCN(L.LightningModule):
    def __init__(self, features: int = 16, hidden: int = 16, classes: int = CLASSES) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.conv1 = GraphConvolution(features, hidden)
        self.conv2 = GraphConvolution(hidden, classes)

    def forward(self, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.conv1(adjacency, F.dropout(x, 0.5, self.training))), 0.5, self.training)
        return self.conv2(adjacency, h)

    def training_step(self, graph: Any, batch_idx: int) -> torch.Tensor:
        adjacency, x, y, train_mask, _ = graph
        loss = F.cross_entropy(self(adjacency, x)[train_mask], y[train_mask])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, graph: Any, batch_idx: int) -> None:
        adjacency, x, y, _, val_mask = graph
        logits = self(adjacency, x)[val_mask]
        self.log_dict(
            {
                "val_loss": F.cross_entropy(logits, y[val_mask]),
                "val_acc": (logits.argmax(1) == y[val_mask]).float().mean(),
            }
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01, weight_decay=5e-4)


def one_graph(seed: int) -> list[tuple[torch.Tensor, ...]]:
    """The graph with its labelled (training) and validation nodes: a one-item dataset, one batch an epoch."""
    [(adjacency, x, labels)] = community_graphs(1, nodes=NODES, communities=CLASSES, seed=seed)
    order = torch.randperm(NODES, generator=generator(seed + 1))
    train_mask = torch.zeros(NODES, dtype=torch.bool)
    val_mask = torch.zeros(NODES, dtype=torch.bool)
    train_mask[order[:LABELLED]] = True
    val_mask[order[LABELLED : LABELLED + VALIDATION]] = True
    return [(adjacency, x, labels, train_mask, val_mask)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    graph = one_graph(seed)
    return Run(
        TransductiveGCN(),
        DataLoader(graph, batch_size=None),
        DataLoader(graph, batch_size=None),
        trainer={
            "max_epochs": 200,
            "log_every_n_steps": 1,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_loss", mode="min", patience=10),
                ModelCheckpoint(monitor="val_loss", mode="min"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "transductive_gcn_full_batch_h",
        "graph learning",
        "a two-layer GCN trained full-batch on one graph (one step an epoch, the loss on 70 labelled nodes of 7 "
        "classes), validated on 150 other nodes after every epoch, Adam with weight decay 5e-4, early stopping "
        "(patience 10) and the best epoch kept",
        _build,
        faults=("lr_x1000", "flipped_sign", "frozen"),
    )
]
