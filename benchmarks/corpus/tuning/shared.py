"""Synthetic data and small building blocks shared by the tuning programs (no programs here)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Conv 3x3 (same padding) - BatchNorm - ReLU, the block of every small CNN tutorial."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def flipped_labels(data: TensorDataset, fraction: float, classes: int, seed: int) -> TensorDataset:
    """The same inputs with ``fraction`` of the labels replaced by a uniformly drawn *other* class."""
    x, y = data.tensors
    g = generator(seed + 5000)
    flip = torch.rand(len(y), generator=g) < fraction
    other = (y + torch.randint(1, classes, (len(y),), generator=g)) % classes
    return TensorDataset(x, torch.where(flip, other, y))


def shapes(n: int, size: int = 16, noise: float = 0.4, seed: int = 0) -> TensorDataset:
    """Segmentation scenes: a rectangle (class 1) and a disc (class 2) on a textured background (class 0).

    Returns ``(image [n, 1, size, size], mask [n, size, size] long)``; the classes differ in mean intensity
    and the noise blurs them, so per-pixel cross-entropy has to use context, not just the pixel.
    """
    g = generator(seed)
    coords = torch.arange(size).float()
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    mask = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r0, c0 = torch.randint(0, size - 6, (2,), generator=g).tolist()
        h, w = torch.randint(4, 8, (2,), generator=g).tolist()
        mask[i, r0 : r0 + h, c0 : c0 + w] = 1
        cy, cx = (torch.rand(2, generator=g) * (size - 6) + 3).tolist()
        radius = 2.0 + 2.0 * float(torch.rand(1, generator=g))
        mask[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 2
    level = torch.tensor([0.0, 1.0, -1.0])
    image = level[mask] + noise * torch.randn(n, size, size, generator=g)
    image = nn.functional.avg_pool2d(image.unsqueeze(1), 3, 1, 1) * 1.5
    return TensorDataset(image, mask)


def waveforms(n: int, length: int = 64, classes: int = 4, noise: float = 0.8, seed: int = 0) -> TensorDataset:
    """Time-series classification: each class a frequency, with random phase, amplitude and noise.

    Returns ``(x [n, 1, length], label [n])``.
    """
    g = generator(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    t = torch.arange(length).float()
    freq = 1.5 + 1.5 * labels.float()
    phase = torch.rand(n, generator=g) * 2 * math.pi
    amp = 0.5 + torch.rand(n, generator=g)
    x = amp[:, None] * torch.sin(2 * math.pi * freq[:, None] * t / length + phase[:, None])
    x = x + noise * torch.randn(n, length, generator=g)
    return TensorDataset(x.unsqueeze(1), labels)


def bag_of_tokens(n: int, length: int = 24, vocab: int = 200, classes: int = 4, seed: int = 0) -> TensorDataset:
    """Text classification: filler tokens plus a few class-indicative keywords (some misleading).

    Returns ``(tokens [n, length] long, label [n])``.
    """
    g = generator(seed)
    keywords = torch.arange(classes * 8).view(classes, 8) + 1  # token 0 is padding-like filler
    labels = torch.randint(0, classes, (n,), generator=g)
    tokens = torch.randint(classes * 8 + 1, vocab, (n, length), generator=g)
    for i in range(n):
        k = int(torch.randint(2, 5, (1,), generator=g))
        where = torch.randperm(length, generator=g)[:k]
        picked = keywords[labels[i], torch.randint(0, 8, (k,), generator=g)]
        decoy = torch.rand(k, generator=g) < 0.25
        wrong = keywords[torch.randint(0, classes, (k,), generator=g), torch.randint(0, 8, (k,), generator=g)]
        tokens[i, where] = torch.where(decoy, wrong, picked)
    return TensorDataset(tokens, labels)
