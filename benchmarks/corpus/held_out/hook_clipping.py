"""A small Transformer language model ported from a plain PyTorch loop: it clips its gradients itself in the
module's ``on_before_optimizer_step`` with ``torch.nn.utils.clip_grad_norm_`` (not ``Trainer(gradient_clip_val)``)
and logs the norm that call returns, as code moved over from a hand-written loop does. Pre-norm encoder layers with
a causal mask, tied embeddings, AdamW with a per-step linear warm-up then cosine decay."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, markov_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, WIDTH, EPOCHS, BATCH = 48, 24, 64, 4, 32


class HookClippedLM(L.LightningModule):
    def __init__(self, steps: int, lr: float = 3e-3, warmup: int = 40, max_norm: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        nn.init.normal_(self.embed.weight, std=0.02)  # GPT-style: the tied projection starts near uniform
        self.position = nn.Parameter(torch.randn(LENGTH, WIDTH) * 0.02)
        layer = nn.TransformerEncoderLayer(WIDTH, 4, 2 * WIDTH, dropout=0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(LENGTH), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        h = self.norm(self.encoder(h, mask=self.causal, is_causal=True))
        return h @ self.embed.weight.T  # tied output projection

    def _loss(self, batch: Any) -> torch.Tensor:
        (seq,) = batch
        logits = self(seq[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB), seq[:, 1:].reshape(-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.hparams.max_norm)
        self.log("grad_norm", norm)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        steps, warmup = self.hparams.steps, self.hparams.warmup

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    train = loader(markov_tokens(1536, length=LENGTH, vocab=VOCAB, seed=seed), BATCH, seed=seed)
    return Run(
        HookClippedLM(steps=len(train) * EPOCHS),
        train,
        loader(markov_tokens(256, length=LENGTH, vocab=VOCAB, seed=seed + 100), 128, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "hook_clipped_transformer_lm_h",
        "language model",
        "a causal Transformer LM that clips its own gradients with clip_grad_norm_ in on_before_optimizer_step and "
        "logs the returned norm, tied embeddings, AdamW with per-step warm-up and cosine decay",
        _build,
        faults=("lr_x1000", "no_zero_grad", "frozen"),
    )
]
