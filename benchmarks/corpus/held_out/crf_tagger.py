"""A BiLSTM-CRF sequence tagger, as named-entity taggers train it: word embeddings, a bidirectional LSTM, a linear
layer to per-tag emission scores and a linear-chain CRF on top, trained on the negative log likelihood of the gold tag
path (the forward algorithm's log partition minus the path's score, summed over each sentence and averaged over the
batch) and decoded with Viterbi. Sentences of 6-20 tokens padded to the batch's longest, with a mask. SGD with
momentum 0.9 at 0.01, the gradient norm clipped at 5, the learning rate decayed each epoch (the classic NER recipe).

The task: BIO tags over entity spans. Entity words (ids 1-14) are always inside a span; ambiguous words (15-19) are
the span's first word only right after a trigger word (20), and "O" elsewhere; the rest are plain words. So the tag
of an ambiguous word depends on the word before it, and an "I" can only follow a "B" or an "I": what the CRF's
transitions learn. 4% of the training tags are annotators' slips (a random tag); validation is clean."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

VOCAB, TAGS = 60, 3  # tags: O, B, I
OUTSIDE, BEGIN, INSIDE = 0, 1, 2
ENTITY, AMBIGUOUS, TRIGGER = range(1, 15), range(15, 20), 20


class Sentences(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Seeded sentences of words and their BIO tags (lists of different lengths: the loader pads them)."""

    def __init__(self, n: int, seed: int, noise: float = 0.0) -> None:
        g = generator(seed)
        self.items: list[tuple[torch.Tensor, torch.Tensor]] = []
        for _ in range(n):
            length = int(torch.randint(6, 21, (1,), generator=g))
            words: list[int] = []
            while len(words) < length:
                choice = float(torch.rand(1, generator=g))
                if choice < 0.25:  # an entity span of 1-3 words
                    span = int(torch.randint(1, 4, (1,), generator=g))
                    words += torch.randint(ENTITY.start, ENTITY.stop, (span,), generator=g).tolist()
                elif choice < 0.35:  # a trigger, then an ambiguous word that starts a span
                    words += [TRIGGER, int(torch.randint(AMBIGUOUS.start, AMBIGUOUS.stop, (1,), generator=g))]
                elif choice < 0.45:  # an ambiguous word on its own: outside any span
                    words.append(int(torch.randint(AMBIGUOUS.start, AMBIGUOUS.stop, (1,), generator=g)))
                else:
                    words.append(int(torch.randint(TRIGGER + 1, VOCAB, (1,), generator=g)))
            words = words[:length]
            tags = torch.tensor(_tags(words))
            slips = torch.rand(length, generator=g) < noise  # annotators' slips: a random tag
            tags[slips] = torch.randint(0, TAGS, (int(slips.sum()),), generator=g)
            self.items.append((torch.tensor(words), tags))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[index]


def _tags(words: list[int]) -> list[int]:
    tags: list[int] = []
    for i, word in enumerate(words):
        previous = words[i - 1] if i else 0
        starts = word in AMBIGUOUS and previous == TRIGGER
        if word in ENTITY or starts:
            inside = bool(tags) and tags[-1] != OUTSIDE and not starts
            tags.append(INSIDE if inside else BEGIN)
        else:
            tags.append(OUTSIDE)
    return tags


def pad(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    words = pad_sequence([w for w, _ in batch], batch_first=True)
    tags = pad_sequence([t for _, t in batch], batch_first=True)
    mask = pad_sequence([torch.ones(len(w), dtype=torch.bool) for w, _ in batch], batch_first=True)
    return words, tags, mask


class LinearChainCRF(nn.Module):
    """Transition scores between tags, start and end scores; the NLL by the forward algorithm, Viterbi decoding."""

    def __init__(self, tags: int) -> None:
        super().__init__()
        self.transitions = nn.Parameter(torch.empty(tags, tags).uniform_(-0.1, 0.1))  # [from, to]
        self.start = nn.Parameter(torch.empty(tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(tags).uniform_(-0.1, 0.1))

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per sentence: log Z - score(gold path); ``emissions [batch, length, tags]``."""
        return self._log_partition(emissions, mask) - self._score(emissions, tags, mask)

    def _score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gold = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)
        moves = self.transitions[tags[:, :-1], tags[:, 1:]]
        score = self.start[tags[:, 0]] + (gold * mask).sum(1) + (moves * mask[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)
        return score + self.end[last]

    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = self.start + emissions[:, 0]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        score = self.start + emissions[:, 0]
        back = []
        for t in range(1, emissions.shape[1]):
            best, index = (score.unsqueeze(2) + self.transitions).max(dim=1)
            back.append(index)
            score = torch.where(mask[:, t].unsqueeze(1), best + emissions[:, t], score)
        score = score + self.end
        path = [score.argmax(1)]
        for t in range(len(back) - 1, -1, -1):
            previous = back[t].gather(1, path[-1].unsqueeze(1)).squeeze(1)
            path.append(torch.where(mask[:, t + 1], previous, path[-1]))
        return torch.stack(path[::-1], dim=1)


class BiLSTMCRF(L.LightningModule):
    def __init__(self, embed: int = 32, hidden: int = 48) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(0.3)
        self.emissions = nn.Linear(2 * hidden, TAGS)
        self.crf = LinearChainCRF(TAGS)

    def _emit(self, words: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.dropout(self.embedding(words)))
        return self.emissions(self.dropout(hidden))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        words, tags, mask = batch
        loss = self.crf.nll(self._emit(words), tags, mask).mean()
        self.log("train_nll", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        words, tags, mask = batch
        emissions = self._emit(words)
        predicted = self.crf.decode(emissions, mask)
        accuracy = ((predicted == tags) & mask).sum() / mask.sum()
        self.log_dict({"val_loss": self.crf.nll(emissions, tags, mask).mean(), "val_tag_accuracy": accuracy})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1 / (1 + 0.05 * epoch))]


def _build(seed: int) -> Run:
    return Run(
        BiLSTMCRF(),
        loader(Sentences(1600, seed, noise=0.04), 16, seed=seed, collate_fn=pad),
        loader(Sentences(400, seed + 100), 100, shuffle=False, collate_fn=pad),
        trainer={"max_epochs": 6, "gradient_clip_val": 5.0},
    )


PROGRAMS = [
    Program(
        "bilstm_crf_tagger_h",
        "sequence labelling",
        "a BiLSTM with a linear-chain CRF on its emissions trained on the gold path's negative log likelihood (the "
        "forward algorithm over padded, masked sentences), Viterbi-decoded; SGD with momentum, clipping at 5, an "
        "epoch-wise decay",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
