"""An encoder-decoder Transformer trained with Adafactor, as T5-style sequence-to-sequence code is: ``nn.Transformer``
learns to sort digit sequences of 4-12 tokens, padded within the batch. The decoder is teacher-forced under a causal
mask, both sides carry key-padding masks, and the cross-entropy ignores the padding and smooths its labels by 0.1.
``torch.optim.Adafactor`` at its default relative step (updates scaled by each parameter's RMS, decaying as
1/sqrt(step)), no schedule; validation logs the loss and the token accuracy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

PAD, BOS, EOS = 0, 1, 2
DIGITS = 10
VOCAB = 3 + DIGITS
LONGEST = 12


def sorting_pairs(n: int, seed: int) -> TensorDataset:
    """``(source [n, LONGEST + 1], target [n, LONGEST + 2])``: digits of a random length 4-12 then EOS, and BOS, the
    same digits sorted, EOS; PAD after."""
    g = generator(seed)
    source = torch.full((n, LONGEST + 1), PAD, dtype=torch.long)
    target = torch.full((n, LONGEST + 2), PAD, dtype=torch.long)
    lengths = torch.randint(4, LONGEST + 1, (n,), generator=g)
    digits = torch.randint(0, DIGITS, (n, LONGEST), generator=g) + 3
    for i, length in enumerate(lengths.tolist()):
        row = digits[i, :length]
        source[i, :length], source[i, length] = row, EOS
        target[i, 0], target[i, 1 : length + 1], target[i, length + 1] = BOS, row.sort().values, EOS
    return TensorDataset(source, target)


class SortingTransformer(L.LightningModule):
    def __init__(self, width: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, width, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(LONGEST + 2, width) * 0.02)
        self.transformer = nn.Transformer(
            width, heads, layers, layers, dim_feedforward=2 * width, dropout=0.1, batch_first=True, norm_first=True
        )
        self.head = nn.Linear(width, VOCAB)

    def _tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens) + self.position[: tokens.shape[1]]

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(target_in.shape[1], device=source.device)
        hidden = self.transformer(
            self._tokens(source),
            self._tokens(target_in),
            tgt_mask=causal,
            src_key_padding_mask=source == PAD,
            tgt_key_padding_mask=target_in == PAD,
            memory_key_padding_mask=source == PAD,
            tgt_is_causal=True,
        )
        return self.head(hidden)

    def _loss(self, batch: Any, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        source, target = batch
        logits = self(source, target[:, :-1])
        wanted = target[:, 1:]
        loss = F.cross_entropy(logits.transpose(1, 2), wanted, ignore_index=PAD, label_smoothing=smoothing)
        real = wanted != PAD
        accuracy = (logits.argmax(-1) == wanted)[real].float().mean()
        return loss, accuracy

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch, smoothing=0.1)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, accuracy = self._loss(batch, smoothing=0.0)
        self.log_dict({"val_loss": loss, "val_token_acc": accuracy})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adafactor(self.parameters())


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        SortingTransformer(),
        loader(sorting_pairs(2048, seed), batch_size=64, seed=seed),
        loader(sorting_pairs(512, seed + 100), batch_size=256, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "adafactor_sorting_transformer_h",
        "sequence to sequence",
        "an encoder-decoder nn.Transformer sorting padded digit sequences, teacher forcing under a causal mask, "
        "key-padding masks, label smoothing with ignore_index, torch.optim.Adafactor at its default relative step",
        _build,
        faults=("lr_div_1e6", "frozen", "flipped_sign"),
    )
]
