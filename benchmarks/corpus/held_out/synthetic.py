"""Synthetic data and toy environments for the held-out programs: seeded, small, learnable in CPU seconds.

``seed`` draws the samples; ``task_seed`` fixes the task, so train and validation sets share one task.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator


class CartPole:
    """A batch of classic cart-pole environments (the Gym dynamics, in numpy as Gym has them), stepped
    together, each reset on its own.

    Reward 1 per step; an episode ends when the pole leans past 12 degrees, the cart leaves the track or
    ``max_len`` steps pass. ``finished`` collects the returns of the episodes that ended.
    """

    gravity, cart_mass, pole_mass, half_length, force, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02

    def __init__(self, n: int, seed: int = 0, max_len: int = 200) -> None:
        self.n, self.max_len = n, max_len
        self.rng = np.random.default_rng(seed)
        self.state = self._initial(n)
        self.length = np.zeros(n, dtype=np.int64)
        self.finished: list[float] = []

    def _initial(self, n: int) -> np.ndarray:
        return self.rng.uniform(-0.05, 0.05, size=(n, 4)).astype(np.float32)

    def observe(self) -> torch.Tensor:
        return torch.from_numpy(self.state.copy())

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply actions (0 = push left, 1 = push right): ``(reward [n], done [n])``, done envs reset."""
        x, x_dot, theta, theta_dot = self.state.T
        push = np.where(action.numpy() == 1, self.force, -self.force)
        total = self.cart_mass + self.pole_mass
        pole_moment = self.pole_mass * self.half_length
        cos, sin = np.cos(theta), np.sin(theta)
        temp = (push + pole_moment * theta_dot**2 * sin) / total
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.half_length * (4.0 / 3.0 - self.pole_mass * cos**2 / total)
        )
        x_acc = temp - pole_moment * theta_acc * cos / total
        self.state = np.stack(
            (
                x + self.tau * x_dot,
                x_dot + self.tau * x_acc,
                theta + self.tau * theta_dot,
                theta_dot + self.tau * theta_acc,
            ),
            axis=1,
        ).astype(np.float32)
        self.length += 1
        fell = (np.abs(self.state[:, 0]) > 2.4) | (np.abs(self.state[:, 2]) > 12 * math.pi / 180)
        done = fell | (self.length >= self.max_len)
        if done.any():
            self.finished.extend(self.length[done].astype(float).tolist())
            self.state[done] = self._initial(int(done.sum()))
            self.length[done] = 0
        return torch.ones(self.n), torch.from_numpy(done)


def clusters(
    n: int,
    classes: int = 8,
    dim: int = 32,
    separation: float = 0.5,
    spread: float = 1.0,
    seed: int = 0,
    task_seed: int = 21,
) -> TensorDataset:
    """Gaussian class clusters whose centres sit on a random low-dimensional curved manifold, so a linear
    model is not enough: ``(x [n, dim], label [n])``."""
    g = generator(task_seed)
    centres = torch.randn(classes, dim, generator=g) * separation
    mixing = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
    s = generator(seed)
    labels = torch.randint(0, classes, (n,), generator=s)
    x = centres[labels] + spread * torch.randn(n, dim, generator=s)
    return TensorDataset(torch.tanh(x @ mixing) * 2 + 0.1 * x, labels)


def reversal_pairs(n: int, length: int = 8, vocab: int = 12, seed: int = 0) -> TensorDataset:
    """A toy translation task: ``(source [n, length], target [n, length])`` with the target the source
    reversed and each token shifted by one (tokens ``1..vocab-1``; 0 is the start-of-sequence token)."""
    s = generator(seed)
    source = torch.randint(1, vocab, (n, length), generator=s)
    target = source.flip(1) % (vocab - 1) + 1
    return TensorDataset(source, target)


def multi_sine(steps: int, seed: int = 0, task_seed: int = 31, noise: float = 0.1) -> torch.Tensor:
    """A noisy sum of three sines with fixed periods and amplitudes (the task) and a random phase: ``[steps]``."""
    g = generator(task_seed)
    periods = torch.tensor([7.0, 17.0, 41.0]) * (1 + 0.1 * torch.rand(3, generator=g))
    amplitudes = 0.5 + torch.rand(3, generator=g)
    s = generator(seed)
    t = torch.arange(steps, dtype=torch.float32) + 1000 * torch.rand(1, generator=s)
    clean = (amplitudes[:, None] * torch.sin(2 * math.pi * t[None] / periods[:, None])).sum(0)
    return clean + noise * torch.randn(steps, generator=s)


def windows(series: torch.Tensor, window: int, horizon: int) -> TensorDataset:
    """Sliding windows over a series: ``(past [n, window, 1], future [n, horizon])``."""
    n = len(series) - window - horizon + 1
    idx = torch.arange(window + horizon)[None] + torch.arange(n)[:, None]
    chunks = series[idx]
    return TensorDataset(chunks[:, :window, None], chunks[:, window:])


