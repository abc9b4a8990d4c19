"""A Transformer encoder with ReZero residuals: no LayerNorm, each sublayer's output multiplied by a learned scalar that
starts at zero, so every layer starts as the identity and the embedding alone reaches the classifier. It tells which
of two Markov chains wrote a token sequence (mean-pooled). SGD with Nesterov momentum, a linear warm-up, then a
plateau-driven decay on the validation loss (``ReduceLROnPlateau``, per epoch)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import loader, markov_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, WIDTH, HEADS, LAYERS, EPOCHS, BATCH, SAMPLES = 32, 24, 64, 4, 3, 6, 64, 2048


def _two_chains(n: int, seed: int) -> TensorDataset:
    """Half the sequences from one chain, half from another (label 0 or 1), shuffled together."""
    first = markov_tokens(n // 2, LENGTH, VOCAB, seed=seed, task_seed=21).tensors[0]
    second = markov_tokens(n - n // 2, LENGTH, VOCAB, seed=seed + 1, task_seed=22).tensors[0]
    tokens = torch.cat([first, second])[:, :LENGTH]
    labels = torch.cat([torch.zeros(len(first)), torch.ones(len(second))]).long()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(tokens[order], labels[order])


class ReZeroLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.ReLU(), nn.Linear(2 * WIDTH, WIDTH))
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.alpha * self.attention(x, x, x, need_weights=False)[0]
        return x + self.alpha * self.feed_forward(x)


class ReZeroClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.05, warmup: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Parameter(torch.randn(1, LENGTH, WIDTH) * 0.1)
        self.layers = nn.Sequential(*[ReZeroLayer() for _ in range(LAYERS)])
        self.classifier = nn.Linear(WIDTH, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.embedding(tokens) + self.position)
        return self.classifier(h.mean(dim=1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, label = batch
        loss = F.cross_entropy(self(tokens), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, label = batch
        logits = self(tokens)
        self.log("val_loss", F.cross_entropy(logits, label))
        self.log("val_acc", (logits.argmax(1) == label).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1),
                "monitor": "val_loss",
                "interval": "epoch",
            },
        }

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        # The warm-up scales the rate by hand before the plateau schedule takes over (a common recipe).
        if self.trainer.global_step < self.hparams.warmup:
            for group in optimizer.param_groups:
                group["lr"] = self.hparams.lr * (self.trainer.global_step + 1) / self.hparams.warmup
        optimizer.step(closure=optimizer_closure)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        ReZeroClassifier(),
        loader(_two_chains(SAMPLES, seed), BATCH, seed=seed),
        loader(_two_chains(512, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "rezero_sgd_encoder_h",
        "sequence classification",
        "a Transformer encoder with ReZero residuals (no LayerNorm, a zero-initialised scalar per layer) telling two "
        "Markov chains apart; SGD Nesterov, warm-up by hand in optimizer_step, ReduceLROnPlateau on val_loss",
        _build,
        # Not the learning-rate faults: the warm-up sets every group's rate from hparams.lr, which they do not reach.
        faults=("flipped_sign", "no_zero_grad", "nan_batch"),
    )
]
