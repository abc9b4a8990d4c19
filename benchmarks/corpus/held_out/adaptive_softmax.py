"""A word-level language model over a Zipfian vocabulary with an adaptive softmax (``nn.AdaptiveLogSoftmaxWithLoss``,
the Grave et al. head of large-vocabulary LMs): frequent words in a full-width head, rarer ones in two tail clusters
with narrower projections, so the output layer is not logits but a module that takes the targets and returns the
loss. The tail clusters' weights get a gradient only from batches whose targets fall in them, and the rarest words
reach them a few times an epoch. A GRU, Adam, and the learning rate halved when the validation loss stalls
(``ReduceLROnPlateau`` on ``val_loss``)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

VOCAB, CUTOFFS, LENGTH, CONTEXTS, EPOCHS, BATCH = 2000, [64, 512], 24, 16, 4, 32


def _zipf_text(n: int, seed: int, task_seed: int = 29) -> TensorDataset:
    """``(tokens [n, LENGTH + 1])``: each next word drawn from a Zipf law (exponent 1.1) over the vocabulary in one of
    ``CONTEXTS`` orders, chosen by the previous word; the frequent words are shared by every order (they shift by a
    few ranks) so the marginal stays Zipfian and the head's cutoffs keep their meaning."""
    g = generator(task_seed)
    ranks = torch.arange(1, VOCAB + 1, dtype=torch.float64)
    zipf = ranks.pow(-1.1) / ranks.pow(-1.1).sum()
    noise = torch.rand(CONTEXTS, VOCAB, generator=g, dtype=torch.float64) * 40
    orders = (ranks.unsqueeze(0) + noise).argsort(dim=1)  # context c's k-th most likely word: orders[c, k]
    s = generator(seed)
    words = torch.empty(n, LENGTH + 1, dtype=torch.long)
    words[:, 0] = torch.multinomial(zipf, n, replacement=True, generator=s)
    for t in range(1, LENGTH + 1):
        rank = torch.multinomial(zipf, n, replacement=True, generator=s)
        words[:, t] = orders[words[:, t - 1] % CONTEXTS, rank]
    return TensorDataset(words)


class AdaptiveSoftmaxLM(L.LightningModule):
    def __init__(self, lr: float = 3e-3, width: int = 128) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB, 64)
        self.rnn = nn.GRU(64, width, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.head = nn.AdaptiveLogSoftmaxWithLoss(width, VOCAB, cutoffs=CUTOFFS, div_value=4.0)

    def _loss(self, batch: Any) -> torch.Tensor:
        (words,) = batch
        hidden, _ = self.rnn(self.embed(words[:, :-1]))
        return self.head(self.drop(hidden).reshape(-1, hidden.shape[-1]), words[:, 1:].reshape(-1)).loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "monitor": "val_loss"}}


def _build(seed: int) -> Run:
    return Run(
        AdaptiveSoftmaxLM(),
        loader(_zipf_text(1536, seed), BATCH, seed=seed),
        loader(_zipf_text(256, seed + 100), 128, shuffle=False),
        trainer={"max_epochs": EPOCHS, "gradient_clip_val": 0.5},
    )


PROGRAMS = [
    Program(
        "adaptive_softmax_lm_h",
        "language model",
        "a GRU word LM over a 2,000-word Zipfian vocabulary with an adaptive softmax head (a frequent-word head and "
        "two narrower tail clusters that take the targets and return the loss), Adam, ReduceLROnPlateau on val_loss",
        _build,
        faults=("lr_x1000", "flipped_sign", "no_zero_grad"),
    )
]
