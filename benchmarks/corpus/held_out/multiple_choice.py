"""Multiple-choice scoring as in SWAG- or ARC-style heads: the question and each of its four candidate answers are
encoded, one score per (question, answer) pair from their interaction, and a cross-entropy over the four scores.
AdamW with linear warm-up and decay per step; validated four times an epoch on 128 questions, a small validation set
read often."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

VOCAB, TOPICS, QUESTION, ANSWER, CHOICES = 64, 8, 12, 6, 4


def _questions(n: int, seed: int = 0) -> TensorDataset:
    """Each topic owns 8 of the 64 tokens. A question's tokens come from its topic 60% of the time; the right answer's
    from the same topic half of the time, each wrong answer's from another topic; the rest are uniform."""
    g = generator(seed)

    def tokens(topic: torch.Tensor, length: int, share: float) -> torch.Tensor:
        own = topic[:, None] * (VOCAB // TOPICS) + torch.randint(0, VOCAB // TOPICS, (len(topic), length), generator=g)
        uniform = torch.randint(0, VOCAB, (len(topic), length), generator=g)
        return torch.where(torch.rand(len(topic), length, generator=g) < share, own, uniform)

    topic = torch.randint(0, TOPICS, (n,), generator=g)
    question = tokens(topic, QUESTION, 0.6)
    label = torch.randint(0, CHOICES, (n,), generator=g)
    answers = []
    for choice in range(CHOICES):
        other = (topic + torch.randint(1, TOPICS, (n,), generator=g)) % TOPICS
        answers.append(tokens(torch.where(label == choice, topic, other), ANSWER, 0.5))
    return TensorDataset(question, torch.stack(answers, 1), label)


class ChoiceScorer(L.LightningModule):
    """A shared embedding + GRU encodes the question and each answer; an MLP scores ``[q, a, q * a]``; AdamW,
    linear warm-up (10%) and decay to zero, stepped every batch."""

    def __init__(self, total_steps: int, width: int = 48) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.embed = nn.Embedding(VOCAB, 32)
        self.encoder = nn.GRU(32, width, batch_first=True)
        self.score = nn.Sequential(nn.Linear(3 * width, width), nn.ReLU(), nn.Linear(width, 1))

    def _encode(self, tokens: torch.Tensor) -> torch.Tensor:
        _, last = self.encoder(self.embed(tokens))
        return last[-1]

    def forward(self, question: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        batch = question.shape[0]
        q = self._encode(question)[:, None].expand(-1, CHOICES, -1)
        a = self._encode(answers.flatten(0, 1)).view(batch, CHOICES, -1)
        return self.score(torch.cat([q, a, q * a], 2)).squeeze(2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        question, answers, label = batch
        loss = F.cross_entropy(self(question, answers), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        question, answers, label = batch
        logits = self(question, answers)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, label), "val_acc": (logits.argmax(1) == label).float().mean()}
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=2e-3, weight_decay=0.01)
        warmup = max(1, self.total_steps // 10)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (self.total_steps - step) / (self.total_steps - warmup))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = loader(_questions(1536, seed=seed), 32, seed=seed)
    epochs = 5
    return Run(
        ChoiceScorer(total_steps=epochs * len(train)),
        train,
        loader(_questions(128, seed=seed + 100), 64, shuffle=False),
        trainer={"max_epochs": epochs, "val_check_interval": 0.25},
    )


PROGRAMS = [
    Program(
        "multiple_choice_h",
        "multiple choice",
        "a GRU scoring each (question, answer) pair of four, cross-entropy over the four scores, AdamW with linear "
        "warm-up and decay per step, validated four times an epoch on 128 questions",
        _build,
        faults=("lr_x1000", "flipped_sign", "nan_batch"),
    )
]
