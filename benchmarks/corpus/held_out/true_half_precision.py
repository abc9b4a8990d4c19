"""A small causal Transformer language model trained in true bfloat16 (``Trainer(precision="bf16-true")``), as
memory-bound fine-tuning code does: parameters, activations, gradients, the optimizer's state and the loss are all
bfloat16, so the loss moves in steps of its 8-bit mantissa and an update below a weight's resolution is lost. AdamW
with a linear warm-up then constant rate, weight tying between the embedding and the output layer."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, markov_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, WIDTH, EPOCHS, BATCH, WARMUP = 48, 24, 64, 4, 32, 40


class Bf16LanguageModel(L.LightningModule):
    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Parameter(torch.randn(LENGTH, WIDTH) * 0.02)
        layer = nn.TransformerEncoderLayer(WIDTH, 4, 4 * WIDTH, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(LENGTH), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        h = self.blocks(h, mask=self.causal.to(h.dtype), is_causal=True)
        return self.norm(h) @ self.embed.weight.T

    def _loss(self, batch: Any) -> torch.Tensor:
        (seq,) = batch
        logits = self(seq[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB), seq[:, 1:].reshape(-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


def _build(seed: int) -> Run:
    return Run(
        Bf16LanguageModel(),
        loader(markov_tokens(2048, length=LENGTH, vocab=VOCAB, seed=seed), BATCH, seed=seed),
        loader(markov_tokens(512, length=LENGTH, vocab=VOCAB, seed=seed + 100), 128, shuffle=False),
        trainer={"max_epochs": EPOCHS, "precision": "bf16-true"},
    )


PROGRAMS = [
    Program(
        "bf16_true_lm_h",
        "language model",
        "a causal Transformer LM under Trainer(precision='bf16-true'): bfloat16 parameters, gradients, optimizer "
        "state and loss; AdamW with a linear warm-up, tied embedding and output weights",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "flipped_sign"),
    )
]
