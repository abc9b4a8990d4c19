"""A topic classifier over bags of words whose embeddings are kept within a norm, as older fastText-style and
recommender code does: ``nn.Embedding(max_norm=1.0)`` renormalises every looked-up row in place during the forward
pass (outside the optimizer), a padding index, masked mean pooling, a small MLP over four topics. Words follow a Zipf
law, each topic raising the odds of its own words. NAdam with a linear ``PolynomialLR`` decay per epoch, batches of
64; validation logs the loss and the accuracy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

WORDS = 3000
TOPICS = 4
LONGEST = 40
EPOCHS = 10


def topic_documents(n: int, seed: int, task_seed: int = 31) -> TensorDataset:
    """``(words [n, LONGEST], topic [n])``: 10-40 words (index 0 pads), drawn from a Zipf law over the vocabulary in
    which each topic's 200 words are six times as likely."""
    g_task = generator(task_seed)
    zipf = 1.0 / torch.arange(1, WORDS, dtype=torch.float)
    zipf = zipf[torch.randperm(WORDS - 1, generator=g_task)]
    odds = zipf.repeat(TOPICS, 1)
    for topic in range(TOPICS):
        odds[topic, torch.randint(0, WORDS - 1, (200,), generator=g_task)] *= 6.0
    g = generator(seed)
    topics = torch.randint(0, TOPICS, (n,), generator=g)
    lengths = torch.randint(10, LONGEST + 1, (n,), generator=g)
    words = torch.multinomial(odds[topics], LONGEST, replacement=True, generator=g) + 1
    words[torch.arange(LONGEST) >= lengths.unsqueeze(1)] = 0
    return TensorDataset(words, topics)


class MaxNormBagOfWords(L.LightningModule):
    def __init__(self, width: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(WORDS, width, padding_idx=0, max_norm=1.0)
        self.classify = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, TOPICS))

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        present = (words != 0).unsqueeze(2).float()
        pooled = (self.embed(words) * present).sum(1) / present.sum(1).clamp(min=1.0)
        return self.classify(pooled)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        words, topics = batch
        loss = F.cross_entropy(self(words), topics)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        words, topics = batch
        logits = self(words)
        accuracy = (logits.argmax(1) == topics).float().mean()
        self.log_dict({"val_loss": F.cross_entropy(logits, topics), "val_acc": accuracy})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.NAdam(self.parameters(), lr=2e-3)
        decay = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=EPOCHS, power=1.0)
        return {"optimizer": optimizer, "lr_scheduler": decay}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        MaxNormBagOfWords(),
        loader(topic_documents(2048, seed), batch_size=64, seed=seed),
        loader(topic_documents(1024, seed + 100), batch_size=512, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "max_norm_bag_of_words_h",
        "text classification",
        "mean-pooled word embeddings kept within a norm (nn.Embedding(max_norm=1.0) renormalises looked-up rows "
        "in place), a padding index, an MLP over four topics, NAdam with a linear PolynomialLR decay",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "nan_batch"),
    )
]
