"""Which parameters are watched, and how they group into layers.

A parameter is watched when an optimizer steps it and it can learn now: it is in a ``param_group``, it
requires a gradient, and it is materialized (a lazy module's parameters join after its first forward).
The set is re-read on report steps, so parameters added (``add_param_group``), unfrozen or frozen during a
run are watched from the next interval on, and a frozen parameter's zero gradient is never read as a dead
unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter
from torch.nn.utils.prune import BasePruningMethod

READABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.complex64, torch.complex128)
"""Parameter dtypes whose gradient norm LossGuard measures (others get no gradient, or cannot be read)."""


_WRAPPERS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
"""Name segments that wrapper modules (FSDP1, activation checkpointing, ``torch.compile``) insert: not part of the
user's names."""


def clean_name(name: str) -> str:
    """A module or parameter name as the user wrote the model: ``net._fsdp_wrapped_module.0.weight`` ->
    ``net.0.weight``."""
    for wrapper in _WRAPPERS:
        name = name.replace(wrapper, "")
    return name


@dataclass(frozen=True)
class WatchedSet:
    """The parameters LossGuard watches in this interval.

    Attributes:
        names: one per watched parameter (``module.named_parameters`` names; ``optimizer<i>.param<j>`` for a
            parameter the module does not own).
        params: the parameters, aligned with ``names``.
        groups: per parameter, the index of the optimizer that steps it (one gradient path per optimizer).
        pending: parameters not materialized yet (lazy modules): watched once they are.
        unreadable: ``(name, reason)`` for parameters LossGuard cannot read: coverage gaps.
        frozen: names of parameters an optimizer holds but that do not require a gradient now.
        model_elements: elements in all of the module's (materialized) parameters, trained or not.
    """

    names: tuple[str, ...]
    params: tuple[nn.Parameter, ...]
    groups: tuple[int, ...]
    pending: int = 0
    unreadable: tuple[tuple[str, str], ...] = ()
    frozen: tuple[str, ...] = ()
    model_elements: int = 0

    @property
    def signature(self) -> tuple[object, ...]:
        """Changes when the watched set changes (identity of each parameter and its optimizer)."""
        return (tuple(id(p) for p in self.params), self.groups, self.pending)


def optimizer_parameters_key(optimizers: Sequence[torch.optim.Optimizer]) -> tuple[object, ...]:
    """What the watched set depends on, read from the optimizers alone (no walk over the module): each stepped
    parameter's identity, whether it trains, its kind and dtype. Equal keys: :func:`watched_parameters` need
    not run again."""
    return tuple(
        (id(p), p.requires_grad, type(p), p.dtype) for o in optimizers for g in o.param_groups for p in g["params"]
    )


