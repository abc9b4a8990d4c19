"""Kim (2014)'s CNN for sentence classification, written against the standalone ``pytorch_lightning`` package: word
embeddings, convolutions of widths 3, 4 and 5 (32 maps each), max-over-time pooling, dropout 0.5 and a linear
classifier, trained with Adadelta (lr 1.0, rho 0.95) and the paper's max-norm constraint: after every optimizer
step the classifier's weight rows are rescaled to an L2 norm of at most 3 (outside the optimizer, in
``on_train_batch_end``), as the paper's code does."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import sentiment_tokens
from benchmarks.corpus.program import Program, Run

VOCAB, LENGTH, EMBED, MAPS, MAX_NORM = 64, 24, 48, 32, 3.0


class SentenceCNN(pl.LightningModule):
    def __init__(self, lr: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.Embedding(VOCAB, EMBED)
        self.convs = nn.ModuleList(nn.Conv1d(EMBED, MAPS, width) for width in (3, 4, 5))
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(3 * MAPS, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens).transpose(1, 2)
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.convs]
        return self.classifier(self.dropout(torch.cat(pooled, dim=1)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, label = batch
        loss = F.cross_entropy(self(tokens), label)
        self.log("train_loss", loss)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():  # the max-norm constraint on the classifier's rows
            weight = self.classifier.weight
            weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=MAX_NORM))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, label = batch
        logits = self(tokens)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, label), "val_acc": (logits.argmax(1) == label).float().mean()}
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adadelta(self.parameters(), lr=self.hparams.lr, rho=0.95, eps=1e-6)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        SentenceCNN(),
        loader(sentiment_tokens(4000, length=LENGTH, vocab=VOCAB, seed=seed), 50, seed=seed),
        loader(sentiment_tokens(1000, length=LENGTH, vocab=VOCAB, seed=seed + 100), 500, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "kim_sentence_cnn_h",
        "text classification",
        "Kim's sentence CNN (pytorch_lightning): embeddings, convolutions of widths 3-5 with max-over-time pooling, "
        "dropout 0.5, Adadelta at lr 1.0 and the max-norm 3 constraint on the classifier rows after each step",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign", "no_zero_grad"),
    )
]
