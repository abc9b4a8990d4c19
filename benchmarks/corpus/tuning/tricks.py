"""Trainer and module tricks that change what a step looks like: gradient accumulation, bf16 autocast on CPU,
and a module that freezes its own first block mid-run while keeping zeroed (not None) gradients."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, regression
from benchmarks.corpus.program import Program, Run
from benchmarks.corpus.tuning.shared import bag_of_tokens


# -- gradient accumulation ------------------------------------------------------------------------------
class BagOfEmbeddings(L.LightningModule):
    """The torchtext text-classification tutorial's model: EmbeddingBag (mean) + Linear, uniform(-0.5, 0.5) init,
    SGD lr 5 with a per-epoch StepLR; gradient clipping 0.1 and ``accumulate_grad_batches=4`` on the Trainer."""

    def __init__(self, vocab: int = 200, dim: int = 32, classes: int = 4, lr: float = 5.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.fc = nn.Linear(dim, classes)
        nn.init.uniform_(self.embedding.weight, -0.5, 0.5)
        nn.init.uniform_(self.fc.weight, -0.5, 0.5)
        nn.init.zeros_(self.fc.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(tokens))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, labels = batch
        loss = F.cross_entropy(self(tokens), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, labels = batch
        logits = self(tokens)
        accuracy = (logits.argmax(1) == labels).float().mean()
        self.log_dict({"val_loss": F.cross_entropy(logits, labels), "val_acc": accuracy})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)]


def _accumulate(seed: int) -> Run:
    # 2,000 samples: 125 batches an epoch, which 4 does not divide (as real dataset sizes rarely do), so each
    # epoch ends on a partial accumulation window and the next one's windows start afresh.
    return Run(
        BagOfEmbeddings(),
        loader(bag_of_tokens(2000, seed=seed), 16, seed=seed),
        loader(bag_of_tokens(512, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 3, "accumulate_grad_batches": 4, "gradient_clip_val": 0.1},
    )


# -- bf16 autocast on CPU -------------------------------------------------------------------------------
class ResidualMLP(nn.Module):
    """Pre-norm residual MLP blocks (LayerNorm, Linear, GELU, Linear), the tabular-transformer style."""

    def __init__(self, dim: int = 16, width: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class BF16Regressor(L.LightningModule):
    """A residual MLP regressor trained with ``precision="bf16-mixed"`` on CPU, AdamW, cosine annealing."""

    def __init__(self, lr: float = 2e-3, epochs: int = 6) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = ResidualMLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        pred = self(x).float()
        loss = F.mse_loss(pred, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return {"loss": loss, "preds": pred, "target": y}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x).float(), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.epochs)]


def _bf16(seed: int) -> Run:
    return Run(
        BF16Regressor(),
        loader(regression(2048, noise=0.2, seed=seed), 64, seed=seed),
        loader(regression(512, noise=0.2, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 6, "precision": "bf16-mixed"},
    )


# -- freezing a block mid-run -------------------------------------------------------------------------------
class FreezingTanhNet(L.LightningModule):
    """A deep Tanh MLP regressor whose module freezes its first block at epoch 2 (``requires_grad_(False)``)
    and overrides ``optimizer_zero_grad`` to zero gradients in place (``set_to_none=False``), so the frozen
    weights keep all-zero gradient tensors; SGD with momentum."""

    def __init__(self, dim: int = 16, width: int = 48, depth: int = 4, lr: float = 0.05, freeze_at: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Sequential(nn.Linear(dim if i == 0 else width, width), nn.Tanh()))
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == self.hparams.freeze_at:
            self.blocks[0].requires_grad_(False)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=False)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        pred = self(x)
        loss = F.mse_loss(pred, y)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": pred, "target": y}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def _freezing(seed: int) -> Run:
    return Run(
        FreezingTanhNet(),
        loader(regression(1536, noise=0.1, seed=seed), 32, seed=seed),
        loader(regression(512, noise=0.1, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "grad_accumulation_text",
        "text classification",
        "torchtext-tutorial EmbeddingBag classifier, SGD lr 5 + StepLR, clipping 0.1, accumulate_grad_batches=4",
        _accumulate,
        faults=("flipped_sign", "lr_div_1e6", "frozen"),
    ),
    Program(
        "bf16_mixed_cpu",
        "tabular regression",
        "a pre-norm residual MLP regressor with precision='bf16-mixed' on CPU, AdamW and per-epoch cosine annealing",
        _bf16,
        faults=("exp_output", "nan_batch", "flipped_sign"),
        output_module="model",
        output_monitor=True,
    ),
    Program(
        "freeze_block_mid_run",
        "tabular regression",
        "a deep Tanh MLP that freezes its first block at epoch 2 itself, zero_grad(set_to_none=False), SGD momentum",
        _freezing,
        faults=("no_zero_grad", "exp_output", "lr_x1000"),
        output_module="head",
        output_monitor=True,
    ),
]
