"""Graph node classification: a two-layer GCN (Kipf & Welling) with a dense normalised adjacency, one graph
per batch, Adam with weight decay."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from benchmarks.corpus.data import generator
from benchmarks.corpus.held_out.synthetic import community_graphs
from benchmarks.corpus.program import Program, Run


class GCNLayer(nn.Module):
    """``A_hat @ X @ W``: one graph convolution over a dense normalised adjacency."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(inputs, outputs)

    def forward(self, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return adjacency @ self.linear(x)


class GCN(L.LightningModule):
    """GCN-ReLU-dropout-GCN, node cross-entropy, Adam(lr 0.01, weight decay 5e-4) as in the GCN paper,
    torchmetrics node accuracy on held-out graphs."""

    def __init__(self, features: int = 16, hidden: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.conv1 = GCNLayer(features, hidden)
        self.conv2 = GCNLayer(hidden, classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)

    def forward(self, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.conv1(adjacency, x)), 0.5, self.training)
        return self.conv2(adjacency, h)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        adjacency, x, y = batch
        loss = F.cross_entropy(self(adjacency, x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        adjacency, x, y = batch
        logits = self(adjacency, x)
        self.val_acc(logits, y)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": self.val_acc})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.01, weight_decay=5e-4)


def _build(seed: int) -> Run:
    train = community_graphs(32, seed=seed)
    return Run(
        GCN(),
        DataLoader(train, batch_size=None, shuffle=True, generator=generator(seed)),
        DataLoader(community_graphs(16, seed=seed + 100), batch_size=None),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "gcn_communities_h",
        "graph learning",
        "a two-layer dense-adjacency GCN classifying nodes of stochastic-block-model graphs, one graph per "
        "batch, Adam with weight decay 5e-4, torchmetrics accuracy on held-out graphs",
        _build,
        faults=("frozen", "lr_x1000", "flipped_sign"),
    )
]
