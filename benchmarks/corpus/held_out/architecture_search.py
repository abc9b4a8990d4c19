"""DARTS-style differentiable architecture search with the first-order bilevel approximation, under manual
optimization. A supernet of three cells (normal, reduction, normal) whose edges are mixed operations: every edge
holds the seven candidate ops (zero, 3x3 max and average pool, skip, ReLU-conv-BN 3x3 and 5x5, 3x3 conv dilated by
2; every BatchNorm without affine parameters, as in DARTS's search) and outputs their sum weighted by the softmax of
its row of architecture parameters; cells of one kind share one alpha matrix. The training data are halved as in
DARTS: each batch brings a training half and a search half. Every step first updates the alphas on the search half
(Adam 6e-4, betas (0.5, 0.999), weight decay 1e-3, taken at the current weights: the first-order approximation),
then the weights on the training half (SGD 0.025 with momentum 0.9, weight decay 3e-4, gradient norm clipped at 5,
cosine decay to 1e-3 stepped per epoch). Both optimizers live in one LightningModule, so each batch counts two
optimizer steps. Validation runs the supernet on a held-out set; the alphas' mean softmax entropy (ln 7 at the
start) is logged as the search narrows."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "conv_3x3", "conv_5x5", "dil_conv_3x3")
CLASSES = 10


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, bias=False),
            nn.BatchNorm2d(c_out, affine=False),
        )


class Zero(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two strided 1x1 convs, one shifted by a pixel, concatenated."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        out: torch.Tensor = self.bn(torch.cat([self.conv_a(x), self.conv_b(x[:, :, 1:, 1:])], 1))
        return out


def _op(name: str, c: int, stride: int) -> nn.Module:
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.BatchNorm2d(c, affine=False))
    if name == "avg_pool_3x3":
        return nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=False), nn.BatchNorm2d(c, affine=False))
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == "conv_3x3":
        return ReLUConvBN(c, c, 3, stride, 1)
    if name == "conv_5x5":
        return ReLUConvBN(c, c, 5, stride, 2)
    if name == "dil_conv_3x3":
        return ReLUConvBN(c, c, 3, stride, 2, dilation=2)
    raise ValueError(name)


class MixedOp(nn.Module):
    """One edge: every candidate op, summed with the edge's softmax(alpha) weights."""

    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(_op(name, c, stride) for name in OPS)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum((w * op(x) for w, op in zip(weights, self.ops)), torch.zeros(()))


class Cell(nn.Module):
    """Two input nodes (the two previous cells' outputs) and ``steps`` intermediate nodes, each the sum of mixed
    edges from every earlier node; the output concatenates the intermediate nodes."""

    def __init__(self, steps: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.steps, self.reduction = steps, reduction
        self.pre0: nn.Module = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if reduction and j < 2 else 1) for i in range(steps) for j in range(2 + i)
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        offset = 0
        for _ in range(self.steps):
            node = sum((self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states)), torch.zeros(()))
            offset += len(states)
            states.append(node)
        return torch.cat(states[2:], 1)


class Supernet(nn.Module):
    def __init__(self, c: int = 8, layers: int = 3, steps: int = 2, stem_multiplier: int = 3) -> None:
        super().__init__()
        c_curr = stem_multiplier * c
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i == layers // 2
            if reduction:
                c_curr *= 2
            self.cells.append(Cell(steps, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, steps * c_curr
        self.classifier = nn.Linear(c_p, CLASSES)

    def forward(self, x: torch.Tensor, normal: torch.Tensor, reduce: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        logits: torch.Tensor = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return logits


class DARTSSearch(L.LightningModule):
    def __init__(
        self,
        steps: int = 2,
        lr: float = 0.025,
        lr_min: float = 1e-3,
        arch_lr: float = 6e-4,
        epochs: int = 4,
        clip: float = 5.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.lr, self.lr_min, self.arch_lr, self.epochs, self.clip = lr, lr_min, arch_lr, epochs, clip
        self.net = Supernet(steps=steps)
        edges = sum(2 + i for i in range(steps))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(edges, len(OPS)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(edges, len(OPS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x, self.alphas_normal.softmax(-1), self.alphas_reduce.softmax(-1))
        return logits

    def alpha_entropy(self) -> torch.Tensor:
        """Mean entropy of the edges' op distributions: ln(7) at the start, lower as edges commit to an op."""
        probs = torch.cat([self.alphas_normal, self.alphas_reduce]).detach().softmax(-1)
        return -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x_train, y_train, x_search, y_search = batch
        optimizers = self.optimizers()
        assert isinstance(optimizers, list)
        w_opt, a_opt = optimizers
        # architecture step on the search half, at the current weights (first-order DARTS)
        search_loss = F.cross_entropy(self(x_search), y_search)
        a_opt.zero_grad()
        self.manual_backward(search_loss)
        a_opt.step()
        # weight step on the training half
        logits = self(x_train)
        loss = F.cross_entropy(logits, y_train)
        w_opt.zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(w_opt.optimizer, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")
        w_opt.step()
        self.log_dict(
            {
                "train_loss": loss,
                "train_acc": (logits.argmax(1) == y_train).float().mean(),
                "search_loss": search_loss,
                "alpha_entropy": self.alpha_entropy(),
            }
        )
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        schedule = self.lr_schedulers()
        assert isinstance(schedule, torch.optim.lr_scheduler.LRScheduler)
        schedule.step()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        weights = [p for name, p in self.named_parameters() if not name.startswith("alphas_")]
        w_opt = torch.optim.SGD(weights, lr=self.lr, momentum=0.9, weight_decay=3e-4)
        a_opt = torch.optim.Adam(
            [self.alphas_normal, self.alphas_reduce], lr=self.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, self.epochs, eta_min=self.lr_min)
        return [w_opt, a_opt], [schedule]


def _search_split(n: int, seed: int) -> TensorDataset:
    """The training data halved, DARTS-style: sample i of the training half paired with sample i of the search
    half, ``(x_train, y_train, x_search, y_search)``."""
    x, y = images(2 * n, CLASSES, size=8, channels=3, noise=2.0, seed=seed).tensors
    return TensorDataset(x[:n], y[:n], x[n:], y[n:])


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    epochs = 4
    return Run(
        DARTSSearch(epochs=epochs),
        loader(_search_split(1024, seed), 32, seed=seed),
        loader(images(512, CLASSES, size=8, channels=3, noise=2.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": epochs},
    )


PROGRAMS = [
    Program(
        "darts_bilevel_search_h",
        "neural architecture search",
        "first-order DARTS under manual optimization: a three-cell supernet of softmax(alpha)-weighted mixed ops, "
        "each step an Adam(0.5, 0.999) update of the alphas on a search split, then an SGD-momentum update of the "
        "weights on the training split with gradient-norm clipping and a per-epoch cosine schedule",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
