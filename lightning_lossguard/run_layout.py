"""Static facts about the watched model and the run that the detectors need, as plain data (no Lightning).

:class:`RunLayout` says which parameter belongs to which layer, which layers lie on one gradient path
(input side to output side, one optimizer), and :class:`RunSettings` what the run already does
(optimizers, momentum, clipping, schedule), so remedies never advise what is already set.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
        clip_val: ``gradient_clip_val`` when clipping by norm is on.
        accumulate: ``accumulate_grad_batches``.
    """

    optimizers: tuple[str, ...] = ()
    momentum: float = math.nan
    adaptive: bool = False
    scheduler: bool = False
    clip_val: float | None = None
    accumulate: int = 1


@dataclass(frozen=True)
class RunLayout:
    """The watched parameters, their layers and gradient paths, and the run's settings.

    Attributes:
        param_names, param_sizes: per watched parameter.
        param_units: output units for dense weights, 0 otherwise.
        layer_of: parameter index -> layer index; layers: layer names, input side first where known.
        comparable: per layer, a dense weight layer whose norm can be compared across depth.
        layer_group: per layer, the optimizer that steps it (-1 when mixed).
        upstream: per layer, a bitmask of the layers upstream of it on a gradient path (None: unknown).
        total_steps: planned optimizer steps (None when unknown).
        model_elements: elements in all of the model's parameters, trained or frozen.
    """

    param_names: tuple[str, ...] = ()
    param_sizes: tuple[int, ...] = ()
    param_units: tuple[int, ...] = ()
    layer_of: tuple[int, ...] = ()
    layers: tuple[str, ...] = ()
    comparable: tuple[bool, ...] = ()
    layer_group: tuple[int, ...] = ()
    upstream: tuple[int, ...] | None = None
    scaler_active: bool = False
    total_steps: int | None = None
    model_elements: int = 0
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
        units = set(layout.unit_params)
        built = cls(
            param_names=watched.names,
            param_sizes=tuple(p.numel() for p in watched.params),
            param_units=tuple(p.shape[0] if i in units else 0 for i, p in enumerate(watched.params)),
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

    def with_paths(self, param_upstream: Sequence[int] | None) -> RunLayout:
        """This layout with the layer-level gradient paths from per-parameter upstream bitmasks."""
        if param_upstream is None or len(param_upstream) != len(self.layer_of):
            return dataclasses.replace(self, upstream=None)
        layers = [0] * len(self.layers)
        for param, mask in enumerate(param_upstream):
            bits = 0
            for other in _bits(mask):
                bits |= 1 << self.layer_of[other]
            layers[self.layer_of[param]] |= bits & ~(1 << self.layer_of[param])
        return dataclasses.replace(self, upstream=tuple(layers))

    def _above(self, a: int, b: int) -> bool:
        """Layer ``a`` lies upstream of layer ``b`` (by the graph, or by order within one optimizer)."""
        if self.upstream is not None:
            return bool(self.upstream[b] >> a & 1)
        return a < b

    def depth_paths(self) -> list[tuple[int, int, int]]:
        """``(first, last, layers)``: comparable layers at the two ends of one gradient path, and how many
        comparable layers the path has. Paths never cross optimizers or join layers that only meet in a sum."""
        groups: dict[int, list[int]] = {}
        for layer, ok in enumerate(self.comparable):
            if ok:
                group = self.layer_group[layer] if self.layer_group else 0
                groups.setdefault(group, []).append(layer)
        paths: list[tuple[int, int, int]] = []
        for members in groups.values():
            sources = [s for s in members if not any(self._above(o, s) for o in members if o != s)]
            sinks = [t for t in members if not any(self._above(t, o) for o in members if o != t)]
            for s in sources:
                for t in sinks:
                    if s != t and self._above(s, t):
                        between = sum(1 for c in members if c not in (s, t) and self._above(s, c) and self._above(c, t))
                        paths.append((s, t, between + 2))
        paths.sort(key=lambda p: -p[2])
        return paths[:MAX_PATHS]

    def output_layers(self) -> list[int]:
        """Layers nothing else is downstream of within their optimizer: where the loss's gradient arrives first."""
        out = []
        groups = list(self.layer_group) or [0] * len(self.layers)
        for layer in range(len(self.layers)):
            mine = [o for o in range(len(self.layers)) if o != layer and groups[o] == groups[layer]]
            if not any(self._above(layer, o) for o in mine):
                out.append(layer)
        return out


def _bits(mask: int) -> Sequence[int]:
    out = []
    position = 0
    while mask:
        if mask & 1:
            out.append(position)
        mask >>= 1
        position += 1
    return out