def watched_parameters(module: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> WatchedSet:
    """The parameters the ``optimizers`` step that LossGuard can watch now (a Python pass over the parameters:
    report steps only)."""
    owned = {id(p): clean_name(n) for n, p in module.named_parameters(remove_duplicate=True)}
    names: list[str] = []
    params: list[nn.Parameter] = []
    groups: list[int] = []
    unreadable: list[tuple[str, str]] = []
    frozen: list[str] = []
    pending = 0
    seen: set[int] = set()
    for index, optimizer in enumerate(optimizers):
        position = 0
        for group in optimizer.param_groups:
            for p in group["params"]:
                position += 1
                if id(p) in seen:
                    continue
                seen.add(id(p))
                name = owned.get(id(p), f"optimizer{index}.param{position - 1}")
                if isinstance(p, UninitializedParameter):
                    pending += 1
                elif not p.requires_grad:
                    frozen.append(name)
                elif p.dtype not in READABLE_DTYPES:
                    unreadable.append((name, f"dtype {p.dtype} has no gradient norm LossGuard can read"))
                else:
                    names.append(name)
                    params.append(p)
                    groups.append(index)
    elements = sum(p.numel() for p in module.parameters() if not isinstance(p, UninitializedParameter))
    return WatchedSet(tuple(names), tuple(params), tuple(groups), pending, tuple(unreadable), tuple(frozen), elements)


@dataclass(frozen=True)
class ParameterLayout:
    """How the watched parameters group into layers.

    Attributes:
        layer_of: parameter index -> layer index.
        layers: layer names, input side first where the execution order is known.
        comparable: per layer, a dense weight layer whose norm can be compared across depth (not an
            embedding, not biases or norms alone).
        unit_params: parameters with output units (dense >= 2-D weights): dead-unit sampling.
        layer_group: per layer, the optimizer that steps it (-1 when its parameters have several).
        unit_axes: per entry of ``unit_params``, the dimension that holds its output units: 0, or 1 for a
            transposed convolution's weight (``[in, out, *kernel]``) and a GPT-2-style ``Conv1D`` (``[in, out]``).
    """

    layer_of: tuple[int, ...]
    layers: tuple[str, ...]
    comparable: tuple[bool, ...]
    unit_params: tuple[int, ...]
    layer_group: tuple[int, ...]
    unit_axes: tuple[int, ...]


def layer_name(parameter_name: str) -> str:
    """``encoder.3.weight`` -> ``encoder.3``; a parameter owned by the root module is its own layer. A tensor that
    ``torch.nn.utils.parametrize`` rewrites (spectral and weight norm, orthogonal) lives at
    ``<layer>.parametrizations.<tensor>.original[N]``: it belongs to ``<layer>``, with the layer's other parameters."""
    owner, _, _ = parameter_name.rpartition(".")
    layer, found, _ = owner.rpartition(".parametrizations.")
    if found and layer:
        return layer
    return owner or parameter_name


_NOT_COMPARABLE = (nn.Embedding, nn.EmbeddingBag)


def build_layout(module: nn.Module, watched: WatchedSet, execution_order: Sequence[str] = ()) -> ParameterLayout:
    """Group the watched parameters into layers, sorted by ``execution_order`` (module names in the order their
    forward ran) when known, so "first" and "last" layer mean input side and output side."""
    modules = {clean_name(n): m for n, m in module.named_modules()}
    rank = {clean_name(name): i for i, name in enumerate(execution_order)}
    registration: dict[str, int] = {}
    for name in watched.names:
        registration.setdefault(layer_name(name), len(registration))
    layers = sorted(registration, key=lambda n: (rank.get(n, len(rank) + registration[n]), registration[n]))
    index = {n: i for i, n in enumerate(layers)}
    members: dict[str, list[int]] = {n: [] for n in layers}
    for i, name in enumerate(watched.names):
        members[layer_name(name)].append(i)
    comparable = []
    layer_group = []
    for layer in layers:
        mine = members[layer]
        dense = any(watched.params[i].dim() >= 2 for i in mine)
        comparable.append(dense and not isinstance(modules.get(layer), _NOT_COMPARABLE))
        groups = {watched.groups[i] for i in mine}
        layer_group.append(groups.pop() if len(groups) == 1 else -1)
    axes = {
        i: _unit_axis(modules.get(layer_name(n)), p)
        for i, (n, p) in enumerate(zip(watched.names, watched.params))
        if p.dim() >= 2 and not p.is_complex() and not isinstance(modules.get(layer_name(n)), _NOT_COMPARABLE)
    }
    unit_params = tuple(i for i, axis in axes.items() if axis is not None)
    return ParameterLayout(
        layer_of=tuple(index[layer_name(n)] for n in watched.names),
        layers=tuple(layers),
        comparable=tuple(comparable),
        unit_params=unit_params,
        layer_group=tuple(layer_group),
        unit_axes=tuple(axes[i] or 0 for i in unit_params),
    )


def _unit_axis(owner: nn.Module | None, param: torch.Tensor) -> int | None:
    """The dimension of a weight that holds its output units: 0, but 1 for a transposed convolution's weight
    (``[in, out / groups, *kernel]``: a unit whose ReLU died is an all-zero column, not a row) and for a GPT-2-style
    ``Conv1D`` (``[in, out]``). None for a grouped transposed convolution: a column there mixes the output units of
    every group."""
    weight = getattr(owner, "weight", None)
    if not isinstance(weight, torch.Tensor) or tuple(param.shape) != tuple(weight.shape):
        return 0  # not the owning layer's weight: its units, if any, are rows
    if isinstance(owner, nn.modules.conv._ConvTransposeNd):
        return 1 if owner.groups == 1 else None
    return 1 if _is_gpt2_conv1d(owner, param) else 0


def _is_gpt2_conv1d(owner: nn.Module | None, param: torch.Tensor) -> bool:
    """Whether ``param``, its owner's weight, is that of a GPT-2-style ``Conv1D``: Hugging Face's
    (``transformers.pytorch_utils``) or one of the many copies of it in GPT-2 code, a weight of ``[nx, nf]`` used as
    ``x @ weight + bias``. Recognised without ``transformers`` (not a dependency): a class named ``Conv1D`` whose
    ``nf`` output features are the weight's columns. A square weight fits either layout: there only Hugging Face's
    own class is trusted."""
    kind = type(owner)
    if kind.__name__ != "Conv1D" or param.dim() != 2 or getattr(owner, "nf", None) != param.shape[1]:
        return False
    return param.shape[0] != param.shape[1] or kind.__module__.startswith("transformers.")


@dataclass(frozen=True)
class Sharding:
    """How a parameter's gradient is split across the ranks, for combining the ranks' local norms.

    Attributes:
        ways: how many distinct pieces the parameter is cut into: the product of the sizes of the device-mesh
            dimensions it is sharded on (FSDP2: the data-parallel size). Among ``world`` ranks, each piece is
            held by ``world / ways`` of them (replicated mesh dimensions, and the other slices of a sub-mesh),
            so the global sum of squares is the sum over every rank of its local sum of squares divided by that.
        by_rows: cut along dimension 0 only, so each rank holds whole output units (rows): dead-unit counts
            add up across ranks. False for a cut along another dimension (tensor-parallel row-wise layers) or a
            flat shard (FSDP1).
    """

    ways: int
    by_rows: bool = True


def sharding_of(p: torch.Tensor) -> Sharding | None:
    """The sharding of a DTensor parameter (FSDP2, tensor parallelism), or None when its local tensor is the whole
    parameter (a plain tensor, or a DTensor replicated on every mesh dimension). Host metadata only."""
    placements = getattr(p, "placements", None)
    mesh = getattr(p, "device_mesh", None)
    if placements is None or mesh is None:
        return None
    ways = 1
    by_rows = True
    for dim, placement in enumerate(placements):
        if getattr(placement, "is_shard", lambda: False)():
            ways *= int(mesh.size(dim))
            by_rows = by_rows and getattr(placement, "dim", None) == 0
    return Sharding(ways, by_rows) if ways > 1 else None


def is_sharded(p: torch.Tensor) -> bool:
    """A DTensor parameter split across ranks (FSDP2): its gradient norm needs a cross-rank sum of squares."""
    return sharding_of(p) is not None


def pruned_parameters(module: nn.Module) -> set[int]:
    """``id`` of each parameter ``torch.nn.utils.prune`` masks (Lightning's ``ModelPruning`` uses it): the
    original weight, re-registered as ``<name>_orig``, whose pruned elements get no gradient by design."""
    found: set[int] = set()
    for sub in module.modules():
        for hook in sub._forward_pre_hooks.values():
            if isinstance(hook, BasePruningMethod):
                original = getattr(sub, f"{hook._tensor_name}_orig", None)
                if isinstance(original, nn.Parameter):
                    found.add(id(original))
    return found


def gradient_hooked(params: Sequence[torch.Tensor]) -> int:
    """How many of ``params`` carry tensor hooks (``Tensor.register_hook``): they run inside backward and may change
    the gradient (clamp, rescale, reverse) before LossGuard reads it."""
    return sum(1 for p in params if getattr(p, "_backward_hooks", None))


def pruned_note(names: Sequence[str]) -> str | None:
    """What ``dead_gradients`` leaves out under pruning (None: nothing is pruned): said once, as a note."""
    if not names:
        return None
    shown = ", ".join(names[:6]) + (" …" if len(names) > 6 else "")
    return (
        f"{len(names)} pruned parameters (torch.nn.utils.prune, ModelPruning) are left out of dead_gradients: their "
        f"pruned weights get no gradient by design ({shown})."
    )
