"""Synthetic data that stands in for downloads: learnable, seeded, small enough for CPU seconds.

Programs may also build their own data; these cover the common shapes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def loader(
    data: Dataset[Any], batch_size: int = 32, shuffle: bool = True, seed: int = 0, **kwargs: Any
) -> DataLoader[Any]:
    """A DataLoader whose shuffling derives from ``seed`` (``num_workers=0``: CPU seconds, no forks)."""
    return DataLoader(
        data, batch_size=batch_size, shuffle=shuffle, generator=generator(seed) if shuffle else None, **kwargs
    )


def images(
    n: int, classes: int = 10, size: int = 16, channels: int = 1, noise: float = 1.0, seed: int = 0, task_seed: int = 7
) -> TensorDataset:
    """Class-dependent smooth blobs plus pixel noise: ``(x [n, C, H, W], label [n])``.

    ``task_seed`` fixes the class templates (the task); ``seed`` the samples, so train and validation sets
    built with different ``seed`` share one task.
    """
    g = generator(task_seed)
    templates = torch.nn.functional.avg_pool2d(torch.randn(classes, channels, size, size, generator=g), 3, 1, 1) * 3
    s = generator(seed)
    labels = torch.randint(0, classes, (n,), generator=s)
    x = templates[labels] + noise * torch.randn(n, channels, size, size, generator=s)
    return TensorDataset(x, labels)


def regression(
    n: int, dim: int = 16, noise: float = 0.1, seed: int = 0, task_seed: int = 11, heavy_tail: bool = False
) -> TensorDataset:
    """A smooth nonlinear target of ``dim`` features: ``(x [n, dim], y [n, 1])``; Student-t noise when
    ``heavy_tail`` (outliers, as in real sensor data)."""
    w = torch.randn(dim, 1, generator=generator(task_seed)) / math.sqrt(dim)
    s = generator(seed)
    x = torch.randn(n, dim, generator=s)
    eps = _student_t(n, s) if heavy_tail else torch.randn(n, 1, generator=s)
    y = torch.tanh(x @ w) * 2 + 0.5 * (x[:, :1] ** 2) + noise * eps
    return TensorDataset(x, y)


def _student_t(n: int, g: torch.Generator, dof: int = 2) -> torch.Tensor:
    z = torch.randn(n, 1, generator=g)
    chi = torch.randn(n, dof, generator=g).pow(2).sum(dim=1, keepdim=True)
    return z / torch.sqrt(chi / dof)


def markov_tokens(n: int, length: int = 32, vocab: int = 64, seed: int = 0, task_seed: int = 13) -> TensorDataset:
    """Token sequences from a sparse first-order Markov chain: ``(tokens [n, length+1])``; a language model
    can learn it down to the chain's entropy, well below ``ln(vocab)``."""
    g = generator(task_seed)
    logits = torch.randn(vocab, vocab, generator=g) * 3.0
    probs = torch.softmax(logits, dim=1)
    s = generator(seed)
    seq = torch.empty(n, length + 1, dtype=torch.long)
    seq[:, 0] = torch.randint(0, vocab, (n,), generator=s)
    for t in range(1, length + 1):
        seq[:, t] = torch.multinomial(probs[seq[:, t - 1]], 1, generator=s).squeeze(1)
    return TensorDataset(seq)
