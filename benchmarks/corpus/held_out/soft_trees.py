"""An ensemble of differentiable oblivious decision trees for tabular data, as NODE-style libraries build it: at each
depth a tree picks a feature by a softmax over learned feature logits and compares it with a learned threshold through
a sigmoid with a learned temperature, the same split for every node of that depth; a sample's path probabilities
weight the leaves' learned responses, and the trees' outputs are averaged. Binary classification with the logistic
loss on a target that mixes thresholds and an interaction, Adam at 1e-2, and a step decay per epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

FEATURES, TREES, DEPTH, EPOCHS, BATCH = 12, 32, 4, 10, 128


def thresholds_task(n: int, seed: int, task_seed: int = 41) -> TensorDataset:
    """``(x [n, FEATURES], label [n])``: a label from axis-aligned thresholds, an interaction, and 10% flipped."""
    t = generator(task_seed)
    cut = torch.randn(3, generator=t) * 0.5
    s = generator(seed)
    x = torch.randn(n, FEATURES, generator=s)
    score = (
        (x[:, 0] > cut[0]).float() + (x[:, 1] > cut[1]).float() * (x[:, 2] < cut[2]).float() + 0.5 * x[:, 3] * x[:, 4]
    )
    label = (score > 1.0).long()
    flip = torch.rand(n, generator=s) < 0.1
    return TensorDataset(x, torch.where(flip, 1 - label, label).float())


class ObliviousTrees(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.feature_logits = nn.Parameter(torch.randn(TREES, DEPTH, FEATURES) * 0.1)
        self.thresholds = nn.Parameter(torch.randn(TREES, DEPTH) * 0.5)
        self.log_temperature = nn.Parameter(torch.zeros(TREES, DEPTH))
        self.leaves = nn.Parameter(torch.randn(TREES, 2**DEPTH) * 0.1)
        # bit d of leaf index l: does the path to leaf l take the right branch at depth d
        bits = (torch.arange(2**DEPTH)[:, None] >> torch.arange(DEPTH)[None, :]) & 1
        self.register_buffer("bits", bits.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chosen = torch.einsum("bf,tdf->btd", x, torch.softmax(self.feature_logits, dim=-1))
        right = torch.sigmoid((chosen - self.thresholds) * torch.exp(-self.log_temperature))  # [b, trees, depth]
        # probability of each leaf: the product over depths of right or (1 - right) as the leaf's bit says
        per_depth = right[:, :, None, :] * self.bits + (1 - right[:, :, None, :]) * (1 - self.bits)
        leaf_probability = per_depth.prod(dim=-1)  # [b, trees, leaves]
        return (leaf_probability * self.leaves).sum(-1).mean(-1)


class SoftTreeClassifier(L.LightningModule):
    def __init__(self, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.norm = nn.BatchNorm1d(FEATURES, affine=False)
        self.trees = ObliviousTrees()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trees(self.norm(x)) * self.scale

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        accuracy = ((logits > 0).float() == y).float().mean()
        self.log_dict({"val_loss": F.binary_cross_entropy_with_logits(logits, y), "val_acc": accuracy})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        SoftTreeClassifier(),
        loader(thresholds_task(4096, seed), BATCH, seed=seed),
        loader(thresholds_task(1024, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "soft_oblivious_trees_h",
        "tabular",
        "an ensemble of differentiable oblivious decision trees (softmax feature choice, sigmoid splits with learned "
        "temperatures, leaf responses weighted by path probabilities); logistic loss, Adam 1e-2, step decay",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "flipped_sign"),
    )
]
