"""Features of one named layer on the validation set: per-class sums (class separation) and a fixed
sample of rows (linear CKA against the first validation). Device work only until :meth:`take`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_lossguard.outputs.similarity import class_sums


@dataclass
class FeatureTake:
    """One validation run's features, on the host."""

    sums: torch.Tensor  # [classes, D] sums of L2-normalised features
    counts: torch.Tensor  # [classes]
    rows: torch.Tensor  # [<= cka_samples, D] the first raw feature rows, in validation order


class FeatureProbe:
    """A forward hook on ``layer`` keeps its latest eval-mode output; each validation batch adds it up.

    Only the reference to the output is kept in the hook (no copy); training-mode calls are ignored, so
    training pays one attribute check per forward.
    """

    def __init__(self, layer: str, cka_samples: int) -> None:
        self.layer = layer
        self.cka_samples = cka_samples
        self.problem = ""  # why features could not be used, for a note
        self._handle: RemovableHandle | None = None
        self._latest: torch.Tensor | None = None
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None
        self._filled = 0
        self.samples = 0

    def attach(self, module: nn.Module) -> bool:
        modules = dict(module.named_modules())
        target = modules.get(self.layer)
        if target is None:
            names = [n for n in modules if n][:12]
            self.problem = (
                f"OutputMonitor: the model has no layer named {self.layer!r} (some layers: {', '.join(names)}); "
                "class separation is not measured."
            )
            return False
        self._handle = target.register_forward_hook(self._keep)
        return True

    def _keep(self, layer: nn.Module, inputs: Any, output: Any) -> None:
        if layer.training:
            return
        if isinstance(output, (tuple, list)) and output:
            output = output[0]
        self._latest = output if isinstance(output, torch.Tensor) else None

    def drop(self) -> None:
        """Forget the latest output (a batch that is not judged)."""
        self._latest = None

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._latest = None

    def add(self, labels: torch.Tensor, classes: int) -> None:
        """Pair the layer's latest output with this batch's class labels (flattened)."""
        features, self._latest = self._latest, None
        if features is None:
            self.problem = self.problem or (
                f"OutputMonitor: layer {self.layer!r} did not run in validation_step; class separation is not measured."
            )
            return
        if features.shape[0] != labels.numel():
            self.problem = self.problem or (
                f"OutputMonitor: layer {self.layer!r} gave {features.shape[0]} feature rows for {labels.numel()} "
                "targets; class separation needs one row per target (name the layer after pooling)."
            )
            return
        sums, counts = class_sums(features, labels, classes)
        if self._sums is None or self._counts is None or self._sums.shape != sums.shape:
            self._sums, self._counts = sums, counts
        else:
            self._sums += sums
            self._counts += counts
        self.samples += labels.numel()
        if self._filled < self.cka_samples:
            flat = features.detach().flatten(1).float()
            if self._rows is None or self._rows.shape[1] != flat.shape[1]:
                self._rows = torch.empty(self.cka_samples, flat.shape[1], device=flat.device)
                self._filled = 0
            take = min(self.cka_samples - self._filled, flat.shape[0])
            self._rows[self._filled : self._filled + take].copy_(flat[:take])
            self._filled += take

    def take(self) -> FeatureTake | None:
        """This validation run's features on the host, and start over. None when nothing was added."""
        sums, counts = self._sums, self._counts
        if sums is None or counts is None or not self.samples:
            return None
        rows = self._rows[: self._filled].cpu() if self._rows is not None else torch.empty(0, sums.shape[1])
        result = FeatureTake(sums.cpu(), counts.cpu(), rows)
        self._sums = self._counts = self._rows = None
        self._filled = self.samples = 0
        return result
