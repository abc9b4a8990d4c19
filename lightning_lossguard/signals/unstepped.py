"""Parameters that train but that no optimizer holds: they get gradients, and nothing steps them.

``configure_optimizers`` that passes ``self.head.parameters()`` (or a filtered list, or one submodule of two) leaves
the rest of the model out; those parameters still require a gradient, backward still computes it (and, never zeroed
by an optimizer, piles it up), and their values never move. Nothing else LossGuard watches sees them: it watches what
the optimizers hold.

Measured on the host at the start (which parameters require a gradient and are in no optimizer: a walk over the
module's parameters, once), after the first batch (whether a parameter the optimizers hold reads their output: the
walk of the first batch's autograd graph LossGuard already makes) and on report steps (whether each got a gradient,
an attribute, and whether its values moved since the start: a few elements of each compared on the device, one host
read, made only in runs that have such parameters). A parameter that moved is updated by hand (an EMA copy, a
multiplier stepped in a hook): it is dropped for good, not judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from lightning_lossguard.signals.parameters import clean_name

SAMPLED_ELEMENTS = 64
"""Elements of each parameter kept to tell whether it moved (spread over the whole tensor): any update by hand moves
them all, and 64 floats a parameter cost nothing to keep."""


@dataclass(frozen=True)
class Unstepped:
    """A parameter that got a gradient, is in no optimizer and has not moved since the run began.

    Attributes:
        name: the parameter's name in the module.
        elements: its number of elements.
        read_by_trained: an op on a parameter that an optimizer holds takes its output (the first batch's graph;
            None where the graph was not read: a compiled step, a graph too large).
        training: the module that owns it is in training mode (``.eval()`` keeps a fixed part in eval mode).
    """

    name: str
    elements: int
    read_by_trained: bool | None = None
    training: bool = True


class UnsteppedParameters:
    """Keeps the parameters that require a gradient but that no optimizer holds, and reads whether they moved."""

    def __init__(self, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        held = _held(optimizers)
        self._candidates: list[tuple[str, nn.Parameter, torch.Tensor]] = []
        self._read_by_trained: set[int] | None = None  # None until the first batch's graph is read
        self._owner: dict[int, nn.Module] = {}
        if not held:
            return  # no optimizer (or one LossGuard cannot see into): nothing to compare against
        for name, p in module.named_parameters(remove_duplicate=True):
            if p.requires_grad and id(p) not in held and _plain(p):
                self._candidates.append((clean_name(name), p, _sample(p)))
        if self._candidates:
            kept = set(self.ids())
            for owner in module.modules():
                for p in owner.parameters(recurse=False):
                    if id(p) in kept:
                        self._owner.setdefault(id(p), owner)

    def __bool__(self) -> bool:
        return bool(self._candidates)

    def ids(self) -> list[int]:
        """The identities of the kept parameters, to index them in the first batch's graph."""
        return [id(p) for _, p, _ in self._candidates]

    def read_by_trained(self, ids: set[int]) -> None:
        """Which kept parameters a trained parameter reads the output of (from the graph)."""
        self._read_by_trained = set(ids)

    def read(self, optimizers: Sequence[torch.optim.Optimizer]) -> list[Unstepped]:
        """The kept parameters that got a gradient and have not moved (report steps only: one host read, and none
        when no parameter is kept). Those added to an optimizer since, frozen since, or moved are dropped for good."""
        held = _held(optimizers)
        self._candidates = [c for c in self._candidates if c[1].requires_grad and id(c[1]) not in held]
        graded = [c for c in self._candidates if c[1].grad is not None]
        if not graded:
            return []
        with torch.no_grad():
            flags = [torch.any(_sample(p) != first) for _, p, first in graded]
            moved = torch.stack([f.to(flags[0].device) for f in flags]).tolist()  # a model split across devices
        if any(moved):
            gone = {id(p) for (_, p, _), flag in zip(graded, moved, strict=True) if flag}
            self._candidates = [c for c in self._candidates if id(c[1]) not in gone]
        return [
            Unstepped(name, p.numel(), self._read(p), self._training(p))
            for (name, p, _), flag in zip(graded, moved, strict=True)
            if not flag
        ]

    def _read(self, p: nn.Parameter) -> bool | None:
        return None if self._read_by_trained is None else id(p) in self._read_by_trained

    def _training(self, p: nn.Parameter) -> bool:
        owner = self._owner.get(id(p))
        return owner is None or owner.training


def _held(optimizers: Sequence[torch.optim.Optimizer]) -> set[int]:
    return {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}


def _plain(p: nn.Parameter) -> bool:
    """A whole, materialised tensor on this rank (not a lazy weight, a DTensor shard or a partitioned one)."""
    return not isinstance(p, UninitializedParameter) and type(p.data) is torch.Tensor and p.numel() > 0


def _sample(p: nn.Parameter) -> torch.Tensor:
    flat = p.detach().reshape(-1)
    return flat[:: max(1, flat.numel() // SAMPLED_ELEMENTS)][:SAMPLED_ELEMENTS].clone()
