"""Which watched parameters lie upstream of which, read once from the autograd graph of a loss.

Parameter A is upstream of parameter B when A's gradient flows through an op that uses B: the op takes B
(possibly through a transpose, view or cast) and, as another input, a value computed from A. Comparing a
first layer with a last layer only makes sense along such a path: never between an actor and a critic that
only meet in a summed loss, or between two networks trained by different optimizers.

Walking the graph is pure host work on autograd node objects (no tensor is read); it runs on the first
training batch only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_PASS_THROUGH = (
    "TBackward",
    "TransposeBackward",
    "PermuteBackward",
    "ViewBackward",
    "UnsafeViewBackward",
    "ReshapeAliasBackward",
    "ExpandBackward",
    "UnsqueezeBackward",
    "SqueezeBackward",
    "ToCopyBackward",
    "CloneBackward",
    "SliceBackward",
    "SelectBackward",
    "AliasBackward",
    "AsStridedBackward",
    "UnbindBackward",
    "SplitBackward",
    "SplitWithSizesBackward",
    "ChunkBackward",
)
"""Nodes that only reshape or cast a parameter on its way into an op (``weight.t()``, an AMP cast)."""

MAX_NODES = 200_000
"""Graphs larger than this are not walked (the paths then fall back to one path per optimizer)."""


def upstream_parameters(losses: Iterable[Any], index: Mapping[int, int]) -> list[int] | None:
    """Per watched parameter, a bitmask (Python int) of the watched parameters upstream of it.

    Args:
        losses: loss tensors (or their ``grad_fn``) of one training batch.
        index: ``id(parameter) -> position`` of the watched parameters.

    Returns:
        ``upstream[i]`` with bit ``j`` set when parameter ``j`` is upstream of parameter ``i``; None when no
        graph was found, it was too large to walk, or no watched parameter is in it (FSDP2 runs its graph on
        unsharded copies of the parameters it shards, not on the parameters the optimizer steps).
    """
    roots = [getattr(loss, "grad_fn", loss) for loss in losses]
    roots = [r for r in roots if r is not None and hasattr(r, "next_functions")]
    if not roots:
        return None
    below: dict[Any, int] = {}  # node -> bitmask of the watched parameters reachable from it
    upstream = [0] * (max(index.values(), default=-1) + 1)
    stack: list[tuple[Any, bool]] = [(r, False) for r in roots]
    opened: set[Any] = set()
    found = 0  # every watched parameter met in the graph
    while stack:
        node, expanded = stack.pop()
        if node in below or (not expanded and node in opened):
            continue
        if len(opened) > MAX_NODES:
            return None
        children = [c for c, _ in node.next_functions if c is not None]
        if not expanded:
            opened.add(node)
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in opened)
            continue
        below[node] = _own_bit(node, index)
        found |= below[node]
        local = 0
        data = 0
        for child in children:
            param = _parameter_behind(child, index)
            if param is not None:
                local |= 1 << param
                found |= 1 << param
            else:
                data |= below.get(child, 0)
            below[node] |= below.get(child, 0)
        if local and data:
            for param in _bits(local):
                upstream[param] |= data & ~(1 << param)
    return upstream if below and found else None


def _own_bit(node: Any, index: Mapping[int, int]) -> int:
    variable = getattr(node, "variable", None)
    position = index.get(id(variable)) if variable is not None else None
    return 1 << position if position is not None else 0


def _parameter_behind(node: Any, index: Mapping[int, int]) -> int | None:
    """The watched parameter an input node is, through pass-through nodes only; None for data inputs."""
    for _ in range(16):
        variable = getattr(node, "variable", None)
        if variable is not None:
            return index.get(id(variable))
        children = [c for c, _ in node.next_functions if c is not None]
        if len(children) != 1 or not node.name().startswith(_PASS_THROUGH):
            return None
        node = children[0]
    return None


def _bits(mask: int) -> Iterable[int]:
    position = 0
    while mask:
        if mask & 1:
            yield position
        mask >>= 1
        position += 1
