"""Fully test-time adaptation by entropy minimisation (TENT): a small BatchNorm CNN is trained on a labelled source
domain, then adapted to a corrupted target domain (a colour cast, a channel offset and Gaussian noise) without
labels. As TENT configures the model: train mode, BatchNorm normalising with the statistics of each batch (its
running statistics dropped), every parameter frozen but the BatchNorm scales and shifts, and the loss the mean
Shannon entropy of the predictions on each unlabelled target batch, minimised with Adam at 1e-3. Validation is on
labelled target data (cross entropy and accuracy), batched like the stream since BatchNorm uses batch statistics."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, CHANNELS = 10, 16, 3
BATCH = 64


def _classifier(width: int = 16) -> nn.Sequential:
    """Three conv-BN-ReLU blocks (the last two stride 2), global average pooling and a linear head."""

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(CHANNELS, width, 1),
        *block(width, 2 * width, 2),
        *block(2 * width, 2 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, CLASSES),
    )


def _corrupt(x: torch.Tensor, seed: int) -> torch.Tensor:
    """The target domain: colours mixed into their neighbours, a per-channel offset and Gaussian noise."""
    mixing = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.6, 0.4], [0.4, 0.0, 0.6]])
    offset = torch.tensor([0.8, -0.5, 0.3]).view(1, CHANNELS, 1, 1)
    noise = torch.randn(x.shape, generator=generator(seed))
    return torch.einsum("dc,nchw->ndhw", mixing, x) + offset + 1.5 * noise


def _pretrain(model: nn.Sequential, seed: int, steps: int = 200) -> None:
    """Ordinary supervised training on the clean source domain: SGD with momentum and weight decay."""
    source = images(4096, CLASSES, SIZE, CHANNELS, seed=seed)
    x, y = source.tensors
    g = generator(seed + 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(x), (128,), generator=g)
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()


def _configure_for_tent(model: nn.Sequential) -> list[nn.Parameter]:
    """Train mode, batch statistics only, everything frozen but the BatchNorm affine parameters (returned)."""
    model.train()
    model.requires_grad_(False)
    params: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.requires_grad_(True)
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None
            params += [module.weight, module.bias]
    return params


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


class Tent(L.LightningModule):
    def __init__(self, model: nn.Sequential, lr: float = 1e-3) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.adapted = _configure_for_tent(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(x)
        return logits

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        loss = _entropy(self(x)).mean()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.adapted, lr=self.lr, betas=(0.9, 0.999), weight_decay=0.0)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    model = _classifier()
    _pretrain(model, seed)
    stream = images(4096, CLASSES, SIZE, CHANNELS, seed=seed + 1)
    held = images(1024, CLASSES, SIZE, CHANNELS, seed=seed + 100)
    target = TensorDataset(_corrupt(stream.tensors[0], seed + 2))
    labelled = TensorDataset(_corrupt(held.tensors[0], seed + 101), held.tensors[1])
    return Run(
        Tent(model),
        loader(target, BATCH, seed=seed),
        loader(labelled, BATCH, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "entropy_adaptation_h",
        "test-time adaptation",
        "TENT: a source-trained BatchNorm CNN adapted without labels to a corrupted target domain by minimising "
        "the mean prediction entropy, BatchNorm on batch statistics and only its affine parameters trained with "
        "Adam 1e-3; validated with labels on the target domain",
        _build,
        faults=("flipped_sign", "nan_batch", "lr_x1000"),
    )
]
