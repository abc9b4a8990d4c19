"""Language models: the LSTM of PyTorch's word_language_model example and a small GPT-style Transformer."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from benchmarks.corpus.data import loader, markov_tokens
from benchmarks.corpus.program import Program, Run

VOCAB = 64


# -- LSTM word language model ---------------------------------------------------------------------------
class BPTTStream(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One token stream cut into ``columns`` parallel streams, served as consecutive ``bptt``-long chunks.

    Item ``i`` is ``(input [columns, bptt], target [columns, bptt])``: the word_language_model's ``batchify``
    and ``get_batch``, so the hidden state can be carried from one batch to the next.
    """

    def __init__(self, tokens: torch.Tensor, columns: int, bptt: int) -> None:
        rows = len(tokens) // columns
        self.data = tokens[: rows * columns].view(columns, rows)
        self.bptt = bptt

    def __len__(self) -> int:
        return (self.data.shape[1] - 1) // self.bptt

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = i * self.bptt
        return self.data[:, start : start + self.bptt], self.data[:, start + 1 : start + 1 + self.bptt]


def _stream(n: int, seed: int) -> torch.Tensor:
    (sequences,) = markov_tokens(n, length=32, vocab=VOCAB, seed=seed).tensors
    return sequences.reshape(-1)


class LSTMLanguageModel(L.LightningModule):
    """Embedding - 2-layer LSTM - Linear with dropout and uniform(-0.1, 0.1) init; plain SGD at lr 20 with
    gradient clipping 0.25 (set on the Trainer); hidden state carried across batches and detached
    (truncated BPTT); lr divided by 4 whenever validation loss stops improving."""

    def __init__(
        self, emb: int = 32, hidden: int = 64, layers: int = 2, dropout: float = 0.2, lr: float = 20.0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(VOCAB, emb)
        self.rnn = nn.LSTM(emb, hidden, layers, dropout=dropout, batch_first=True)
        self.decoder = nn.Linear(hidden, VOCAB)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        self.hidden: tuple[torch.Tensor, torch.Tensor] | None = None
        self.val_hidden: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(
        self, tokens: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        return self.decoder(self.drop(out)), hidden

    def on_train_epoch_start(self) -> None:
        self.hidden = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, targets = batch
        if self.hidden is not None:  # repackage_hidden: keep the values, cut the graph
            self.hidden = (self.hidden[0].detach(), self.hidden[1].detach())
        logits, self.hidden = self(tokens, self.hidden)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        self.log("train_loss", loss)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_hidden = None

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, targets = batch
        logits, self.val_hidden = self(tokens, self.val_hidden)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        self.log("val_loss", loss)
        self.log("val_ppl", loss.exp())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.25, patience=0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def _lstm(seed: int) -> Run:
    return Run(
        LSTMLanguageModel(),
        DataLoader(BPTTStream(_stream(560, seed), columns=20, bptt=16), batch_size=None),
        DataLoader(BPTTStream(_stream(64, seed + 100), columns=32, bptt=16), batch_size=None),
        trainer={"max_epochs": 3, "gradient_clip_val": 0.25},
    )


# -- Transformer decoder LM ---------------------------------------------------------------------------------
class TinyGPT(nn.Module):
    """Token + learned position embeddings, pre-norm causal Transformer layers, final LayerNorm, linear head."""

    def __init__(self, length: int = 16, dim: int = 32, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, dim)
        self.positions = nn.Embedding(length, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.1, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.tokens(tokens) + self.positions(torch.arange(t, device=tokens.device))
        x = self.blocks(x, mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(x))


class TransformerLM(L.LightningModule):
    """nanoGPT-style recipe: AdamW (0.9, 0.95) with weight decay on matrices only, linear warm-up then cosine
    decay to 10% as a per-step LambdaLR, gradient clipping 1.0 on the Trainer."""

    def __init__(self, lr: float = 3e-3, warmup: int = 11, max_steps: int = 112) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = TinyGPT()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def _loss(self, batch: Any) -> torch.Tensor:
        (sequence,) = batch
        logits = self(sequence[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB), sequence[:, 1:].reshape(-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=True)

    def configure_optimizers(self) -> Any:
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
            betas=(0.9, 0.95),
        )
        warmup, total = self.hparams.warmup, self.hparams.max_steps

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _gpt(seed: int) -> Run:
    return Run(
        TransformerLM(),
        loader(markov_tokens(448, length=16, vocab=VOCAB, seed=seed), 16, seed=seed),
        loader(markov_tokens(128, length=16, vocab=VOCAB, seed=seed + 100), 128, shuffle=False),
        trainer={"max_steps": 112, "gradient_clip_val": 1.0},
    )


PROGRAMS = [
    Program(
        "lstm_word_lm",
        "language model",
        "PyTorch's word_language_model: 2-layer LSTM, SGD lr 20, gradient clipping 0.25, hidden state carried "
        "across consecutive BPTT chunks, lr / 4 when validation loss stalls",
        _lstm,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6"),
    ),
    Program(
        "transformer_lm",
        "language model",
        "a small pre-norm causal Transformer, AdamW with decay on matrices only, linear warm-up then cosine "
        "decay per step (LambdaLR), gradient clipping 1.0",
        _gpt,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    ),
]
