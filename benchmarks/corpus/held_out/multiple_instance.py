"""Attention-based deep multiple-instance learning (gated-attention MIL pooling), as MNIST-bags and histopathology
code trains it: each example is a bag of a variable number of small images, only the bag's label is known (positive
when any instance shows the target digit), and the DataLoader hands over one bag per step (``batch_size=1``, the
batch dimension squeezed off in ``forward``). A LeNet-style extractor embeds every instance, a gated attention
(a tanh branch times a sigmoid branch, one score per instance, softmax over the bag) weighs them, and a sigmoid
classifier on the weighted sum is trained with binary cross-entropy on the clamped bag probability. Adam 5e-4,
betas (0.9, 0.999), weight decay 1e-4, no schedule; the per-step loss of a single bag is very noisy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import Dataset

from benchmarks.corpus.data import generator, images, loader
from benchmarks.corpus.program import Program, Run

TARGET, SIZE = 9, 16
"""The digit whose presence makes a bag positive; instance images are ``SIZE x SIZE``."""


class Bags(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Bags of 8-24 instances drawn from a pool of class-templated images (the stand-in for MNIST): half the bags
    are positive and hold 1-3 instances of :data:`TARGET` among the others, the negative ones hold none."""

    def __init__(self, n: int, seed: int, noise: float = 2.5) -> None:
        pool, digits = images(40 * n, classes=10, size=SIZE, noise=noise, seed=seed, task_seed=53).tensors
        targets = torch.nonzero(digits == TARGET).squeeze(1)
        others = torch.nonzero(digits != TARGET).squeeze(1)
        g = generator(seed + 1)
        self.bags: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        for _ in range(n):
            length = int(torch.randint(8, 25, (1,), generator=g))
            index = others[torch.randint(0, len(others), (length,), generator=g)]
            positive = bool(torch.rand(1, generator=g) < 0.5)
            if positive:
                k = int(torch.randint(1, 4, (1,), generator=g))
                slots = torch.randperm(length, generator=g)[:k]
                index[slots] = targets[torch.randint(0, len(targets), (k,), generator=g)]
            self.bags.append(pool[index])
            self.labels.append(torch.tensor(float(positive)))

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bags[i], self.labels[i]


class GatedAttentionMIL(L.LightningModule):
    """Conv(1-20, 5)-pool-Conv(20-50, 3)-pool-Linear(200-128) per instance; gated attention 128-64-1; classifier."""

    def __init__(self, hidden: int = 128, attention: int = 64) -> None:
        super().__init__()
        self.extractor = nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 3), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.embed = nn.Sequential(nn.Linear(50 * 2 * 2, hidden), nn.ReLU())
        self.attention_v = nn.Sequential(nn.Linear(hidden, attention), nn.Tanh())
        self.attention_u = nn.Sequential(nn.Linear(hidden, attention), nn.Sigmoid())
        self.attention_w = nn.Linear(attention, 1)
        self.classifier = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = bag.squeeze(0)  # [1, N, 1, H, W] -> [N, 1, H, W]: one bag, N instances
        h = self.embed(self.extractor(x).flatten(1))  # N x hidden
        a = self.attention_w(self.attention_v(h) * self.attention_u(h))  # N x 1
        a = torch.softmax(a.transpose(0, 1), dim=1)  # 1 x N, sums to one over the bag
        m = a @ h  # 1 x hidden
        return self.classifier(m).squeeze(1), a

    def _loss(self, bag: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob, _ = self(bag)
        prob = prob.clamp(1e-5, 1.0 - 1e-5)
        # the negative Bernoulli log-likelihood written out, as that code has it (binary cross-entropy)
        loss = -(label * torch.log(prob) + (1.0 - label) * torch.log(1.0 - prob)).mean()
        return loss, prob

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        bag, label = batch
        loss, prob = self._loss(bag, label)
        self.log("train_loss", loss)
        self.log("train_acc", ((prob >= 0.5).float() == label).float().mean(), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        bag, label = batch
        loss, prob = self._loss(bag, label)
        self.log_dict({"val_loss": loss, "val_acc": ((prob >= 0.5).float() == label).float().mean()}, batch_size=1)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-4)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        GatedAttentionMIL(),
        loader(Bags(200, seed), 1, seed=seed),
        loader(Bags(100, seed + 100), 1, shuffle=False),
        trainer={"max_epochs": 10},
    )


PROGRAMS = [
    Program(
        "attention_mil_h",
        "multiple-instance learning",
        "gated-attention MIL pooling (Ilse et al.): one variable-size bag of images per step (batch_size=1, batch "
        "dimension squeezed), a LeNet-style instance extractor, tanh x sigmoid attention with a softmax over the bag, "
        "a sigmoid bag classifier trained with BCE; Adam 5e-4 with weight decay 1e-4",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
