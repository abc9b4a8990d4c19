"""``prediction_collapse``: on validation, the model predicts only one or a few of the classes it is shown.

Judged from a validation confusion matrix (rows: true class, columns: predicted class, as torchmetrics
lays it out). A class that occurs often enough is *starved* when it is predicted far less often than it
occurs; the predictions have collapsed when at most a small share of the classes is still predicted and
the starved classes hold a meaningful share of the targets, at several validations in a row. Typical of
cross-entropy on imbalanced data: the model settles on the majority class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class PredictionCollapseThresholds(Thresholds):
    min_samples: int = threshold(50, "Validation predictions needed before judging.")
    min_support: int = threshold(5, "A class counts when it has at least this many validation targets.")
    starved_ratio: float = threshold(
        0.2, "A class is starved when it is predicted less than this fraction as often as it occurs."
    )
    max_predicted_share: float = threshold(
        0.5, "Collapse when the classes still predicted are at most this share of the classes present ..."
    )
    min_missing_share: float = threshold(0.02, "... and the starved classes hold at least this share of the targets.")
    persist: int = threshold(2, "Consecutive validations that must show the collapse.")


@dataclasses.dataclass(frozen=True)
class ClassShares:
    """What a confusion matrix says about each class (plain arrays, one entry per class)."""

    support: np.ndarray  # targets per class
    predicted: np.ndarray  # predictions per class
    recall: np.ndarray  # NaN where a class has no targets
    samples: int

    @property
    def macro_recall(self) -> float:
        present = self.recall[self.support > 0]
        return float(present.mean()) if present.size else float("nan")


def class_shares(confusion: np.ndarray | Sequence[Sequence[float]]) -> ClassShares:
    """Per-class support, predictions and recall from a ``[true, predicted]`` confusion matrix."""
    matrix = np.asarray(confusion, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion must be a square matrix; got shape {matrix.shape}.")
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, np.diag(matrix) / support, np.nan)
    return ClassShares(support, matrix.sum(axis=0), recall, int(matrix.sum()))


class PredictionCollapse(Detector[PredictionCollapseThresholds]):
    """One validation confusion matrix per call; reports a collapse that persists."""

    code = "prediction_collapse"
    Thresholds = PredictionCollapseThresholds

    def __init__(self, thresholds: PredictionCollapseThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.streak = 0
        self.evaluations = 0

    def unjudged(self) -> str | None:
        return None if self.evaluations else "no validation run returned class predictions"

    def update(
        self, step: int, epoch: int, confusion: np.ndarray | Sequence[Sequence[float]], names: Sequence[str] = ()
    ) -> list[Diagnosis]:
        """Judge one validation run. ``names``: optional class names for the message."""
        t = self.thresholds
        shares = class_shares(confusion)
        if shares.samples < t.min_samples:
            return []
        self.evaluations += 1
        n = shares.samples
        present = np.flatnonzero(shares.support >= t.min_support)
        if present.size < 2:
            self.streak = 0
            return []
        q = shares.support / n
        p = shares.predicted / n
        starved = [int(c) for c in present if p[c] < t.starved_ratio * q[c]]
        predicted = present.size - len(starved)
        missing = float(q[starved].sum()) if starved else 0.0
        if predicted > t.max_predicted_share * present.size or missing < t.min_missing_share:
            self.streak = 0
            return []
        self.streak += 1
        if self.streak < t.persist:
            return []
        top = int(np.argmax(p))
        label = _labeller(names)
        shown = ", ".join(label(c) for c in starved[:5]) + (" ..." if len(starved) > 5 else "")
        message = (
            f"On validation the model predicts {predicted} of {present.size} classes: {label(top)} gets "
            f"{p[top]:.0%} of the predictions for {q[top]:.0%} of the targets, while {shown} ({missing:.0%} of "
            f"the targets) {'is' if len(starved) == 1 else 'are'} almost never predicted; macro recall "
            f"{shares.macro_recall:.2f} "
            f"({self.streak} validations in a row)."
        )
        evidence = {
            "classes": present.size,
            "predicted_classes": predicted,
            "starved_classes": len(starved),
            "missing_share": missing,
            "top_class": top,
            "top_pred_share": float(p[top]),
            "top_target_share": float(q[top]),
            "min_recall": float(np.nanmin(shares.recall[present])),
            "macro_recall": shares.macro_recall,
            "samples": n,
            "validations": self.streak,
            "epoch": epoch,
        }
        return [self.diagnosis(step, message, evidence)]


def _labeller(names: Sequence[str]) -> Callable[[int], str]:
    def label(c: int) -> str:
        return f"class {c} ({names[c]})" if c < len(names) else f"class {c}"

    return label
