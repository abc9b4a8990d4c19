"""``output_range_mismatch``: the model's outputs cannot reach the targets the loss compares them with.

:class:`~lightning_lossguard.outputs.OutputMonitor` reads predictions and targets from the step outputs and
sums them up on the device; a window of them arrives here as plain counts (:class:`RangeCounts`). Three
patterns, one per output kind:

- ``regression``: many predictions sit exactly at their batch minimum (or maximum), a clamp such as a final
  ReLU, while many targets lie beyond it; or, window after window, no prediction crosses zero while many
  targets lie on the other side (an ``exp``, softplus or sigmoid on an unbounded head: a soft bound with no
  ties);
- ``probabilities``: predictions outside [0, 1] fed to a loss that expects probabilities;
- ``logits``: predictions that already are probabilities (rows in [0, 1] summing to 1 after a softmax, or
  values in [0, 1] after a sigmoid) fed to a loss that expects logits.

False alarms: these are counts of what the predictions can and cannot do, not noise statistics. A healthy
unbounded head with a fifth of its targets below zero puts predictions below zero too; the soft bound must
hold ``sign_windows`` windows in a row, with the predictions reaching zero (``sign_gap``) and the targets
beyond it outnumbering those beyond the other end (``side_ratio``): a young, constant or run-away output fails
one of these. On the healthy corpus (9 regression and reconstruction programs x 3 seeds run with
``OutputMonitor``) it never fired.
"""

from __future__ import annotations

import dataclasses

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.diagnosis import Diagnosis

KINDS = ("regression", "probabilities", "logits")
"""What the predictions are, as the loss sees them."""


@dataclasses.dataclass(frozen=True)
class RangeCounts:
    """One window of step outputs, summed up.

    Attributes:
        kind: one of :data:`KINDS`.
        predictions: prediction values seen.
        targets: target values seen.
        at_floor: predictions tied with their batch minimum, not counting the minimum itself (regression).
        at_ceiling: predictions tied with their batch maximum, likewise.
        below_floor: targets below their batch's smallest prediction by more than the margin.
        above_ceiling: targets above their batch's largest prediction by more than the margin.
        negative_targets: targets below zero by more than the margin (regression).
        positive_targets: targets above zero by more than the margin (regression).
        outside_unit: predictions outside [0, 1] (probabilities).
        squashed: rows (multi-class) or values (binary) that already look like probabilities (logits).
        rows: rows (or values) checked for ``squashed``.
        classes: classes per row (0 for element-wise outputs).
        pred_min, pred_max, target_min, target_max: extremes over the window.
    """

    kind: str
    predictions: int
    targets: int
    at_floor: int = 0
    at_ceiling: int = 0
    below_floor: int = 0
    above_ceiling: int = 0
    negative_targets: int = 0
    positive_targets: int = 0
    outside_unit: int = 0
    squashed: int = 0
    rows: int = 0
    classes: int = 0
    pred_min: float = float("nan")
    pred_max: float = float("nan")
    target_min: float = float("nan")
    target_max: float = float("nan")


@dataclasses.dataclass(frozen=True)
class OutputRangeMismatchThresholds(Thresholds):
    min_samples: int = threshold(256, "Predictions needed in a window before judging.")
    clamped_share: float = threshold(
        0.2, "Regression: share of predictions tied at their batch minimum (or maximum) that makes a clamp ..."
    )
    unreachable_share: float = threshold(0.3, "... when at least this share of the targets lies beyond the clamp ...")
    side_ratio: float = threshold(
        2.0, "... and this many times the share beyond the other end (a constant output is not a clamp)."
    )
    margin: float = threshold(
        0.05, "A target is beyond the clamp only past it by this fraction of its batch's standard deviation."
    )
    sign_share: float = threshold(
        0.2, "Regression, soft bound: share of the targets beyond zero while no prediction crosses it ...", high=1
    )
    sign_gap: float = threshold(
        0.1,
        "... with at most this share of the targets between zero and the nearest prediction (the predictions reach "
        "the bound: a run-away output is not one) ...",
        high=1,
    )
    sign_windows: int = threshold(
        2, "... and side_ratio times the share beyond the other end, in this many windows in a row.", low=1
    )
    outside_share: float = threshold(0.01, "Probabilities: share of predictions outside [0, 1] that is a mismatch.")
    squashed_share: float = threshold(
        0.99, "Logits: share of rows (or values) that already are probabilities (a softmax/sigmoid before the loss)."
    )


