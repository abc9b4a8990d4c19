"""``high_class_separation``: the penultimate features are strongly separated by class.

Kornblith et al., "Why do better loss functions lead to less transferable features?": objectives that beat
softmax cross-entropy on the original task (label smoothing, logit penalties, cosine softmax, ...) raise
the class separation R² of the penultimate layer, and their fixed features transfer worse to new tasks;
the differences sit in the last few layers and mostly vanish when the whole network is fine-tuned. The
R² itself is computed by :func:`lightning_lossguard.outputs.class_separation`; this detector only judges
it. An ``info``: high separation is good for this task, and only matters if the features will be reused.
"""

from __future__ import annotations

import dataclasses
import math

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class HighClassSeparationThresholds(Thresholds):
    max_separation: float = threshold(
        0.5, "Class separation R² above this is reported (plain softmax cross-entropy gives the lowest)."
    )
    min_samples: int = threshold(50, "Validation samples with features needed before judging.")
    min_classes: int = threshold(2, "Classes present in those samples needed before judging.")


class HighClassSeparation(Detector[HighClassSeparationThresholds]):
    """One class-separation measurement per validation run."""

    code = "high_class_separation"
    Thresholds = HighClassSeparationThresholds

    def __init__(self, thresholds: HighClassSeparationThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.first = math.nan  # R² at the first measured validation
        self.evaluations = 0

    def unjudged(self) -> str | None:
        return None if self.evaluations else "no validation run gave features with class targets"

    def update(
        self,
        step: int,
        separation: float,
        samples: int,
        classes: int,
        layer: str = "",
        cka_to_start: float = math.nan,
    ) -> list[Diagnosis]:
        t = self.thresholds
        if samples < t.min_samples or classes < t.min_classes or not math.isfinite(separation):
            return []
        self.evaluations += 1
        if math.isnan(self.first):
            self.first = separation
        if separation <= t.max_separation:
            return []
        where = f"'{layer}'" if layer else "the penultimate layer"
        drift = (
            f"; linear CKA with the features of the first validation is {cka_to_start:.2f}"
            if math.isfinite(cka_to_start)
            else ""
        )
        message = (
            f"Class separation of the features at {where} is R²={separation:.2f} (above {t.max_separation:g}; "
            f"{self.first:.2f} at the first validation){drift}: the classes form tight, well-separated clusters. "
            "Good for this task's accuracy, but Kornblith et al. found such features transfer worse to new tasks "
            "as fixed features."
        )
        evidence = {
            "class_separation": separation,
            "first_separation": self.first,
            "cka_to_start": cka_to_start,
            "samples": samples,
            "classes": classes,
        }
        return [self.diagnosis(step, message, evidence, subject=layer)]
