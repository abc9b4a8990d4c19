"""Non-parametric instance discrimination with a memory bank (InstDisc / NPID): every training image is its own
class. The dataset hands out ``(image, index)``; a small conv net (BN-ReLU blocks, global average pool) with a 128-d
linear head and L2 normalisation embeds one augmented view per step; a bank of N unit vectors (random at the start,
a buffer, not a parameter) stands for every instance. The loss is a full softmax over the similarities to all N bank
entries at temperature 0.07, the target the sample's own index. It starts near log(N), climbs for the first epoch or
two while the bank fills with the untrained encoder's nearly parallel embeddings (a sample's own entry is still random
until its turn comes), then falls slowly below log(N). After each optimizer step, outside the optimizer, the batch's
entries move halfway to their new embeddings and are normalised again (momentum 0.5). SGD 0.03 with momentum 0.9 and
weight decay 5e-4, the learning rate cut 10x at 80% of training. The class labels are held back from training:
validation is the weighted k-NN classifier on the bank (the 20 most similar entries vote with weight exp(s / 0.1)),
logging the cross-entropy of its vote on the true class as ``val_loss`` and its accuracy as ``val_knn_acc``."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, INSTANCES = 6, 16, 1024


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, 3, SIZE, SIZE]`` colour gratings and their labels: the class is the orientation, one of ``CLASSES``
    equal bins over 180 degrees; within it each image has its own angle, period (4-8 pixels) and phase, a colour cast
    (background colour and per-channel contrast) and pixel noise."""
    s = generator(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=s)
    angle = ((labels + torch.rand(n, generator=s)) * math.pi / CLASSES).view(n, 1, 1)
    frequency = (2 * math.pi / (4 + 4 * torch.rand(n, generator=s))).view(n, 1, 1)
    phase = (torch.rand(n, generator=s) * 2 * math.pi).view(n, 1, 1)
    axis = torch.arange(SIZE, dtype=torch.float32) - SIZE / 2
    along = torch.cos(angle) * axis.view(1, 1, SIZE) + torch.sin(angle) * axis.view(1, SIZE, 1)
    texture = torch.sin(frequency * along + phase).unsqueeze(1)
    background = (torch.rand(n, 3, 1, 1, generator=s) * 2 - 1) * 0.3
    contrast = 0.4 + 0.6 * torch.rand(n, 3, 1, 1, generator=s)
    return background + contrast * texture + 0.5 * torch.randn(n, 3, SIZE, SIZE, generator=s), labels


def augment(x: torch.Tensor) -> torch.Tensor:
    """One random view: a random resized crop (zoom 0.8-1, shift up to 2 px, reflected at the border), colour jitter
    (per-channel gain and offset), random grayscale, pixel noise. No mirror: the orientation is the class."""
    n = len(x)
    theta = torch.zeros(n, 2, 3)
    scale = 0.8 + 0.2 * torch.rand(n)
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, :, 2] = (torch.rand(n, 2) * 2 - 1) * 0.25
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    x = x * (0.6 + 0.8 * torch.rand(n, 3, 1, 1)) + (torch.rand(n, 3, 1, 1) * 2 - 1) * 0.4
    x = torch.where(torch.rand(n, 1, 1, 1) < 0.2, x.mean(1, keepdim=True).expand_as(x), x)
    return x + 0.2 * torch.randn_like(x)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class InstanceDiscrimination(L.LightningModule):
    """Conv encoder -> global pool -> Linear(128) -> L2 norm; full softmax over a memory bank of every instance."""

    bank: torch.Tensor
    train_labels: torch.Tensor

    def __init__(
        self,
        train_labels: torch.Tensor,
        dim: int = 128,
        temperature: float = 0.07,
        momentum: float = 0.5,
        lr: float = 0.03,
        knn_k: int = 20,
        knn_sigma: float = 0.1,
    ) -> None:
        super().__init__()
        self.temperature, self.momentum, self.lr = temperature, momentum, lr
        self.knn_k, self.knn_sigma = knn_k, knn_sigma
        self.encoder = nn.Sequential(_block(3, 32, 1), _block(32, 64, 2), _block(64, 128, 2), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(128, dim)
        self.register_buffer("bank", F.normalize(torch.rand(len(train_labels), dim) * 2 - 1, dim=1))
        # held back from training, only the k-NN validation reads them (as the original reads the train set's targets)
        self.register_buffer("train_labels", train_labels.clone(), persistent=False)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(self.encoder(x).flatten(1)), dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, index = batch
        v = self(augment(x))
        loss = F.cross_entropy(v @ self.bank.T / self.temperature, index)
        self._pending = (index, v.detach())
        self.log("train_loss", loss)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """The memory update, after the optimizer step: bank[i] <- normalise(m * bank[i] + (1 - m) * v_i)."""
        if self._pending is None:
            return
        index, v = self._pending
        self.bank[index] = F.normalize(self.momentum * self.bank[index] + (1 - self.momentum) * v, dim=1)
        self._pending = None

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        similarity, neighbour = (self(x) @ self.bank.T).topk(self.knn_k, dim=1)
        weight = (similarity / self.knn_sigma).exp()
        votes = (F.one_hot(self.train_labels[neighbour], CLASSES).float() * weight.unsqueeze(2)).sum(1)
        probs = votes / votes.sum(1, keepdim=True)
        self.log_dict(
            {
                "val_loss": F.nll_loss(probs.clamp_min(1e-6).log(), y),
                "val_knn_acc": (probs.argmax(1) == y).float().mean(),
            }
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        milestone = int(0.8 * (self.trainer.max_epochs or 1))
        return [optimizer], [torch.optim.lr_scheduler.MultiStepLR(optimizer, [milestone], gamma=0.1)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    x, labels = _images(INSTANCES, seed)
    val_x, val_labels = _images(512, seed + 100)
    return Run(
        InstanceDiscrimination(labels),
        loader(TensorDataset(x, torch.arange(INSTANCES)), 64, seed=seed),  # (image, index): the label stays out
        loader(TensorDataset(val_x, val_labels), 512, shuffle=False),
        trainer={"max_epochs": 20},
    )


PROGRAMS = [
    Program(
        "instance_memory_bank_h",
        "memory-bank contrastive",
        "NPID-style instance discrimination: (image, index) batches, one augmented view through a conv encoder with "
        "an L2-normalised 128-d head, a full softmax at temperature 0.07 over a memory bank of every instance that is "
        "updated with momentum 0.5 after each step outside the optimizer; SGD with momentum, weight decay and a step "
        "decay; a weighted k-NN classifier on the bank in validation",
        _build,
        faults=("lr_x1000", "no_zero_grad", "frozen"),
    )
]