class OutputRangeMismatch(Detector[OutputRangeMismatchThresholds]):
    """Judges one window of summed step outputs; stateless apart from the count of windows judged."""

    code = "output_range_mismatch"
    Thresholds = OutputRangeMismatchThresholds

    def __init__(self, thresholds: OutputRangeMismatchThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.windows = 0
        self.sign_streak = 0  # windows in a row with every prediction on one side of zero, the targets beyond

    def update(self, step: int, counts: RangeCounts) -> list[Diagnosis]:
        if counts.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {counts.kind!r}.")
        if counts.predictions < self.thresholds.min_samples:
            return []
        self.windows += 1
        if counts.kind == "regression":
            return self._clamp(step, counts)
        if counts.kind == "probabilities":
            return self._outside(step, counts)
        return self._squashed(step, counts)

    def _clamp(self, step: int, c: RangeCounts) -> list[Diagnosis]:
        t = self.thresholds
        if c.targets == 0:
            return []
        bounded = self._sign_bound(step, c)
        below, above = c.below_floor / c.targets, c.above_ceiling / c.targets
        if below >= above:  # judge the side with more unreachable targets
            side, clamped, beyond, other, bound = "lower", c.at_floor / c.predictions, below, above, c.pred_min
            where, extreme = "below", f"down to {c.target_min:.3g}"
        else:
            side, clamped, beyond, other, bound = "upper", c.at_ceiling / c.predictions, above, below, c.pred_max
            where, extreme = "above", f"up to {c.target_max:.3g}"
        if clamped < t.clamped_share or beyond < t.unreachable_share or beyond < t.side_ratio * other:
            return bounded
        message = (
            f"{clamped:.0%} of the predictions sit exactly at their {side} bound ({bound:.3g}), a clamp such "
            f"as a final ReLU, while {beyond:.0%} of the targets lie {where} it ({extreme}): the model cannot reach "
            "them, and a clamped output passes no gradient back."
        )
        evidence = {
            "clamped_share": clamped,
            "unreachable_share": beyond,
            "other_side_share": other,
            "bound": bound,
            "pred_min": c.pred_min,
            "pred_max": c.pred_max,
            "target_min": c.target_min,
            "target_max": c.target_max,
            "samples": c.predictions,
        }
        return [self.diagnosis(step, message, evidence, subject="clamped output", remedies=_remedies(0))]

    def _sign_bound(self, step: int, c: RangeCounts) -> list[Diagnosis]:
        """No prediction of the window crossed zero while many targets lie beyond it, ``sign_windows`` windows in
        a row. The side test (beyond >= side_ratio x the targets above the largest prediction, or below the
        smallest) keeps a constant or shrunken output, which misses targets on both sides, from counting; the gap
        test keeps a run-away output (all predictions far from zero) from counting."""
        t = self.thresholds
        n = c.targets
        if c.pred_min >= 0:
            beyond, past_extreme, other = c.negative_targets / n, c.below_floor / n, c.above_ceiling / n
            side, bound, where, extreme = "negative", c.pred_min, "below", c.target_min
        elif c.pred_max <= 0:
            beyond, past_extreme, other = c.positive_targets / n, c.above_ceiling / n, c.below_floor / n
            side, bound, where, extreme = "positive", c.pred_max, "above", c.target_max
        else:
            self.sign_streak = 0
            return []
        between = max(0.0, past_extreme - beyond)  # targets between the nearest prediction and zero
        if beyond < t.sign_share or between > t.sign_gap or beyond < t.side_ratio * other:
            self.sign_streak = 0
            return []
        self.sign_streak += 1
        if self.sign_streak != int(t.sign_windows):
            return []  # said once, when the streak reaches its length
        nearest = "smallest" if side == "negative" else "largest"
        message = (
            f"In {self.sign_streak} windows in a row no prediction was {side} (the {nearest} was {bound:.3g}) while "
            f"{beyond:.0%} of the targets lie {where} zero ({extreme:.3g} at the extreme): the output is bounded at "
            "zero (an exp, softplus, ReLU or sigmoid on a regression head) and cannot reach them; near the bound "
            "such an output passes almost no gradient back."
        )
        evidence = {
            "unreachable_share": beyond,
            "between_share": between,
            "other_side_share": other,
            "windows": float(self.sign_streak),
            "pred_min": c.pred_min,
            "pred_max": c.pred_max,
            "target_min": c.target_min,
            "target_max": c.target_max,
            "samples": c.predictions,
        }
        return [self.diagnosis(step, message, evidence, subject="bounded output", remedies=_remedies(0))]

    def _outside(self, step: int, c: RangeCounts) -> list[Diagnosis]:
        share = c.outside_unit / c.predictions
        if share < self.thresholds.outside_share:
            return []
        message = (
            f"{share:.0%} of the predictions fed to a probability loss lie outside [0, 1] (they range from "
            f"{c.pred_min:.3g} to {c.pred_max:.3g}): the outputs are not probabilities."
        )
        evidence = {
            "outside_share": share,
            "pred_min": c.pred_min,
            "pred_max": c.pred_max,
            "target_min": c.target_min,
            "target_max": c.target_max,
            "samples": c.predictions,
        }
        return [self.diagnosis(step, message, evidence, subject="not probabilities", remedies=_remedies(1))]

    def _squashed(self, step: int, c: RangeCounts) -> list[Diagnosis]:
        if c.rows == 0:
            return []
        share = c.squashed / c.rows
        if share < self.thresholds.squashed_share:
            return []
        if c.classes >= 2:
            what = (
                f"{share:.0%} of the prediction rows are already probability distributions (values in [0, 1] "
                "summing to 1): a softmax was applied before a loss that expects logits (cross_entropy applies "
                "log-softmax itself), which squashes its gradients."
            )
        else:
            what = (
                f"{share:.0%} of the predictions lie in [0, 1] where logits are expected: a sigmoid was applied "
                "before a loss that expects logits (binary_cross_entropy_with_logits applies it itself)."
            )
        evidence = {
            "squashed_share": share,
            "pred_min": c.pred_min,
            "pred_max": c.pred_max,
            "classes": c.classes,
            "samples": c.rows,
        }
        return [self.diagnosis(step, what, evidence, subject="probabilities as logits", remedies=_remedies(2))]


def _remedies(first: int) -> list[str]:
    """The catalog's remedies with the one for this pattern first."""
    remedies = list(code_info(OutputRangeMismatch.code).remedies)
    return [remedies[first]] + [r for i, r in enumerate(remedies) if i != first]
