"""Many small tensors of one shape, reduced in a few ops on a CPU.

On a CPU, ``torch._foreach_norm`` and every other per-parameter op is a loop over the tensors at ~3 µs each,
whatever their size: a model of 2,000 parameter tensors paid ~7 ms per sampled step for its gradient norms. Tensors
of one shape and dtype are stacked instead (one op; the copy costs ~0.5 ns per element) and reduced along the
stacked dimension in one more op. That wins for tensors of up to a few thousand elements, in groups of eight or
more (measured: 8 tensors of 1,024 elements, 30 → 18 µs; 32 of 64, 107 → 20 µs; 2 of 16,384, 17 → 26 µs: a loss).
A GPU runs the foreach ops as fused kernels, so nothing is stacked there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

STACK_MAX_ELEMENTS = 4096
"""Tensors of at most this many elements are stacked; larger ones cost more to copy than their op costs to call."""

STACK_MIN_TENSORS = 8
"""A group of fewer tensors of one shape than this is not stacked (its two ops save too few)."""

STACK_MIN_IN_ALL = 16
"""A step's norms are taken by stacks only when the groups hold at least this many tensors: writing them into the
row by index costs ~3 ops more than the fused norms' row (measured: an LSTM's 4 biases stacked, 99 -> 120 µs; a
Transformer's 12 small tensors, 105 -> 98 µs; 2,000 tensors, ~7 ms -> ~1 ms)."""


def stack_groups(tensors: Sequence[torch.Tensor]) -> tuple[list[list[int]], list[int]]:
    """The indices of the tensors worth stacking, grouped by shape and dtype, and the indices of the others (in
    their order). Nothing is stacked off the CPU."""
    groups: dict[tuple[torch.Size, torch.dtype], list[int]] = {}
    for i, tensor in enumerate(tensors):
        if tensor.device.type == "cpu" and 0 < tensor.numel() <= STACK_MAX_ELEMENTS:
            groups.setdefault((tensor.shape, tensor.dtype), []).append(i)
    stacked = [group for group in groups.values() if len(group) >= STACK_MIN_TENSORS]
    grouped = {i for group in stacked for i in group}
    return stacked, [i for i in range(len(tensors)) if i not in grouped]


def stacked(tensors: Sequence[torch.Tensor], group: Sequence[int]) -> torch.Tensor:
    """``[len(group), elements]``: the group's tensors stacked (a copy) and flattened; a group of one is its
    tensor reshaped (a view where its layout allows, no copy)."""
    if len(group) == 1:
        return tensors[group[0]].reshape(1, -1)
    return torch.stack([tensors[i] for i in group]).reshape(len(group), -1)


class StackedNorms:
    """The float32 L2 norms of a fixed list of dense float32/16/bf16 tensors (an optimizer's gradients, each
    step's new ones), computed group by group and written into a row at given positions.

    Args:
        tensors: the tensors as they are now (their shapes, dtypes and device decide the groups).
        positions: where each tensor's norm goes in a row.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], positions: Sequence[int]) -> None:
        self.groups, self.rest = stack_groups(tensors)
        order = [i for group in self.groups for i in group] + self.rest
        self.positions = torch.tensor([positions[i] for i in order], dtype=torch.long)

    @property
    def worthwhile(self) -> bool:
        return sum(len(group) for group in self.groups) >= STACK_MIN_IN_ALL

    def write(self, tensors: Sequence[torch.Tensor], row: torch.Tensor) -> None:
        """Store the tensors' norms in ``row``: device ops only (a few per group, not one per tensor)."""
        parts = [torch.linalg.vector_norm(stacked(tensors, g), dim=1, dtype=torch.float32) for g in self.groups]
        if self.rest:
            rest = torch._foreach_norm([tensors[i] for i in self.rest], 2, dtype=torch.float32)  # type: ignore[arg-type]
            parts.append(torch.stack(rest))
        row.index_copy_(0, self.positions, torch.cat(parts))
