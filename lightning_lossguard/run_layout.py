"""Static facts about the watched model and the run that the detectors need, as plain data (no Lightning).

:class:`RunLayout` says which parameter belongs to which layer, which layers lie on one gradient path
(input side to output side, one optimizer), and :class:`RunSettings` what the run already does
(optimizers, momentum, clipping, schedule), so remedies never advise what is already set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lightning_lossguard.signals.parameters import ParameterLayout, WatchedSet

MAX_PATHS = 64
"""Layer pairs compared by the depth rule, at most (the longest paths first)."""


@dataclass(frozen=True)
class RunSettings:
    """What the run already does.

    Attributes:
        optimizers: class names of the optimizers.
        momentum: the largest momentum (SGD ``momentum``, Adam's ``beta1``) of any parameter group.
        adaptive: an optimizer with per-parameter step sizes (Adam family, RMSprop, Adagrad).
        scheduler: a learning-rate scheduler is configured.
        clip_val: ``gradient_clip_val`` when clipping by norm is on, or the value the run's own code clips the norm to
            (``own_clipping``).
        own_clipping: ``clip_val`` was seen in the gradient norms, not set on the Trainer.
        clip_value: ``gradient_clip_val`` when clipping by value is on (``gradient_clip_algorithm="value"``).
        accumulate: ``accumulate_grad_batches``.
        manual: manual optimization (the module calls zero_grad, backward and step itself).
        batches_per_epoch: training batches per epoch (None when unknown or unbounded): 1 is full-batch
            training, where every step sees the same data.
        weight_dtype: "bfloat16" or "float16" when most trainable parameter tensors are stored in it, else "".
    """

    optimizers: tuple[str, ...] = ()
    momentum: float = math.nan
    adaptive: bool = False
    scheduler: bool = False
    clip_val: float | None = None
    own_clipping: bool = False
    clip_value: float | None = None
    accumulate: int = 1
    manual: bool = False
    batches_per_epoch: int | None = None
    weight_dtype: str = ""


@dataclass(frozen=True)
class RunLayout:
    """The watched parameters, their layers and gradient paths, and the run's settings.

    Attributes:
        param_names, param_sizes: per watched parameter.
        param_units: output units for dense weights, 0 otherwise.
        param_unit_axes: per parameter, the dimension holding its output units (1 for a transposed convolution's
            weight and a GPT-2-style ``Conv1D``, else 0).
        layer_of: parameter index -> layer index; layers: layer names, input side first where known.
        comparable: per layer, a dense weight layer whose norm can be compared across depth.
        layer_group: per layer, the optimizer that steps it (-1 when mixed).
        upstream: per layer, a bitmask of the layers upstream of it on a gradient path (None: unknown).
        total_steps: planned optimizer steps (None when unknown).
        model_elements: elements in all of the model's parameters, trained or frozen.
        first_batch_rows: rows (samples) of the first training batch's first tensor; 0 when unknown.
        pruned: per parameter, masked by ``torch.nn.utils.prune`` (its pruned elements get no gradient by design).
    """

    param_names: tuple[str, ...] = ()
    param_sizes: tuple[int, ...] = ()
    param_units: tuple[int, ...] = ()
    param_unit_axes: tuple[int, ...] = ()
    layer_of: tuple[int, ...] = ()
    layers: tuple[str, ...] = ()
    comparable: tuple[bool, ...] = ()
    layer_group: tuple[int, ...] = ()
    upstream: tuple[int, ...] | None = None
    scaler_active: bool = False
    total_steps: int | None = None
    model_elements: int = 0
    first_batch_rows: int = 0
    pruned: tuple[bool, ...] = ()
    settings: RunSettings = RunSettings()

    @property
    def clip_val(self) -> float | None:
        return self.settings.clip_val

    @property
    def trainable_share(self) -> float:
        """The share of the model's parameter elements that are trained (NaN when unknown)."""
        return sum(self.param_sizes) / self.model_elements if self.model_elements else math.nan

    @property
    def layer_names_per_param(self) -> tuple[str, ...]:
        return tuple(self.layers[i] for i in self.layer_of)

    @classmethod
    def build(
        cls,
        watched: WatchedSet,
        layout: ParameterLayout,
        upstream: Sequence[int] | None,
        settings: RunSettings,
        total_steps: int | None,
        scaler_active: bool,
    ) -> RunLayout:
        axes = dict(zip(layout.unit_params, layout.unit_axes))
        built = cls(
            param_names=watched.names,
            param_sizes=tuple(p.numel() for p in watched.params),
            param_units=tuple(p.shape[axes[i]] if i in axes else 0 for i, p in enumerate(watched.params)),
            param_unit_axes=tuple(axes.get(i, 0) for i in range(len(watched.params))),
            layer_of=layout.layer_of,
            layers=layout.layers,
            comparable=layout.comparable,
            layer_group=layout.layer_group,
            scaler_active=scaler_active,
            total_steps=total_steps,
            model_elements=watched.model_elements,
            settings=settings,
        )
        return built.with_paths(upstream)

    def with_tables(self, tables: Collection[int], unused_units: Collection[int] = ()) -> RunLayout:
        """This layout with the parameters at ``tables`` read as lookup tables: their rows are entries, not output
        units (a row no batch reads gets no gradient by design), and a layer whose weights are all tables gets
        sparse gradients, like an embedding: not compared for vanishing gradients. The weights at ``unused_units``
        (a linear layer whose output is read only in part) keep their layer's comparison but are not sampled for
        dead units: the units left out get no gradient by design."""
        if not tables and not unused_units:
            return self
        units = tuple(0 if i in tables or i in unused_units else u for i, u in enumerate(self.param_units))
        dense: dict[int, bool] = {}  # per layer: a units-bearing weight that is not a table
        for i, layer in enumerate(self.layer_of):
            dense[layer] = dense.get(layer, False) or (self.param_units[i] > 0 and i not in tables)
        had_units = {layer for i, layer in enumerate(self.layer_of) if self.param_units[i] > 0}
        comparable = tuple(
            ok and (dense.get(layer, False) or layer not in had_units) for layer, ok in enumerate(self.comparable)
        )
        return dataclasses.replace(self, param_units=units, comparable=comparable)

    def with_paths(self, param_upstream: Sequence[int] | None) -> RunLayout:
        """This layout with the layer-level gradient paths from per-parameter upstream bitmasks."""
        if param_upstream is None or len(param_upstream) != len(self.layer_of) or not self.layers:
            return dataclasses.replace(self, upstream=None)
        params = _bit_matrix(param_upstream, len(self.layer_of))  # [p, q]: parameter q is upstream of p
        # Fold parameters into layers: OR over the columns, then over the rows, of each layer's parameters.
        order = np.argsort(np.asarray(self.layer_of), kind="stable")
        sorted_layers = np.asarray(self.layer_of)[order]
        starts = np.flatnonzero(np.r_[True, sorted_layers[1:] != sorted_layers[:-1]])
        folded = np.logical_or.reduceat(np.logical_or.reduceat(params[order][:, order], starts, axis=1), starts, axis=0)
        above = np.zeros((len(self.layers), len(self.layers)), dtype=bool)  # [a, b]: layer b is upstream of a
        present = sorted_layers[starts]
        above[np.ix_(present, present)] = folded
        np.fill_diagonal(above, False)
        return dataclasses.replace(self, upstream=tuple(_mask_of(row) for row in above))

    @functools.cached_property
    def _above_matrix(self) -> np.ndarray | None:
        """``[b, a]``: layer ``a`` lies upstream of layer ``b`` (None: no graph, layers in order)."""
        if self.upstream is None:
            return None
        return _bit_matrix(self.upstream, len(self.layers))

    def _groups(self, layers: Sequence[int]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for layer in layers:
            groups.setdefault(self.layer_group[layer] if self.layer_group else 0, []).append(layer)
        return groups

    def depth_paths(self) -> list[tuple[int, int, int]]:
        """``(first, last, layers)``: comparable layers at the two ends of one gradient path, and how many
        comparable layers the path has. Paths never cross optimizers or join layers that only meet in a sum."""
        return list(self._depth_paths)

    @functools.cached_property
    def _depth_paths(self) -> tuple[tuple[int, int, int], ...]:
        comparable = [layer for layer, ok in enumerate(self.comparable) if ok]
        paths: list[tuple[int, int, int]] = []
        for members in self._groups(comparable).values():
            if self._above_matrix is None:  # no graph: the layers' order is the path
                if len(members) > 1:
                    paths.append((members[0], members[-1], len(members)))
                continue
            index = np.asarray(members)
            sub = self._above_matrix[np.ix_(index, index)]  # [b, a]: member a is upstream of member b
            sources = np.flatnonzero(~sub.any(axis=1))  # nothing upstream of them
            sinks = np.flatnonzero(~sub.any(axis=0))  # upstream of nothing
            if not len(sources) or not len(sinks):
                continue
            between = sub[sinks].astype(np.float32) @ sub[:, sources].astype(np.float32)  # [sink, source]
            for i, t in enumerate(sinks):
                for j, s in enumerate(sources):
                    if s != t and sub[t, s]:
                        paths.append((members[s], members[t], int(between[i, j]) + 2))
        paths.sort(key=lambda p: -p[2])
        return tuple(paths[:MAX_PATHS])

    def output_layers(self) -> list[int]:
        """Layers nothing else is downstream of within their optimizer: where the loss's gradient arrives first."""
        return list(self._output_layers)

    @functools.cached_property
    def _output_layers(self) -> tuple[int, ...]:
        out: list[int] = []
        for members in self._groups(range(len(self.layers))).values():
            if self._above_matrix is None:
                out.append(members[-1])
                continue
            index = np.asarray(members)
            upstream_of_another = self._above_matrix[np.ix_(index, index)].any(axis=0)
            out += [m for m, upstream in zip(members, upstream_of_another) if not upstream]
        return tuple(sorted(out))


def fused_backward_notes(layout: RunLayout, compiled: Sequence[str], least: int) -> list[str]:
    """Inductor fuses a compiled module's backward into one autograd node: no gradient path links its layers, and
    the depth rule of vanishing_gradients (``least`` dense layers on a path) cannot compare them. One note per
    compiled module (``compiled``: their names) where that hides at least ``least`` layers."""
    on_paths = {layer for first, last, _ in layout.depth_paths() for layer in (first, last)}
    notes = []
    for name in compiled:
        inside = {i for i, layer in enumerate(layout.layers) if layout.comparable[i] and layer.startswith(f"{name}.")}
        if len(inside) >= least and not inside & on_paths:
            notes.append(
                f"vanishing_gradients cannot compare the depth of {name}'s {len(inside)} layers: torch.compile fuses "
                "their backward into one node, so the gradient path between them is unknown (the rule on a "
                "collapsing gradient norm still judges the whole model)."
            )
    return notes


def _bit_matrix(masks: Sequence[int], width: int) -> np.ndarray:
    """Rows of Python-int bitmasks as a boolean matrix ``[row, bit]`` (bit 0 first)."""
    size = (width + 7) // 8
    raw = b"".join(int(mask).to_bytes(size, "little") for mask in masks)
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8).reshape(len(masks), size), axis=1, bitorder="little")
    return bits[:, :width].astype(bool)


def _mask_of(row: np.ndarray) -> int:
    """A boolean row as a Python-int bitmask (bit 0 first)."""
    return int.from_bytes(np.packbits(row, bitorder="little").tobytes(), "little")
