"""``OutputMonitor``: opt-in checks of what the model predicts, for :class:`~lightning_lossguard.LossGuard`.

    guard = LossGuard(monitors=[OutputMonitor()])                        # range and collapse checks
    guard = LossGuard(monitors=[OutputMonitor(feature_layer="backbone.pool")])  # + class separation

Steps hand over their predictions by returning ``{"loss": loss, "preds": preds, "target": target}``
(see :mod:`lightning_lossguard.outputs.convention`). Per batch the monitor only launches device work (a
few reductions, a confusion-matrix update, per-class feature sums); it reads back once per window in
``judge_training`` / ``judge_validation``. Nothing runs when it is not passed to LossGuard.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, apply_overrides
from lightning_lossguard.detectors.high_class_separation import HighClassSeparation
from lightning_lossguard.detectors.output_range_mismatch import KINDS, OutputRangeMismatch
from lightning_lossguard.detectors.prediction_collapse import PredictionCollapse, class_shares
from lightning_lossguard.diagnosis import Diagnosis
from lightning_lossguard.monitor import Monitor
from lightning_lossguard.outputs.confusion_probe import ConfusionProbe
from lightning_lossguard.outputs.convention import Layout, class_labels, describe, resolve, step_pair
from lightning_lossguard.outputs.feature_probe import FeatureProbe
from lightning_lossguard.outputs.heatmap import confusion_image
from lightning_lossguard.outputs.range_probe import RangeProbe
from lightning_lossguard.outputs.similarity import class_separation, linear_cka

OutputKind = Literal["auto", "regression", "probabilities", "logits"]

OUTPUT_DETECTORS: dict[str, type[Detector[Any]]] = {
    cls.code: cls for cls in (OutputRangeMismatch, PredictionCollapse, HighClassSeparation)
}
"""Detector class per code of :class:`OutputMonitor` (not part of the core pipeline's ``DETECTORS``)."""


class OutputMonitor(Monitor):
    """Checks predictions against targets and the geometry of the penultimate features.

    Args:
        kind: what ``preds`` are as the loss sees them: ``"regression"`` (values compared with the target),
            ``"probabilities"`` (in [0, 1]: BCELoss, NLL on probabilities), ``"logits"`` (raw scores:
            cross_entropy, BCEWithLogitsLoss). ``"auto"`` reads class scores with integer targets as logits
            and a float target of the same size as regression; binary outputs need ``kind`` set.
        feature_layer: name of the layer whose output is the penultimate feature vector (as in
            ``model.named_modules()``, relative to the LightningModule, e.g. ``"net.3"``); enables the class
            separation R² (``high_class_separation``) and linear CKA against the first validation.
        cka_samples: validation rows kept for linear CKA against the first validation (0: off). The
            validation loader must not shuffle (Lightning's default), so the rows are the same examples.
        thresholds: per-code threshold overrides, e.g. ``{"prediction_collapse": {"persist": 1}}``.
    """

    codes: ClassVar[tuple[str, ...]] = tuple(OUTPUT_DETECTORS)
    every_batch: ClassVar[bool] = False
    """Its training batches only add to sums (the ranges, the ties at a bound): a sample judges them as well, so it
    sees the batches LossGuard's cost budget times. The work is ~10 passes over the predictions (~0.35 ms a batch
    for 50,000 of them on a CPU core): on every batch it alone cost the corpus VAE's 2.4 ms step ~14%."""

    def __init__(
        self,
        *,
        kind: OutputKind = "auto",
        feature_layer: str | None = None,
        cka_samples: int = 512,
        thresholds: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        if kind != "auto" and kind not in KINDS:
            raise ValueError(f"kind must be 'auto' or one of {', '.join(KINDS)}; got {kind!r}.")
        if feature_layer is not None and (not isinstance(feature_layer, str) or not feature_layer):
            raise ValueError(f"feature_layer must be a layer name from model.named_modules(); got {feature_layer!r}.")
        if isinstance(cka_samples, bool) or not isinstance(cka_samples, int) or cka_samples < 0:
            raise ValueError(f"cka_samples must be an integer >= 0; got {cka_samples!r}.")
        overrides = dict(thresholds or {})
        for code in overrides:
            if code not in OUTPUT_DETECTORS:
                code_info(code)  # an unknown code: the catalog's error lists every code
                raise ValueError(f"{code!r} is not an OutputMonitor code. Allowed: {', '.join(OUTPUT_DETECTORS)}.")
        self.kind = kind
        self.feature_layer = feature_layer
        self.cka_samples = cka_samples
        self.range = OutputRangeMismatch(_thresholds(OutputRangeMismatch, overrides))
        self.collapse = PredictionCollapse(_thresholds(PredictionCollapse, overrides))
        self.separation = HighClassSeparation(_thresholds(HighClassSeparation, overrides))
        self.cka_reference: torch.Tensor | None = None  # feature rows of the first validation (host)
        self._reset_probes()

    def _reset_probes(self) -> None:
        self._range_probe = RangeProbe(self.range.thresholds.margin)
        self._confusion = ConfusionProbe()
        self._features = FeatureProbe(self.feature_layer, self.cka_samples) if self.feature_layer else None
        self._pending: dict[str, Any] = {}  # what log() writes next
        self._notes: list[str] = []
        self._batches = 0
        self._paired = 0
        self._unresolved = ""
        self._classified_in_training = False

    # -- Monitor hooks -----------------------------------------------------------------------------------
    def setup(self, module: nn.Module, device: torch.device) -> None:
        self.teardown()
        self._reset_probes()  # judged state (streaks, CKA reference) survives: it may come from a checkpoint
        if self._features is not None and not self._features.attach(module):
            self._note(self._features.problem)
            self._features = None

    def on_train_batch_end(self, outputs: Any, batch: Any, step: int) -> None:
        layout = self._take_pair(outputs)
        if layout is not None and layout[0].classes >= 2:
            self._classified_in_training = True

    def on_validation_batch_end(self, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        taken = self._take_pair(outputs)
        if taken is None or dataloader_idx != 0 or taken[0].classes < 2:
            if self._features is not None:
                self._features.drop()  # only class targets of the first dataloader are judged
            return
        layout, preds, target = taken
        predicted, truth = class_labels(layout, preds, target)
        self._confusion.add(predicted, truth, layout.classes)
        if self._features is not None:
            self._features.add(truth, layout.classes)

    def _take_pair(self, outputs: Any) -> tuple[Layout, torch.Tensor, torch.Tensor] | None:
        """Per-batch path: host metadata and device launches only."""
        self._batches += 1
        pair = step_pair(outputs)
        if pair is None:
            return None
        preds, target = pair
        self._paired += 1
        layout = resolve(self.kind, preds, target)
        if layout is None:
            self._unresolved = self._unresolved or describe(preds, target)
            return None
        self._range_probe.add(layout, preds, target)
        return layout, preds, target

    def judge_training(self, step: int) -> list[Diagnosis]:
        return self._judge_range(step)

    def judge_validation(self, step: int, epoch: int) -> list[Diagnosis]:
        found = self._judge_range(step)
        confusion = self._confusion.take()
        if confusion is not None:
            found += self.collapse.update(step, epoch, confusion)
            self._pending["confusion"] = confusion
        if self._features is not None:
            found += self._judge_features(step)
        return found

    def _judge_range(self, step: int) -> list[Diagnosis]:
        if self._range_probe.predictions < self.range.thresholds.min_samples:
            return []  # keep adding: judged on a window of at least min_samples predictions
        counts = self._range_probe.take()
        return self.range.update(step, counts) if counts is not None else []

    def _judge_features(self, step: int) -> list[Diagnosis]:
        assert self._features is not None
        taken = self._features.take()
        if taken is None:
            if self._features.problem:
                self._note(self._features.problem)
            return []
        separation = class_separation(taken.sums, taken.counts)
        cka = math.nan
        if taken.rows.shape[0] >= 2:
            if self.cka_reference is None or self.cka_reference.shape[1] != taken.rows.shape[1]:
                self.cka_reference = taken.rows.clone()
            rows = min(self.cka_reference.shape[0], taken.rows.shape[0])
            cka = linear_cka(self.cka_reference[:rows], taken.rows[:rows])
        self._pending["class_separation"] = separation
        self._pending["feature_cka_to_start"] = cka
        classes = int((taken.counts > 0).sum())
        samples = int(taken.counts.sum())
        return self.separation.update(step, separation, samples, classes, self.feature_layer or "", cka)

    def log(self, writers: list[Any], step: int) -> None:
        pending, self._pending = self._pending, {}
        confusion = pending.get("confusion")
        for writer in writers:
            if confusion is not None:
                writer.add_image(
                    "lossguard/outputs/confusion_matrix", confusion_image(confusion), step, dataformats="HWC"
                )
                shares = class_shares(confusion)
                _class_histogram(writer, "lossguard/outputs/predicted_class", shares.predicted, step)
                _class_histogram(writer, "lossguard/outputs/target_class", shares.support, step)
                if math.isfinite(shares.macro_recall):
                    writer.add_scalar("lossguard/outputs/macro_recall", shares.macro_recall, step)
            for name in ("class_separation", "feature_cka_to_start"):
                value = pending.get(name)
                if value is not None and math.isfinite(value):
                    writer.add_scalar(f"lossguard/outputs/{name}", value, step)

    def notes(self) -> list[str]:
        notes = list(self._notes)
        if self._batches and not self._paired:
            notes.append(
                "OutputMonitor saw no predictions: return {'loss': loss, 'preds': preds, 'target': target} from "
                "training_step or validation_step."
            )
        if self._unresolved:
            notes.append(
                f"OutputMonitor could not tell what the predictions are ({self._unresolved}): pass "
                "OutputMonitor(kind='regression'|'probabilities'|'logits')."
            )
        if self._classified_in_training and not self.collapse.evaluations:
            notes.append(
                "prediction_collapse is judged on validation: return preds and target from validation_step too."
            )
        if self._features is not None and not self.separation.evaluations:
            reason = self._features.problem or f"high_class_separation not judged: {self.separation.unjudged()}."
            if reason not in notes:
                notes.append(reason)
        return notes

    def _note(self, text: str) -> None:
        if text and text not in self._notes:
            self._notes.append(text)

    def teardown(self) -> None:
        if self._features is not None:
            self._features.detach()

    # -- checkpointing -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "output_range_mismatch": self.range.state_dict(),
            "prediction_collapse": self.collapse.state_dict(),
            "high_class_separation": self.separation.state_dict(),
            "cka_reference": self.cka_reference.clone() if self.cka_reference is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.range.load_state_dict(state.get("output_range_mismatch", {}))
        self.collapse.load_state_dict(state.get("prediction_collapse", {}))
        self.separation.load_state_dict(state.get("high_class_separation", {}))
        reference = state.get("cka_reference")
        self.cka_reference = reference.clone() if isinstance(reference, torch.Tensor) else None


def _thresholds(cls: type[Detector[Any]], overrides: Mapping[str, Mapping[str, float]]) -> Any:
    return apply_overrides(cls.Thresholds(), overrides.get(cls.code, {}), cls.code)


def _class_histogram(writer: Any, tag: str, counts: np.ndarray, step: int) -> None:
    """Counts per class as a TensorBoard histogram: one bucket per class index."""
    total = float(counts.sum())
    if total <= 0:
        return
    classes = np.arange(len(counts), dtype=np.float64)
    writer.add_histogram_raw(
        tag,
        min=float(classes[counts > 0].min()),
        max=float(classes[counts > 0].max()),
        num=total,
        sum=float((classes * counts).sum()),
        sum_squares=float((classes**2 * counts).sum()),
        bucket_limits=(classes + 0.5).tolist(),
        bucket_counts=counts.tolist(),
        global_step=step,
    )
