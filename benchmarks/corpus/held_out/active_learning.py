"""Pool-based active learning: a classifier starts from 256 labelled examples and, at the end of every training
epoch, asks for the labels of the 128 pool examples it is least sure of (the highest predictive entropy). The
labelled set is a ``Dataset`` the module grows in place, and ``reload_dataloaders_every_n_epochs=1`` makes the
Trainer rebuild its loader, so each epoch has more batches than the last and its new ones are the hardest cases it
has seen. An MLP over two interleaved spirals with label noise, Adam at a constant rate; validation logs the loss
and the accuracy on a fixed set."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

CLASSES = 3
START = 256
QUERY = 128
EPOCHS = 10


def spirals(n: int, seed: int) -> TensorDataset:
    """``(x [n, 2], arm [n])``: three noisy spiral arms, 5% of the labels flipped at random."""
    g = generator(seed)
    arm = torch.randint(0, CLASSES, (n,), generator=g)
    radius = torch.rand(n, generator=g) * 3 + 0.2
    angle = radius * 1.6 + arm * (2 * math.pi / CLASSES)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    x = x + 0.15 * torch.randn(n, 2, generator=g)
    flip = torch.rand(n, generator=g) < 0.05
    arm = torch.where(flip, torch.randint(0, CLASSES, (n,), generator=g), arm)
    return TensorDataset(x, arm)


class LabelledPool(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The examples whose labels were asked for so far: indices into the pool, grown by :meth:`label`."""

    def __init__(self, pool: TensorDataset, start: int, seed: int) -> None:
        self.pool = pool
        order = torch.randperm(len(pool), generator=generator(seed))
        self.labelled = order[:start].tolist()
        self.unlabelled = order[start:]

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool[self.labelled[index]]

    def label(self, scores: torch.Tensor, count: int) -> None:
        """Move the ``count`` unlabelled examples with the highest ``scores`` into the labelled set."""
        chosen = scores.topk(min(count, len(scores))).indices
        keep = torch.ones(len(self.unlabelled), dtype=torch.bool)
        keep[chosen] = False
        self.labelled += self.unlabelled[chosen].tolist()
        self.unlabelled = self.unlabelled[keep]


class ActiveLearner(L.LightningModule):
    def __init__(self, labelled: LabelledPool, hidden: int = 64) -> None:
        super().__init__()
        self.labelled = labelled
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, arm = batch
        loss = F.cross_entropy(self(x), arm)
        self.log("train_loss", loss)
        return loss

    def on_train_epoch_end(self) -> None:
        # Query by uncertainty: the pool examples whose predicted distribution has the highest entropy.
        if len(self.labelled.unlabelled) == 0:
            return
        x = self.labelled.pool.tensors[0][self.labelled.unlabelled]
        with torch.no_grad():
            probs = F.softmax(self(x), dim=1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
        self.labelled.label(entropy, QUERY)
        self.log("labelled", float(len(self.labelled)))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, arm = batch
        logits = self(x)
        accuracy = (logits.argmax(1) == arm).float().mean()
        self.log_dict({"val_loss": F.cross_entropy(logits, arm), "val_acc": accuracy})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    labelled = LabelledPool(spirals(4096, seed), START, seed)
    return Run(
        ActiveLearner(labelled),
        loader(labelled, batch_size=32, seed=seed),
        loader(spirals(1024, seed + 100), batch_size=512, shuffle=False),
        trainer={"max_epochs": EPOCHS, "reload_dataloaders_every_n_epochs": 1},
    )


PROGRAMS = [
    Program(
        "active_learning_uncertainty_h",
        "active learning",
        "an MLP that grows its labelled set each epoch with the pool examples of highest predictive entropy (a "
        "Dataset grown in place, reload_dataloaders_every_n_epochs=1), Adam at a constant rate",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "flipped_sign"),
    )
]
