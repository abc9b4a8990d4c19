"""The fault zoo: small Lightning training runs, each with one known fault, and healthy controls.

Each scenario declares the codes that count as a correct diagnosis and the step where its fault begins.
Tests reuse these runs, so every fault is defined once. Everything runs on CPU in seconds.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning_lossguard as lossguard

LossFn = Callable[["ZooModule", torch.Tensor, torch.Tensor, int], Any]


# -- data -----------------------------------------------------------------------------------------------
def regression_data(
    n: int = 2048, dim: int = 16, noise: float = 0.1, seed: int = 0, shift: float = 0.0
) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, 1, generator=torch.Generator().manual_seed(1234)) / math.sqrt(dim)
    y = torch.tanh(x @ w) * 2 + shift + noise * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def classification_data(
    n: int = 2048, dim: int = 16, classes: int = 4, seed: int = 0, spread: float = 1.0
) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(4321)) * 1.5
    labels = torch.randint(0, classes, (n,), generator=g)
    x = centers[labels] + spread * torch.randn(n, dim, generator=g)
    return TensorDataset(x, labels)


def loader(data: TensorDataset, batch_size: int = 32, shuffle: bool = True, seed: int = 0) -> DataLoader[Any]:
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def mlp(dims: list[int], act: type[nn.Module] = nn.ReLU, out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(act())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


# -- the module -------------------------------------------------------------------------------------------
def mse(module: ZooModule, pred: torch.Tensor, y: torch.Tensor, batch_idx: int) -> torch.Tensor:
    return F.mse_loss(pred, y)


def cross_entropy(module: ZooModule, pred: torch.Tensor, y: torch.Tensor, batch_idx: int) -> torch.Tensor:
    return F.cross_entropy(pred, y)


class ZooModule(L.LightningModule):
    """A LightningModule around any ``net``, with a pluggable loss and optimizer."""

    def __init__(
        self,
        net: nn.Module,
        loss: LossFn = mse,
        optimizer: Callable[[Any], torch.optim.Optimizer] = lambda p: torch.optim.Adam(p, lr=1e-3),
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        val_loss: LossFn | None = None,
        nan_at_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss_fn = loss
        self.val_loss_fn = val_loss or loss
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        self.nan_at_batch = nan_at_batch
        self.history: list[torch.Tensor] = []
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        if self.nan_at_batch is not None and self.seen == self.nan_at_batch:
            x = x.clone()
            x[0, 0] = float("nan")
        self.seen += 1
        return self.loss_fn(self, self(x), y, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        out = self.val_loss_fn(self, self(x), y, batch_idx)
        self.log("val_loss", out["loss"] if isinstance(out, dict) else out)

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.make_scheduler(optimizer), "interval": "step"},
        }


@dataclass
class Run:
    """What a scenario builds: the module, data, and Trainer/LossGuard arguments."""

    module: L.LightningModule
    train: DataLoader[Any]
    val: DataLoader[Any] | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    guard: dict[str, Any] = field(default_factory=dict)
    pretrain: Callable[[L.LightningModule], None] | None = None


@dataclass(frozen=True)
class Scenario:
    """One zoo entry. ``expect`` empty means healthy: any warning or error is a false alarm."""

    name: str
    description: str
    build: Callable[[], Run]
    expect: tuple[str, ...] = ()
    fault_step: int = 0
    source: str = ""

    @property
    def healthy(self) -> bool:
        return not self.expect


# -- faulty runs ----------------------------------------------------------------------------------------
def _lr_too_high() -> Run:
    net = mlp([16, 64, 64, 1], act=nn.Tanh)
    return Run(
        ZooModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.5)),
        loader(regression_data()),
        trainer={"max_steps": 200},
    )


def _exp_loss_term() -> Run:
    def loss(m: ZooModule, pred: torch.Tensor, y: torch.Tensor, i: int) -> torch.Tensor:
        return torch.exp(10 * (pred - y).abs()).mean()  # seed 004, example 1

    return Run(
        ZooModule(mlp([16, 64, 64, 1]), loss=loss, optimizer=lambda p: torch.optim.SGD(p, lr=1e-3)),
        loader(regression_data()),
        trainer={"max_steps": 300},
    )


def _exp_activation() -> Run:
    class Exp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x)

    net = mlp([16, 64, 64, 1], act=nn.Tanh, out_act=Exp())
    return Run(
        ZooModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.03)),
        loader(regression_data(shift=6.0)),
        trainer={"max_steps": 100},
    )


def _nan_batch() -> Run:
    return Run(
        ZooModule(mlp([16, 64, 64, 1]), nan_at_batch=60),
        loader(regression_data()),
        trainer={"max_steps": 150},
    )


def _deep_sigmoid() -> Run:
    net = mlp([16] + [32] * 14 + [1], act=nn.Sigmoid)
    return Run(
        ZooModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.05)),
        loader(regression_data()),
        trainer={"max_steps": 200},
    )


def _negative_bias_relu() -> Run:
    net = mlp([16, 64, 64, 1])
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear) and layer.out_features > 1:
                layer.bias.fill_(-10.0)
    return Run(ZooModule(net), loader(regression_data()), trainer={"max_steps": 200})


def _zero_init() -> Run:
    net = mlp([16, 64, 64, 1])
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return Run(
        ZooModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.05)),
        loader(regression_data()),
        trainer={"max_steps": 200},
    )


def _relu_output_negative_targets() -> Run:
    net = mlp([16, 64, 64, 1], out_act=nn.ReLU())
    return Run(ZooModule(net), loader(regression_data(shift=-4.0)), trainer={"max_steps": 300})


def _flat_hinge() -> Run:
    def loss(m: ZooModule, pred: torch.Tensor, y: torch.Tensor, i: int) -> torch.Tensor:
        return torch.clamp((pred - y).abs() - 50.0, min=0).mean() + 0.0 * pred.sum()  # seed 004, example 2

    return Run(ZooModule(mlp([16, 64, 64, 1]), loss=loss), loader(regression_data()), trainer={"max_steps": 200})


def _lr_too_low() -> Run:
    return Run(
        ZooModule(mlp([16, 64, 64, 4]), loss=cross_entropy, optimizer=lambda p: torch.optim.SGD(p, lr=1e-8)),
        loader(classification_data()),
        trainer={"max_steps": 300},
    )


def _negated_loss() -> Run:
    def loss(m: ZooModule, pred: torch.Tensor, y: torch.Tensor, i: int) -> torch.Tensor:
        return -F.cross_entropy(pred, y)

    return Run(
        ZooModule(mlp([16, 64, 64, 4]), loss=loss, optimizer=lambda p: torch.optim.SGD(p, lr=0.05)),
        loader(classification_data()),
        trainer={"max_steps": 300},
    )


def _momentum_oscillation() -> Run:
    # An ill-conditioned linear regression (feature scales 1..30) with heavy momentum.
    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(0, 1.5, 16)
    x = torch.randn(4096, 16, generator=g) * scales
    y = x @ (torch.randn(16, 1, generator=g) / scales[:, None]) + 0.01 * torch.randn(4096, 1, generator=g)
    net = nn.Linear(16, 1)
    return Run(
        ZooModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=2e-4, momentum=0.99)),
        loader(TensorDataset(x, y), batch_size=256),
        trainer={"max_steps": 400},
    )


def _overfit_finetune() -> Run:
    # Pre-train on plenty of clean data, then fine-tune on 24 noisy samples with a high LR (seed 001).
    big = regression_data(n=4096, noise=0.05, seed=1)
    net = mlp([16, 128, 128, 1])

    def pretrain(module: L.LightningModule) -> None:
        opt = torch.optim.Adam(module.parameters(), lr=3e-3)
        for _ in range(3):
            for x, y in loader(big, 128):
                opt.zero_grad()
                F.mse_loss(module(x), y).backward()  # type: ignore[no-untyped-call]
                opt.step()

    small = regression_data(n=24, noise=1.0, seed=2)
    val = regression_data(n=512, noise=0.05, seed=3)
    return Run(
        ZooModule(net, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3)),
        loader(small, 8),
        loader(val, 256, shuffle=False),
        trainer={"max_epochs": 60, "check_val_every_n_epoch": 3},
        pretrain=pretrain,
    )


def _slowing_history() -> Run:
    def loss(m: ZooModule, pred: torch.Tensor, y: torch.Tensor, i: int) -> torch.Tensor:
        # A "memory bank" that is never truncated: the loss loops over every past prediction (seed 004).
        m.history.append(pred.detach())
        with lossguard.timed("loss"):
            bank = sum(F.mse_loss(pred, past) for past in m.history) / len(m.history)
            return F.mse_loss(pred, y) + 0.01 * bank

    return Run(ZooModule(mlp([16, 64, 1]), loss=loss), loader(regression_data(n=8192)), trainer={"max_steps": 400})


def _expensive_loop() -> Run:
    proj = torch.randn(64, 64)

    def loss(m: ZooModule, pred: torch.Tensor, y: torch.Tensor, i: int) -> torch.Tensor:
        total = pred.new_zeros(())
        for p_i, y_i in zip(pred, y):  # per-sample Python loop with a matmul (seed 004, example 3)
            total = total + ((p_i - y_i).reshape(1, 1) @ proj[:1] @ proj).pow(2).mean()
        return total / len(pred)

    return Run(ZooModule(mlp([16, 32, 1]), loss=loss), loader(regression_data(), 512), trainer={"max_steps": 120})


def _l2_weight_10() -> Run:
    def loss(m: ZooModule, pred: torch.Tensor, y: torch.Tensor, i: int) -> dict[str, Any]:
        data = F.mse_loss(pred, y)
        l2 = 10.0 * sum(p.pow(2).sum() for p in m.parameters())
        return {"loss": data + l2, "loss_terms": {"mse": data, "l2": l2}}

    return Run(ZooModule(mlp([16, 64, 64, 1]), loss=loss), loader(regression_data()), trainer={"max_steps": 150})


def _lr_too_high_adam() -> Run:
    return Run(
        ZooModule(mlp([16, 64, 64, 4]), loss=cross_entropy, optimizer=lambda p: torch.optim.Adam(p, lr=1.0)),
        loader(classification_data()),
        trainer={"max_steps": 300},
    )


def _nan_gradient_sqrt() -> Run:
    def loss(m: ZooModule, pred: torch.Tensor, y: torch.Tensor, i: int) -> torch.Tensor:
        # sqrt at exactly 0: the value is finite (0) but its gradient is inf * 0 = NaN.
        spread = torch.sqrt(((pred - pred.detach()) ** 2).mean())
        return F.mse_loss(pred, y) + 0.1 * spread

    return Run(ZooModule(mlp([16, 64, 64, 1]), loss=loss), loader(regression_data()), trainer={"max_steps": 100})


def _leaking_graphs() -> Run:
    def loss(m: ZooModule, pred: torch.Tensor, y: torch.Tensor, i: int) -> torch.Tensor:
        out = F.mse_loss(pred, y)
        hidden = m.net[0](torch.randn(128, 16))  # type: ignore[index]  # net is an nn.Sequential here
        m.history.append((hidden * hidden).sum() + out)  # the graph (and its 1 MiB activation) stays alive
        return out

    return Run(
        ZooModule(mlp([16, 2048, 1]), loss=loss),
        loader(regression_data(n=16384), 64),
        trainer={"max_steps": 300},
    )


def _saturated_tanh() -> Run:
    net = mlp([16] + [64] * 12 + [1], act=nn.Tanh)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(0.3)
    return Run(
        ZooModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.01)),
        loader(regression_data()),
        trainer={"max_steps": 200},
    )


def _high_lr_finetune() -> Run:
    # Fine-tuning a converged model with a learning rate 100x too high: validation rises from the start.
    big = regression_data(n=4096, noise=0.05, seed=1)
    net = mlp([16, 128, 128, 1])

    def pretrain(module: L.LightningModule) -> None:
        opt = torch.optim.Adam(module.parameters(), lr=3e-3)
        for _ in range(4):
            for x, y in loader(big, 128):
                opt.zero_grad()
                F.mse_loss(module(x), y).backward()  # type: ignore[no-untyped-call]
                opt.step()

    return Run(
        ZooModule(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9)),
        loader(regression_data(n=512, noise=0.05, seed=5), 32),
        loader(regression_data(n=512, seed=6), 256, False),
        trainer={"max_epochs": 12, "check_val_every_n_epoch": 1},
        pretrain=pretrain,
    )


FAULTS: list[Scenario] = [
    Scenario(
        "lr_too_high_sgd",
        "SGD with lr=0.5 on a tanh MLP regression",
        _lr_too_high,
        ("exploding_gradients", "loss_divergence", "nonfinite_loss"),
        source="AUTOTRAINER",
    ),
    Scenario(
        "exp_loss_term",
        "loss = mean(exp(10*|error|))",
        _exp_loss_term,
        ("exploding_gradients", "nonfinite_loss", "loss_divergence"),
        source="seed 004",
    ),
    Scenario(
        "exp_activation",
        "exp() as the output activation, SGD lr=0.03",
        _exp_activation,
        ("exploding_gradients", "nonfinite_loss", "loss_divergence"),
        source="UMLAUT",
    ),
    Scenario("nan_in_batch", "a NaN in one input batch (batch 60)", _nan_batch, ("nonfinite_loss",), fault_step=60),
    Scenario("deep_sigmoid", "15-layer sigmoid MLP", _deep_sigmoid, ("vanishing_gradients",), source="AUTOTRAINER"),
    Scenario(
        "negative_bias_relu",
        "ReLU biases initialised at -10",
        _negative_bias_relu,
        ("dead_gradients",),
        source="AUTOTRAINER",
    ),
    Scenario(
        "zero_init",
        "all weights initialised to zero",
        _zero_init,
        ("dead_gradients",),
        source="DeepDiagnosis",
    ),
    Scenario(
        "relu_output_negative_targets",
        "final ReLU, targets around -4",
        _relu_output_negative_targets,
        ("dead_gradients",),
        source="seed 002",
    ),
    Scenario(
        "flat_hinge_region",
        "clamp(|error| - 50, 0): a flat region with zero gradient",
        _flat_hinge,
        ("dead_gradients",),
        source="seed 004",
    ),
    Scenario("lr_too_low", "SGD with lr=1e-8", _lr_too_low, ("loss_plateau", "tiny_updates"), source="AUTOTRAINER"),
    Scenario("negated_loss", "training_step returns -cross_entropy", _negated_loss, ("loss_divergence",)),
    Scenario(
        "momentum_oscillation",
        "SGD momentum 0.99 on an ill-conditioned regression",
        _momentum_oscillation,
        ("loss_oscillation",),
        source="TheDeepChecker",
    ),
    Scenario(
        "overfit_finetune",
        "fine-tuning a pre-trained MLP on 24 noisy samples",
        _overfit_finetune,
        ("val_loss_rising",),
        source="seed 001",
    ),
    Scenario(
        "slowing_history",
        "the loss loops over an ever-growing history of outputs",
        _slowing_history,
        ("slowing_loss_step", "memory_growth"),
        source="seed 004",
    ),
    Scenario(
        "expensive_loop",
        "per-sample Python loop with a matmul in the loss",
        _expensive_loop,
        ("expensive_loss",),
        source="seed 004",
    ),
    Scenario(
        "l2_weight_10",
        "an L2 term weighted 10 drowns the MSE",
        _l2_weight_10,
        ("loss_term_imbalance",),
        source="seed 002",
    ),
    Scenario(
        "lr_too_high_adam",
        "Adam with lr=1.0",
        _lr_too_high_adam,
        ("exploding_gradients", "loss_divergence", "loss_oscillation", "dead_gradients", "loss_plateau"),
    ),
    Scenario(
        "nan_gradient_sqrt",
        "sqrt(0) in the loss: finite loss, NaN gradient",
        _nan_gradient_sqrt,
        ("nonfinite_gradients",),
    ),
    Scenario(
        "leaking_graphs",
        "every step keeps a tensor with its graph alive",
        _leaking_graphs,
        ("memory_growth", "slowing_loss_step"),
    ),
    Scenario(
        "saturated_tanh",
        "13-layer tanh MLP with small weights",
        _saturated_tanh,
        ("vanishing_gradients",),
        source="AUTOTRAINER",
    ),
    Scenario(
        "high_lr_finetune",
        "fine-tuning a converged model with SGD lr=0.3, momentum 0.9",
        _high_lr_finetune,
        ("val_loss_rising", "exploding_gradients", "loss_divergence", "loss_oscillation"),
        source="seed 001",
    ),
]


# -- healthy controls ---------------------------------------------------------------------------------------
def _adam_regression() -> Run:
    return Run(
        ZooModule(mlp([16, 64, 64, 1])),
        loader(regression_data()),
        loader(regression_data(n=512, seed=9), 256, False),
        trainer={"max_epochs": 6},
    )


def _noisy_sgd_classification() -> Run:
    return Run(
        ZooModule(mlp([16, 64, 4]), loss=cross_entropy, optimizer=lambda p: torch.optim.SGD(p, lr=0.05)),
        loader(classification_data(spread=2.0), batch_size=4),
        loader(classification_data(n=512, seed=9, spread=2.0), 256, False),
        trainer={"max_steps": 600},
    )


def _converged() -> Run:
    return Run(
        ZooModule(mlp([16, 64, 64, 1]), optimizer=lambda p: torch.optim.Adam(p, lr=3e-3)),
        loader(regression_data(n=512)),
        trainer={"max_steps": 800},
    )


def _warmup_spikes() -> Run:
    def schedule(opt: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * (0.5 if s > 300 else 1.0))

    return Run(
        ZooModule(
            mlp([16, 64, 64, 4]),
            loss=cross_entropy,
            optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            scheduler=schedule,
        ),
        loader(classification_data()),
        trainer={"max_steps": 400},
    )


class _TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 32, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(dim, 4, 64, dropout=0.0, batch_first=True), 2)
        self.head = nn.Linear(dim, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder(self.embed(x)))
        return out


def _transformer() -> Run:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 32, (2048, 12), generator=g)
    y = torch.roll(x, 1, dims=1)  # predict the previous token

    def loss(m: ZooModule, pred: torch.Tensor, target: torch.Tensor, i: int) -> torch.Tensor:
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1))

    return Run(
        ZooModule(_TinyTransformer(), loss=loss, optimizer=lambda p: torch.optim.AdamW(p, lr=2e-3)),
        loader(TensorDataset(x, y)),
        trainer={"max_steps": 300},
    )


def _bf16_mixed() -> Run:
    return Run(
        ZooModule(mlp([16, 64, 64, 4]), loss=cross_entropy),
        loader(classification_data()),
        trainer={"max_steps": 300, "precision": "bf16-mixed"},
    )


def _accumulate_and_clip() -> Run:
    return Run(
        ZooModule(mlp([16, 64, 64, 1]), optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        loader(regression_data(), 16),
        trainer={"max_steps": 150, "accumulate_grad_batches": 4, "gradient_clip_val": 1.0},
    )


def _boring_model() -> Run:
    from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset

    torch.manual_seed(0)
    return Run(
        BoringModel(),
        DataLoader(RandomDataset(32, 64 * 20), batch_size=2),
        DataLoader(RandomDataset(32, 64), batch_size=2),
        trainer={"max_epochs": 1},
    )


def _cnn_batchnorm() -> Run:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (1024,), generator=g)
    x = torch.randn(1024, 1, 12, 12, generator=g) * 0.5
    for k in range(4):
        x[labels == k, 0, 3 * k : 3 * k + 3, :] += 1.0
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 144, 4),
    )
    return Run(ZooModule(net, loss=cross_entropy), loader(TensorDataset(x, labels)), trainer={"max_steps": 200})


def _healthy_finetune() -> Run:
    big = regression_data(n=4096, noise=0.05, seed=1)
    net = mlp([16, 128, 128, 1])

    def pretrain(module: L.LightningModule) -> None:
        opt = torch.optim.Adam(module.parameters(), lr=3e-3)
        for x, y in loader(big, 128):
            opt.zero_grad()
            F.mse_loss(module(x), y).backward()  # type: ignore[no-untyped-call]
            opt.step()

    return Run(
        ZooModule(net, optimizer=lambda p: torch.optim.Adam(p, lr=3e-4)),
        loader(regression_data(n=4096, noise=0.05, seed=7), 64),
        loader(regression_data(n=512, noise=0.05, seed=8), 256, False),
        trainer={"max_epochs": 5},
        pretrain=pretrain,
    )


def _balanced_terms() -> Run:
    def loss(m: ZooModule, pred: torch.Tensor, y: torch.Tensor, i: int) -> dict[str, Any]:
        data = F.mse_loss(pred, y)
        l1 = 1e-3 * sum(p.abs().sum() for p in m.parameters())
        return {"loss": data + l1, "loss_terms": {"mse": data, "l1": l1}}

    return Run(ZooModule(mlp([16, 64, 64, 1]), loss=loss), loader(regression_data()), trainer={"max_steps": 200})


HEALTHY: list[Scenario] = [
    Scenario("adam_regression", "Adam MLP regression with validation", _adam_regression),
    Scenario("noisy_sgd", "small-batch (4) SGD classification", _noisy_sgd_classification),
    Scenario("converged", "a run that converges and keeps training on a flat loss", _converged),
    Scenario("warmup_spikes", "LR warm-up to a high peak, then a step decay", _warmup_spikes),
    Scenario("tiny_transformer", "2-layer Transformer encoder, AdamW", _transformer),
    Scenario("bf16_mixed", "bf16-mixed precision on CPU", _bf16_mixed),
    Scenario("accumulate_and_clip", "accumulate_grad_batches=4 with gradient clipping", _accumulate_and_clip),
    Scenario("boring_model", "Lightning's demo BoringModel", _boring_model, source="Lightning demos"),
    Scenario("cnn_batchnorm", "small CNN with BatchNorm", _cnn_batchnorm),
    Scenario("healthy_finetune", "fine-tuning a pre-trained MLP with a low LR on plenty of data", _healthy_finetune),
    Scenario("balanced_terms", "MSE plus a small L1 term", _balanced_terms),
]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in FAULTS + HEALTHY}


def build(name: str, seed: int = 0) -> Run:
    """Build a scenario's run with a fixed seed (model init and data order)."""
    L.seed_everything(seed, verbose=False)
    run = SCENARIOS[name].build()
    if run.pretrain is not None:
        run.pretrain(run.module)
    return copy.copy(run)
