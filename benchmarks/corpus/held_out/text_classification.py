"""Text classification with a small Transformer encoder, trained in bf16 mixed precision with gradient
accumulation over two batches, AdamW and a linear warm-up/decay schedule (the Hugging Face default)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import sentiment_tokens
from benchmarks.corpus.program import Program, Run


class TransformerClassifier(L.LightningModule):
    """Token and position embeddings, a pre-norm Transformer encoder layer, mean pooling, a linear
    head; AdamW, linear warm-up then linear decay per optimizer step; torchmetrics accuracy."""

    def __init__(
        self, vocab: int = 64, length: int = 12, dim: int = 32, layers: int = 1, lr: float = 4e-3, total: int = 80
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(length, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 2)
        self.val_acc = torchmetrics.Accuracy(task="binary")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tokens(tokens) + self.positions(torch.arange(tokens.size(1)))
        return self.head(self.encoder(h).mean(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, label = batch
        loss = F.cross_entropy(self(tokens), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, label = batch
        logits = self(tokens)
        self.val_acc(logits.argmax(1), label)
        self.log_dict({"val_loss": F.cross_entropy(logits, label), "val_acc": self.val_acc})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        total, warmup = self.hparams.total, self.hparams.total // 10

        def schedule(step: int) -> float:
            return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    total = 80
    return Run(
        TransformerClassifier(total=total),
        loader(sentiment_tokens(1280, length=12, seed=seed), 16, seed=seed),
        loader(sentiment_tokens(512, length=12, seed=seed + 100), 512, shuffle=False),
        trainer={"max_steps": total, "accumulate_grad_batches": 2, "precision": "bf16-mixed"},
    )


PROGRAMS = [
    Program(
        "transformer_bf16_accum_h",
        "text classification",
        "a pre-norm Transformer encoder over token 'reviews', bf16-mixed precision, accumulate_grad_batches=2, "
        "AdamW with linear warm-up and decay per optimizer step, torchmetrics accuracy",
        _build,
        faults=("nan_batch", "lr_x1000", "frozen"),
    )
]
