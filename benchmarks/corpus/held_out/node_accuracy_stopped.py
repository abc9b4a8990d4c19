"""Node classification on one graph, trained full-batch as GCN ports do when they select on accuracy: one step an
epoch over the whole graph, the loss on 100 labelled nodes, the validation loss and accuracy on 200 others after
every epoch; early stopping waits for a higher validation accuracy (``mode="max"``, patience 25), the most accurate
epoch kept. Two graph convolutions of 32 units, dropout 0.5, Adam (lr 0.01, weight decay 5e-4), up to 300 epochs."""

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

NODES, CLASSES, FEATURES, LABELLED, VALIDATION = 500, 5, 24, 100, 200


class NodeClassifier(L.LightningModule):
    def __init__(self, hidden: int = 32, dropout: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.first = nn.Linear(FEATURES, hidden)
        self.second = nn.Linear(hidden, CLASSES)
        self.dropout = dropout

    def forward(self, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(x, self.dropout, self.training)
        h = F.relu(adjacency @ self.first(h))
        h = F.dropout(h, self.dropout, self.training)
        return adjacency @ self.second(h)

    def training_step(self, graph: Any, batch_idx: int) -> torch.Tensor:
        adjacency, x, labels, train_nodes, _ = graph
        loss = F.cross_entropy(self(adjacency, x)[train_nodes], labels[train_nodes])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, graph: Any, batch_idx: int) -> None:
        adjacency, x, labels, _, val_nodes = graph
        logits = self(adjacency, x)[val_nodes]
        self.log("val_loss", F.cross_entropy(logits, labels[val_nodes]))
        self.log("val_acc", (logits.argmax(1) == labels[val_nodes]).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01, weight_decay=5e-4)


def one_graph(seed: int) -> list[tuple[torch.Tensor, ...]]:
    """One community graph and a random split of its nodes into labelled and validation nodes (a one-item dataset:
    one batch an epoch)."""
    [(adjacency, x, labels)] = community_graphs(1, nodes=NODES, communities=CLASSES, features=FEATURES, seed=seed)
    order = torch.randperm(NODES, generator=generator(seed + 1))
    return [(adjacency, x, labels, order[:LABELLED], order[LABELLED : LABELLED + VALIDATION])]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    graph = one_graph(seed)
    return Run(
        NodeClassifier(),
        DataLoader(graph, batch_size=None),
        DataLoader(graph, batch_size=None),
        trainer={
            "max_epochs": 300,
            "log_every_n_steps": 1,
            "enable_checkpointing": True,
            "callbacks": [
                EarlyStopping(monitor="val_acc", mode="max", patience=25),
                ModelCheckpoint(monitor="val_acc", mode="max"),
            ],
        },
    )


PROGRAMS = [
    Program(
        "gcn_val_acc_full_batch_h",
        "graph learning",
        "a two-layer GCN with dropout trained full-batch on one graph's labelled nodes, the validation loss and "
        "accuracy on other nodes every epoch, early stopping on val_acc (mode max, patience 25), the most accurate "
        "epoch kept, Adam 0.01 with weight decay",
        _build,
        faults=("frozen", "flipped_sign", "lr_div_1e6"),
    )
]
