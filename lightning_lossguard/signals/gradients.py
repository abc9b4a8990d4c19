"""Per-parameter gradient norms, measured on the device with fused ops.

Per optimizer step: one ``torch._foreach_norm`` over the gradients and one ``torch.stack`` into a device
row. Nothing is read back here. On report steps only, two extra samples are taken: the share of "dead
units" (output rows whose gradient is exactly zero) and the update-to-weight ratio of the step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lightning_lossguard.signals.buffer import DeviceRows

NO_GRADIENT = -1.0
"""Row value for a parameter that had no gradient (``p.grad is None``) at that step."""


@dataclass(frozen=True)
class ParameterLayout:
    """Which trainable parameters are watched, and how they group into layers."""

    names: tuple[str, ...]
    layer_of: tuple[int, ...]  # parameter index -> layer index
    layers: tuple[str, ...]  # layer names, in execution order where known
    comparable: tuple[bool, ...]  # per layer: a dense weight layer whose norm can be compared across depth
    unit_params: tuple[int, ...]  # parameters with output units (dense >=2-D weights): dead-unit sampling


def layer_name(parameter_name: str) -> str:
    """``encoder.3.weight`` -> ``encoder.3``; a parameter owned by the root module is its own layer."""
    owner, _, _ = parameter_name.rpartition(".")
    return owner or parameter_name


def build_layout(module: nn.Module, execution_order: Sequence[str] = ()) -> ParameterLayout:
    """Describe the trainable parameters of ``module``.

    Args:
        module: the model; only parameters with ``requires_grad`` are watched (frozen ones are never
            reported).
        execution_order: module names in the order their forward ran, when known. Layers are sorted by
            it so "first" and "last" layer mean input side and output side.
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    modules = dict(module.named_modules())
    rank = {name: i for i, name in enumerate(execution_order)}
    registration: dict[str, int] = {}
    for name, _ in named:
        registration.setdefault(layer_name(name), len(registration))
    layers = sorted(registration, key=lambda n: (rank.get(n, len(rank) + registration[n]), registration[n]))
    index = {n: i for i, n in enumerate(layers)}
    comparable = []
    for layer in layers:
        owner = modules.get(layer)
        dense = any(p.dim() >= 2 for n, p in named if layer_name(n) == layer)
        comparable.append(dense and not isinstance(owner, (nn.Embedding, nn.EmbeddingBag)))
    unit_params = tuple(
        i
        for i, (n, p) in enumerate(named)
        if p.dim() >= 2 and not isinstance(modules.get(layer_name(n)), (nn.Embedding, nn.EmbeddingBag))
    )
    return ParameterLayout(
        names=tuple(n for n, _ in named),
        layer_of=tuple(index[layer_name(n)] for n, _ in named),
        layers=tuple(layers),
        comparable=tuple(comparable),
        unit_params=unit_params,
    )


class GradientProbe:
    """Records per-parameter gradient norms into a device buffer, one row per optimizer step.

    Args:
        parameters: the watched parameters, in layout order.
    """

    def __init__(self, parameters: Sequence[nn.Parameter]) -> None:
        self.parameters = list(parameters)
        self.rows = DeviceRows(max(1, len(self.parameters)))
        self.dead_units = DeviceRows(max(1, len(self.parameters)))
        self.update_ratio = DeviceRows(max(1, len(self.parameters)))
        self._index = {id(p): i for i, p in enumerate(self.parameters)}
        self._groups: dict[int, tuple[list[nn.Parameter], bool]] = {}
        self._before_step: list[tuple[int, torch.Tensor]] = []

    def _group(self, optimizer: torch.optim.Optimizer) -> tuple[list[nn.Parameter], bool]:
        # Parameters of this optimizer that we watch, and whether they are the whole row, in order.
        key = id(optimizer)
        if key not in self._groups:
            params = [p for g in optimizer.param_groups for p in g["params"] if id(p) in self._index]
            whole = [self._index[id(p)] for p in params] == list(range(len(self.parameters)))
            self._groups[key] = (params, whole)
        return self._groups[key]

    def record(self, optimizer: torch.optim.Optimizer, row: torch.Tensor | None = None) -> torch.Tensor | None:
        """Store this optimizer's gradient norms in a new row, or in ``row`` (several optimizers stepping in
        one batch share it). Returns the row written, None when no parameter had a gradient. Device work only."""
        params, whole = self._group(optimizer)
        grads = [p.grad for p in params]
        present = [g for g in grads if g is not None]
        if not present:
            return row
        # float32 accumulation: half-precision sums of squares overflow at 65504.
        norms = torch._foreach_norm(present, 2, dtype=torch.float32)
        if row is None:
            row = self.rows.next_row(present[0].device)
            if whole and len(present) == len(grads):
                torch.stack(norms, out=row)
                return row
            row.fill_(NO_GRADIENT)
        # Some parameters had no gradient, or several optimizers share the row.
        positions = [self._index[id(p)] for p, g in zip(params, grads) if g is not None]
        _scatter(row, positions, norms)
        return row

    def sample_dead_units(self, unit_params: Iterable[int]) -> None:
        """Report steps only: per parameter with output units, the share of units with an all-zero gradient."""
        shares: list[torch.Tensor] = []
        positions: list[int] = []
        for i in unit_params:
            grad = self.parameters[i].grad
            if grad is None:
                continue
            # One reading pass and no copy of the gradient (abs() would allocate one).
            dead = torch.count_nonzero(grad.detach().flatten(1), dim=1) == 0
            shares.append(dead.float().mean())
            positions.append(i)
        if not shares:
            return
        row = self.dead_units.next_row(shares[0].device)
        row.fill_(NO_GRADIENT)
        _scatter(row, positions, shares)

    def snapshot_weights(self, optimizer: torch.optim.Optimizer, max_elements: int) -> None:
        """Report steps only: copy the weights before the optimizer step (bounded by ``max_elements``)."""
        params, _ = self._group(optimizer)
        budget = max_elements
        for p in params:
            if p.grad is None or p.numel() > budget:
                continue
            budget -= p.numel()
            self._before_step.append((self._index[id(p)], p.detach().clone()))

    def sample_update_ratio(self) -> None:
        """Report steps only, after the optimizer step: ||w_after - w_before|| / ||w_before|| per parameter."""
        if not self._before_step:
            return
        positions = [i for i, _ in self._before_step]
        before = [w for _, w in self._before_step]
        sizes = torch.stack(torch._foreach_norm(before, 2, dtype=torch.float32)).clamp_min(1e-12)
        # The snapshots are ours: turn them into the updates in place instead of allocating the differences.
        torch._foreach_sub_(before, [self.parameters[i].detach() for i in positions])
        ratios = torch.stack(torch._foreach_norm(before, 2, dtype=torch.float32)) / sizes
        row = self.update_ratio.next_row(ratios.device)
        row.fill_(NO_GRADIENT)
        _scatter(row, positions, list(ratios.unbind()))
        self._before_step.clear()


def _scatter(row: torch.Tensor, positions: list[int], values: Sequence[torch.Tensor]) -> None:
    # Copy into 0-d views of the row: no index tensor, so no host-to-device transfer.
    views = row.unbind()
    torch._foreach_copy_([views[i] for i in positions], list(values))