def community_graphs(
    graphs: int, nodes: int = 48, communities: int = 3, features: int = 16, seed: int = 0, task_seed: int = 41
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Stochastic-block-model graphs: ``(normalised adjacency with self-loops [n, n], node features [n, f],
    community [n])``; each node's features are a weak, noisy hint of its community, so the neighbours matter."""
    prototypes = torch.randn(communities, features, generator=generator(task_seed))
    s = generator(seed)
    out = []
    for _ in range(graphs):
        labels = torch.randint(0, communities, (nodes,), generator=s)
        same = labels[:, None] == labels[None]
        p = torch.where(same, torch.tensor(0.2), torch.tensor(0.03))
        upper = torch.triu((torch.rand(nodes, nodes, generator=s) < p).float(), 1)
        adjacency = upper + upper.T + torch.eye(nodes)
        d = adjacency.sum(1).rsqrt()
        x = 0.25 * prototypes[labels] + torch.randn(nodes, features, generator=s)
        out.append((d[:, None] * adjacency * d[None], x, labels))
    return out


def ratings(
    n: int, users: int = 200, items: int = 300, rank: int = 6, seed: int = 0, task_seed: int = 51
) -> TensorDataset:
    """Observed entries of a low-rank rating matrix with user and item biases and noise:
    ``(user [n], item [n], rating [n])``."""
    g = generator(task_seed)
    u, v = torch.randn(users, rank, generator=g), torch.randn(items, rank, generator=g)
    bu, bi = 0.5 * torch.randn(users, generator=g), 0.5 * torch.randn(items, generator=g)
    s = generator(seed)
    user, item = torch.randint(0, users, (n,), generator=s), torch.randint(0, items, (n,), generator=s)
    r = 3.0 + bu[user] + bi[item] + (u[user] * v[item]).sum(1) / math.sqrt(rank) + 0.3 * torch.randn(n, generator=s)
    return TensorDataset(user, item, r)


def audio_clips(
    n: int, classes: int = 6, length: int = 256, noise: float = 0.8, seed: int = 0, task_seed: int = 61
) -> TensorDataset:
    """Stand-ins for short sound clips: each class a carrier frequency with an amplitude modulation, random
    phase and onset, plus noise: ``(wave [n, 1, length], label [n])``."""
    g = generator(task_seed)
    carrier = 0.05 + 0.3 * torch.rand(classes, generator=g)
    modulation = 0.005 + 0.03 * torch.rand(classes, generator=g)
    s = generator(seed)
    labels = torch.randint(0, classes, (n,), generator=s)
    t = torch.arange(length, dtype=torch.float32)[None] + length * torch.rand(n, 1, generator=s)
    phase = 2 * math.pi * torch.rand(n, 1, generator=s)
    envelope = 0.6 + 0.4 * torch.sin(2 * math.pi * modulation[labels, None] * t)
    wave = envelope * torch.sin(2 * math.pi * carrier[labels, None] * t + phase)
    return TensorDataset((wave + noise * torch.randn(n, length, generator=s))[:, None], labels)


def ring_of_gaussians(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.05, seed: int = 0) -> TensorDataset:
    """The GAN toy: points from ``modes`` Gaussians on a circle: ``(x [n, 2],)``."""
    s = generator(seed)
    angle = 2 * math.pi * torch.randint(0, modes, (n,), generator=s).float() / modes
    centres = radius * torch.stack((torch.cos(angle), torch.sin(angle)), dim=1)
    return TensorDataset(centres + std * torch.randn(n, 2, generator=s))


def sentiment_tokens(n: int, length: int = 24, vocab: int = 64, seed: int = 0, task_seed: int = 71) -> TensorDataset:
    """Token "reviews": each word carries a hidden polarity; the label says whether the polarity summed over
    the sequence, with a negation word flipping the rest, is positive: ``(tokens [n, length], label [n])``."""
    polarity = torch.randn(vocab, generator=generator(task_seed))
    polarity[polarity.abs() < 0.7] = 0.0
    negation = 1
    polarity[negation] = 0.0
    s = generator(seed)
    tokens = torch.randint(2, vocab, (n, length), generator=s)
    negated = torch.rand(n, generator=s) < 0.1
    where = torch.randint(0, length // 2, (n,), generator=s)
    tokens[negated, where[negated]] = negation
    after = torch.arange(length)[None] > where[:, None]
    sign = torch.where(negated[:, None] & after, -1.0, 1.0)
    score = (polarity[tokens] * sign).sum(1)
    return TensorDataset(tokens, (score > 0).long())


def inverse_sine(n: int, noise: float = 0.05, seed: int = 0) -> TensorDataset:
    """Bishop's mixture-density toy: ``y = x + 0.3 sin(2 pi x) + noise`` inverted, so ``x`` given ``y`` is
    multi-modal: ``(y [n, 1], x [n, 1])``."""
    s = generator(seed)
    x = torch.rand(n, 1, generator=s)
    y = x + 0.3 * torch.sin(2 * math.pi * x) + noise * torch.randn(n, 1, generator=s)
    return TensorDataset(y, x)


def separable(n: int, dim: int = 20, margin: float = 0.3, seed: int = 0, task_seed: int = 81) -> TensorDataset:
    """Two classes split by a hyperplane, a few labels flipped: ``(x [n, dim], label [n, 1] float)``."""
    w = torch.randn(dim, generator=generator(task_seed))
    w = w / w.norm()
    s = generator(seed)
    x = torch.randn(n, dim, generator=s)
    side = x @ w
    x = x + margin * torch.sign(side)[:, None] * w[None]
    y = (side > 0).float()
    flip = torch.rand(n, generator=s) < 0.03
    y[flip] = 1 - y[flip]
    return TensorDataset(x, y[:, None])
