"""LayerDrop (Fan et al.): each training batch skips every transformer layer with probability ``p``, so a skipped
layer's parameters get no gradient on that step (``grad`` stays None), and the network trains as an ensemble of
its shallower versions; validation runs every layer."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader, markov_tokens
from benchmarks.corpus.program import Program, Run


class LayerDropClassifier(L.LightningModule):
    """Token sequences classified by the Markov chain's first token class: an embedding, four pre-norm encoder
    layers each skipped at random (p = 0.3) in training, mean pooling, a linear head; AdamW with warm-up."""

    def __init__(self, vocab: int = 32, width: int = 48, layers: int = 4, drop: float = 0.3, classes: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.1, batch_first=True, norm_first=True)
            for _ in range(layers)
        )
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for layer in self.layers:
            if self.training and torch.rand(()) < self.hparams.drop:
                continue
            h = layer(h)
        return self.head(h.mean(1))

    def _batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        (tokens,) = batch
        # The label: how many times the most frequent quarter of the vocabulary occurs, in four bins.
        count = (tokens < self.hparams.vocab // 4).sum(1)
        return tokens, torch.bucketize(count, torch.tensor([5, 8, 11]))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, labels = self._batch(batch)
        loss = F.cross_entropy(self(tokens), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, labels = self._batch(batch)
        logits = self(tokens)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, labels), "val_acc": (logits.argmax(1) == labels).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.01)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


def _build(seed: int) -> Run:
    vocab = 32
    return Run(
        LayerDropClassifier(vocab=vocab),
        loader(markov_tokens(1536, length=31, vocab=vocab, seed=seed), 32, seed=seed),
        loader(markov_tokens(384, length=31, vocab=vocab, seed=seed + 100), 384, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "layerdrop_transformer_h",
        "sequence classification",
        "a four-layer transformer encoder whose layers are each skipped with probability 0.3 on every training "
        "batch (LayerDrop: a skipped layer's gradient stays None), AdamW with warm-up",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
