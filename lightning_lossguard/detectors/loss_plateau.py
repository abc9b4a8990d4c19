"""``loss_plateau``: the training loss never really fell: after a fair share of the run it is still within
``min_improvement`` of its initial level, and it is not slowly falling either.

- The initial level is the median of the very first batches (``start_batches``), so a run that converges
  in ten steps and then sits at its optimum counts as having fallen, as it did.
- A slow, steady decline is progress, however small: a Mann-Kendall trend over the block medians of the
  recent half of the run (``trend_blocks`` at least) with z <= -``z`` (significant against the run's own
  noise) keeps it quiet.
- It is judged only once the run had a fair chance to learn: ``min_steps`` batches, ``judge_fraction`` of
  the planned run (a slow warm-up is not a plateau), and enough batches to resolve a ``min_improvement``
  change against the loss's batch-to-batch noise ((noise / log10(1/(1 - min_improvement)))^2 batches: a very
  noisy loss is judged later, never guessed).

A loss that jumped in its first steps (the median of batches 10-30 ``jump`` times the first three's) and is still
``jump`` times its first batches' level is judged against that start, not against the jump: a fall since the jump,
or a downward trend as a schedule decays the rate, does not make it progress (a decoder at a learning rate x1000 under
the Trainer's clipping went 4.8 -> 37 within a few steps and back to 28-30, judged or not as its report windows fell).

Being stuck has two opposite causes, and the remedies follow the evidence: steps too small (update/weight
ratio tiny) -> raise the learning rate (or, when a schedule took it under ``decayed_lr`` of the run's largest, check
the schedule); steps too large (large updates, or a loss that jumped above its first
batches) -> lower it. Severity follows corroboration: a warning when a second signal says "stuck" (tiny or
huge updates, a jump, almost nothing trainable); with healthy-sized updates and a loss that merely does not
fall (RL, adversarial objectives) it is an info.

One level is a diagnosis of its own, whether the loss got there by falling or not: ln K (K classes, 2 to
``uniform_max_classes``), every one of the latest ``recent_batches`` losses within ``uniform_tolerance`` of it
(and within a tenth of the gap to ln (K + 1), which narrows as K grows). That is the cross entropy of predicting
1/K for every target (ln 2 = 0.6931 for a binary or per-pixel loss, ln 10 = 2.3026 for ten classes; for K a power
of two the message adds the other reading, m binary terms at 1/2 summed, as a skip-gram's six are ln 64), and only a
model whose outputs no longer depend on its input makes it the same on every batch (outputs squashed to one value,
a dead last layer, a blow-up that left only the output bias). A loss with batch noise near ln K, or one falling
through it, is not that; nor is full-batch training (one batch an epoch), whose loss is the same on every step
anyway. Its remedies follow the evidence too: large steps or an early jump put a learning rate too high first, tiny
steps from a start at ln K one too low, and otherwise what the last layer hands the loss.

False-alarm bound: on a loss that falls steadily the trend test lets a plateau through with probability
about 0.023 per report (z = 2) -- a missed plateau, never a false alarm. A fall of ``min_improvement`` or
more counts unless the batch noise explains it and a rank test of the first batches against the latest
shows no hint of a fall (z > -1): high noise makes it wait rather than guess.

A reported plateau (or ln K) that the loss leaves later -- its level at the end of the fit ``min_improvement`` below
both the level reported and the initial level, beyond the batch noise, and, when tiny steps decided it, steps that are
no longer tiny -- gets a note at the end of the fit saying it did not last; the diagnosis itself stands as it was
reported. No such note for a run that broke (a corroborated blow-up).

A run that early stopping ends before it has the batches to judge (full-batch training stops after a few dozen steps)
is judged at the stop on the whole run: a training loss within ``min_improvement`` of its start is a warning when tiny
steps, a frozen model or a first batch at ln K say it is stuck, an info otherwise (a converged model fine-tuned on
more of its data stops the same way), whether the stop waited on a loss or on an accuracy (``mode="max"``). See
:mod:`lightning_lossguard.detectors.stopped_early`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import BlockMedians, fast_median, mann_kendall, median, rank_sum_z
from lightning_lossguard.detectors.tiny_updates import DECAYED_SCHEDULE_REMEDY, decayed_by_schedule, rate_text
from lightning_lossguard.diagnosis import Diagnosis, Severity, format_share


@dataclasses.dataclass(frozen=True)
class LossPlateauThresholds(Thresholds):
    block: int = threshold(10, "Batches per block median.", low=1, high=10_000)
    start_batches: int = threshold(10, "First batches whose median is the initial level.", low=1)
    min_steps: int = threshold(100, "Batches needed before judging (half the run if that is shorter) ...", low=1)
    judge_fraction: float = threshold(0.3, "... and this fraction of the planned training batches.", high=1)
    edge_blocks: int = threshold(3, "Consecutive blocks for the best and the current level.", low=1)
    min_improvement: float = threshold(
        0.05, "Improvement of the best level below this fraction of the initial level is a plateau.", high=1
    )
    z: float = threshold(2.0, "A recent trend with Mann-Kendall z at or below -z is progress.", low=1)
    trend_blocks: int = threshold(8, "The trend is judged on the recent half of the blocks, at least this many.", low=4)
    persist: int = threshold(2, "Consecutive reports that must find the plateau before it is reported.", low=1)
    noise_z: float = threshold(
        1.0, "A fall counts only beyond this many batch-noise standard deviations (in decades) of the loss ...", low=0
    )
    recent_batches: int = threshold(
        50, "... or while the latest batches tend to be lower than the first ones (rank test z <= -1).", low=2
    )
    unstable_noise: float = threshold(
        0.1, "Batch-to-batch spread of log10(loss) above this, with no progress, reads as instability.", open_low=True
    )
    jump: float = threshold(
        2.0, "A loss stuck at this many times its very first batches' level jumped: instability.", low=1
    )
    min_trainable_share: float = threshold(
        1e-2, "Below this share of the model's parameters being trained, the model counts as frozen ...", high=1
    )
    frozen_improvement: float = threshold(
        0.3,
        "... and a fall must reach this fraction of the initial level to count as learning (a slow trend does not).",
        high=1,
    )
    large_update: float = threshold(
        5e-2, "A median update/weight ratio above this means steps are large, not small.", open_low=True
    )
    small_update: float = threshold(
        1e-4, "A median update/weight ratio below this means steps are small.", open_low=True
    )
    uniform_tolerance: float = threshold(
        2e-3,
        "Every one of the latest batches' losses within this fraction of ln K (K classes): the loss of predicting "
        "1/K for every target, the same on every batch, so the outputs ignore the input ...",
        high=0.05,
    )
    uniform_max_classes: int = threshold(1000, "... for K from 2 to this.", low=2)
    decayed_lr: float = threshold(
        1e-3,
        "Small steps at a learning rate below this fraction of the run's largest are told as a schedule that decayed "
        "it away (a per-epoch scheduler stepped every batch), with checking the schedule first.",
        open_low=True,
        high=1,
    )


_STARTED_AT_LEVEL = 0.01
"""A loss whose initial level is within this fraction of ln K started at uniform predictions (it never left them)."""

_RANK_SAMPLE = 30
"""First batches kept for the rank test (more than ``start_batches``: the test needs them, the level does not)."""


def _binary_terms(classes: int) -> str:
    """ln 2^m is also m binary cross entropies at 1/2, summed (a skip-gram's positive and negative pairs): say so."""
    terms = classes.bit_length() - 1
    if classes < 4 or classes != 1 << terms:
        return ""
    return f" (or of 1/2 on each of {terms} binary targets whose losses are summed)"


def uniform_classes(loss: float, t: LossPlateauThresholds) -> int:
    """The K (2 to ``uniform_max_classes``) whose ln K is nearest to ``loss``, or 0 when there is none."""
    classes = round(math.exp(loss)) if 0 < loss < math.log(t.uniform_max_classes) + 1 else 0
    return classes if 2 <= classes <= t.uniform_max_classes else 0


def uniform_tolerance(classes: int, t: LossPlateauThresholds) -> float:
    """How near ln K a loss must be to be at it: ``uniform_tolerance`` of it, and at most a tenth of the gap to
    ln (K + 1) (the two draw together as K grows)."""
    level = math.log(classes)
    return min(t.uniform_tolerance * level, math.log1p(1 / classes) / 10)


class LossPlateau(Detector[LossPlateauThresholds]):
    """Initial vs best and current levels of the loss, with a trend test against the run's own noise."""

    code = "loss_plateau"
    Thresholds = LossPlateauThresholds

    def __init__(self, thresholds: LossPlateauThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.blocks = BlockMedians(int(self.thresholds.block))
        self.first: list[float] = []
        self.recent: list[float] = []  # the latest batch losses, for a rank test against the first ones
        self.noise: list[float] = []  # batch-to-batch spread of log10(loss) per window
        self.best = math.inf
        self.scanned = 0
        self.streak = 0  # consecutive reports that found a plateau
        self.peak_lr = 0.0  # the largest learning rate seen at an update
        self.update_ratio = math.nan  # the latest update/weight ratio measured
        self.judged = False  # the run reached the batches it needs to be judged (a stop before: judged at the stop)

    def unjudged(self) -> str | None:
        need = int(max(self.thresholds.min_steps, 2 * self.thresholds.edge_blocks * self.thresholds.block))
        return None if self.blocks.count >= need else f"needs {need} batches, saw {self.blocks.count}"

    def update(
        self,
        steps: Sequence[int],
        losses: Sequence[float] | np.ndarray,
        total_steps: int | None = None,
        update_ratio: float = math.nan,
        learning_rate: float = math.nan,
        trainable_share: float = math.nan,
        batches_differ: bool = True,
        slowest_lr: float = math.nan,
    ) -> list[Diagnosis]:
        """Add one window of batch losses.

        Args:
            total_steps: the run's planned training batches, over every fit of the record (None when unknown).
            update_ratio: the latest median update/weight ratio (NaN when not measured).
            learning_rate: the current learning rate (the largest parameter group's), quoted in the message.
            slowest_lr: the smallest parameter group's, quoted with it when they differ.
            trainable_share: the share of the model's parameter elements being trained (NaN when unknown).
            batches_differ: False in full-batch training, where every step sees the same data: there a loss that is
                the same on every batch says nothing about the outputs, so ln K is not judged.
        """
        t = self.thresholds
        if math.isfinite(learning_rate):
            self.peak_lr = max(self.peak_lr, learning_rate)
        if math.isfinite(update_ratio):
            self.update_ratio = update_ratio
        values = np.asarray(losses, dtype=np.float64)
        finite = values[np.isfinite(values)]
        missing = max(int(t.start_batches), _RANK_SAMPLE) - len(self.first)
        if missing > 0:
            self.first.extend(finite[:missing].tolist())
        self.recent = (self.recent + finite.tolist())[-int(t.recent_batches) :]
        if finite.size >= 3 and (finite > 0).all():
            self.noise.append(fast_median(np.abs(np.diff(np.log10(finite)))))
            del self.noise[:-20]
        self.blocks.extend(steps, values)
        blocks = self.blocks.values
        k = int(t.edge_blocks)
        # A fair chance also means enough batches to resolve a min_improvement change against the batch noise.
        noise = median(self.noise) if self.noise else 0.0
        resolution = (noise / -math.log10(1 - t.min_improvement)) ** 2
        # min_steps, or half of a short run (a 100-step CI smoke run is judged from step 50).
        least = min(t.min_steps, total_steps / 2) if total_steps else t.min_steps
        needed = max(least, t.judge_fraction * (total_steps or 0), resolution)
        if self.blocks.count < needed or len(blocks) < 2 * k or not steps or not self.first:
            return []
        self.judged = True
        # The first few batches catch a fall within ten steps; more of them a noisy start: the higher counts.
        initial = max(median(self.first[: int(t.start_batches)]), median(self.first))
        current = median(blocks[-k:])
        # Best level: the lowest median of k consecutive blocks, so one lucky block does not count as progress.
        self.scanned = min(self.scanned, len(blocks))  # blocks may have been merged
        for i in range(max(0, self.scanned - k + 1), len(blocks) - k + 1):
            self.best = min(self.best, median(blocks[i : i + k]))
        self.scanned = len(blocks)
        best = self.best
        found = self._judge(
            initial,
            current,
            best,
            update_ratio,
            (learning_rate, slowest_lr),
            int(steps[-1]),
            trainable_share,
            batches_differ,
        )
        self.streak = self.streak + 1 if found else 0
        return found if self.streak >= t.persist else []

    def undone_by(self, diagnosis: Diagnosis) -> str | None:
        """Hindsight on a reported plateau (or a loss at ln K): the training loss began to fall after the report.
        Its level at the end of the fit (the median of the last ``edge_blocks`` blocks, all after the report) is
        ``min_improvement`` (``frozen_improvement`` for an almost frozen model) below both the level reported and the
        initial level, beyond the batch noise (``noise_z``) -- by this detector's own rule no longer a plateau -- and
        a plateau decided on tiny steps is no longer taking them. A slow start that took off late, or a learning rate
        raised in time; the warning stands. None otherwise."""
        t = self.thresholds
        reported = diagnosis.evidence.get("current_loss", math.nan)
        initial = diagnosis.evidence.get("initial_loss", math.nan)
        if not (reported > 0 and initial > 0):
            return None
        if (
            diagnosis.evidence.get("update_ratio", math.nan) < t.small_update
            and not self.update_ratio >= t.small_update
        ):
            return None  # decided on tiny steps that are still tiny: what moves the loss is not learning (RL data)
        frozen = diagnosis.evidence.get("trainable_share", math.nan) < t.min_trainable_share
        enough = t.frozen_improvement if frozen else t.min_improvement
        after = self.blocks.since(diagnosis.step)
        k = int(t.edge_blocks)
        if len(after) < k:
            return None
        end = median([v for _, v in after[-k:]])
        line = min(reported, initial) * (1 - enough)
        first = diagnosis.evidence.get("first_loss", math.nan)
        start = f"from {initial:.4g} at the start"
        if first > 0:  # decided on a jump that never came back: undone only by coming back under jump x its start
            line = min(line, t.jump * first)
            start = f"{first:.4g} in its first batches, {t.jump:g}x that {t.jump * first:.4g}"
        noise = median(self.noise) if self.noise else 0.0
        if not (0 < end <= line and math.log10(reported / end) >= t.noise_z * noise):
            return None
        below = next(
            (
                after[i + k - 1][0]
                for i in range(len(after) - k + 1)
                if median([v for _, v in after[i : i + k]]) <= line
            ),
            after[-1][0],
        )
        return (
            f"{self.code} at step {diagnosis.step} did not last: the training loss, reported at {reported:.4g} "
            f"({start}), fell under {line:.4g} by step {below} and ended the fit at {end:.4g} "
            f"({1 - end / reported:.0%} below the level reported)."
        )

    def _judge(
        self,
        initial: float,
        current: float,
        best: float,
        update_ratio: float,
        rates: tuple[float, float],
        step: int,
        trainable_share: float,
        batches_differ: bool = True,
    ) -> list[Diagnosis]:
        """``rates``: the largest and the smallest parameter group's learning rate."""
        t = self.thresholds
        # With almost nothing trainable (a bias or two), a small early fall is all the model can do.
        frozen = trainable_share < t.min_trainable_share
        enough = t.frozen_improvement if frozen else t.min_improvement
        blocks = self.blocks.values
        if not initial > 0:
            return []  # relative progress means nothing for a loss that is zero or negative by design
        improvement = (initial - best) / initial
        if batches_differ and (uniform := self._uniform(initial, current, trainable_share, update_ratio, step)):
            return [uniform]
        noise = median(self.noise) if self.noise else 0.0
        fell = math.log10(initial / best) if best > 0 else math.inf  # decades
        rank_z = rank_sum_z(self.first, self.recent)
        # A loss that jumped in its first steps and is still ``jump`` times its first batches' level: the initial
        # level above is the jump's (the median of the first batches), so a fall since then is not progress.
        first, early = self._first_and_early()
        never_back = first > 0 and early >= t.jump * first and current >= t.jump * first
        if improvement >= enough and (fell >= t.noise_z * noise or rank_z <= -1) and not never_back:
            return []  # it fell by a fair margin and the noise does not explain it away (or may not): no claim
        if current > initial * (1 + t.min_improvement) * 2:
            return []  # it climbs: loss_divergence's concern
        if current <= best and improvement > 0 and not frozen and not never_back:
            return []  # it is at its best right now: a slow start that has begun to learn, not a plateau
        # The recent half of the blocks (at least trend_blocks): a fall that is over does not make a trend now.
        z = mann_kendall(blocks[-max(int(t.trend_blocks), len(blocks) // 2) :])
        if z <= -t.z and not frozen and not never_back:
            return []  # still falling, slowly but significantly (a frozen model's crawl is not learning)
        remedies: list[str] | None
        corroborated = True
        if frozen:
            message = (
                f"The training loss is stuck at {current:.4g} (from {initial:.4g}, {_better(improvement)}): only "
                f"{format_share(trainable_share)} of the model's parameters are being trained, which cannot fit the "
                "task."
            )
            remedies = [
                "Check which parameters require a gradient and what configure_optimizers passes to the optimizer "
                "(a requires_grad_(False) or a filter that leaves almost everything out).",
                "When fine-tuning, unfreeze more of the model (or add BackboneFinetuning).",
            ]
        else:
            jumped = (first, early) if never_back else None
            message, remedies, corroborated = self._explain(
                initial, current, best, improvement, noise, update_ratio, rates, jumped
            )
        evidence = {
            **({"first_loss": first} if never_back and not frozen else {}),
            "initial_loss": initial,
            "best_loss": best,
            "current_loss": current,
            "improvement": improvement,
            "trend_z": z,
            "noise_decades": noise,
            "update_ratio": update_ratio,
            "trainable_share": trainable_share,
            "batches": self.blocks.count,
        }
        found = self.diagnosis(step, message, evidence, remedies=remedies)
        return [found if corroborated else dataclasses.replace(found, severity=Severity.INFO)]

    def _uniform(
        self, initial: float, current: float, trainable_share: float, update_ratio: float, step: int
    ) -> Diagnosis | None:
        """The loss sits at ln K on every recent batch: the model predicts 1/K for every target. Large steps or an
        early jump put a learning rate too high first among the causes, tiny steps from a start at ln K one too low;
        otherwise the last layer."""
        t = self.thresholds
        classes = uniform_classes(current, t)
        if not classes or len(self.recent) < t.recent_batches:
            return None
        level = math.log(classes)
        tolerance = uniform_tolerance(classes, t)
        farthest = max(abs(v - level) for v in self.recent)
        if farthest > tolerance:
            return None  # a loss still falling through ln K, or one with batch-to-batch noise, is not this
        frozen = (
            f" Only {format_share(trainable_share)} of the model's parameters are being trained."
            if trainable_share < t.min_trainable_share
            else ""
        )
        message = (
            f"The training loss has settled at {current:.5g}, within {format_share(abs(current - level) / level)} of "
            f"ln {classes} = {level:.5g}: the cross entropy of predicting 1/{classes} for every target"
            f"{_binary_terms(classes)}, and it is that "
            f"on every one of the last {len(self.recent)} batches (within {format_share(farthest / level)}; it "
            f"started at {initial:.4g}). "
        )
        started_there = abs(initial - level) <= _STARTED_AT_LEVEL * level
        message += (
            "The model's outputs do not depend on its input (they never did: it started there)."
            if started_there
            else "The model's outputs no longer depend on its input."
        ) + frozen
        last_layer = (
            "Check what the last layer hands the loss: an activation that bounds or squashes the logits (exp, ReLU, "
            "a sigmoid or softmax before a loss that expects raw logits), or a last layer whose inputs are all zero "
            "(dead ReLUs)."
        )
        learning_rate = (
            "Lower the learning rate (try 10x lower): a blow-up early in training can leave every unit dead and only "
            "the output bias learning."
        )
        inputs = "Check that the inputs reach the model (not constant after preprocessing) and that the labels vary."
        first, early = self._first_and_early()
        large, small = self._step_size(update_ratio)
        if large:
            message += (
                f" Each step changes the weights by a median {update_ratio:.2g} of their size: a learning rate far "
                "too high collapsed it."
            )
            remedies = [learning_rate, last_layer, inputs]
        elif first > 0 and early >= t.jump * first:
            message += (
                f" Its loss jumped to {early / first:.3g}x its first batches' level within a few steps: a learning "
                "rate far too high collapsed it."
            )
            remedies = [learning_rate, last_layer, inputs]
        elif started_there and small:
            message += (
                f" Each step changes the weights by a median {update_ratio:.2g} of their size: too little to move the "
                "outputs off a constant."
            )
            remedies = ["Raise the learning rate.", last_layer, inputs]
        else:
            remedies = [last_layer, learning_rate, inputs]
        evidence = {
            "current_loss": current,
            "classes": classes,
            "uniform_loss": level,
            "distance": abs(current - level) / level,
            "farthest_recent": farthest / level,
            "initial_loss": initial,
            "trainable_share": trainable_share,
            "update_ratio": update_ratio,
            "batches": self.blocks.count,
        }
        return self.diagnosis(step, message, evidence, remedies=remedies)

    def _first_and_early(self) -> tuple[float, float]:
        """The level of the very first batches, and where it was a few steps later (NaN before then)."""
        return median(self.first[:3]), median(self.first[10:]) if len(self.first) > 10 else math.nan

    def _step_size(self, update_ratio: float) -> tuple[bool, bool]:
        """Whether the median update/weight ratio says the steps are large, or small (neither when unmeasured)."""
        t = self.thresholds
        measured = math.isfinite(update_ratio)
        return measured and update_ratio > t.large_update, measured and update_ratio < t.small_update

    def _explain(
        self,
        initial: float,
        current: float,
        best: float,
        improvement: float,
        noise: float,
        update_ratio: float,
        rates: tuple[float, float],
        jumped: tuple[float, float] | None = None,
    ) -> tuple[str, list[str] | None, bool]:
        """The message and remedies, and whether a second signal corroborates "stuck" (else it is an info).
        ``jumped``: the first batches' level and the early one, for a loss that jumped and never came back."""
        t = self.thresholds
        learning_rate = rates[0]
        lr = rate_text(*rates)
        what = (
            f"The training loss has not improved: it started at {initial:.4g} and is {current:.4g} after "
            f"{self.blocks.count} batches (best {best:.4g}, {_better(improvement)} than the start), with no "
            "downward trend"
        )
        large, small = self._step_size(update_ratio)
        unstable = [
            "Lower the learning rate (try 10x lower), or add a warm-up.",
            "Clip gradients: Trainer(gradient_clip_val=1.0).",
            "Check that the loss matches the targets (class indices vs one-hot, logits vs probabilities).",
        ]
        if jumped is not None:
            # Tiny updates after a jump are saturated units, not a small learning rate.
            first, early = jumped
            message = (
                f"The training loss has not come back to where it started: it jumped from {first:.4g} in its first "
                f"batches to {early / first:.3g}x that within a few steps{lr}, and after {self.blocks.count} batches "
                f"it is {current:.4g}, still {current / first:.3g}x its start (best since the jump {best:.4g}). The "
                "learning rate is far too high (the blow-up saturated or killed units, so the updates look small "
                "now), not too small."
            )
            return message, unstable[:2], True
        if large:
            spread = f", batch-to-batch spread {noise:.2g} decades" if noise > t.unstable_noise else ""
            message = (
                f"{what}. Each step changes the weights by a median {update_ratio:.2g} of their size{spread}{lr}: "
                "the steps are too large to settle (unstable optimisation), not too small."
            )
            return message, unstable, True
        decayed = decayed_by_schedule(learning_rate, self.peak_lr, t.decayed_lr)
        if small and decayed:
            message = (
                f"{what}; each step changes the weights by a median {update_ratio:.2g} of their size{lr}{decayed}: "
                "a schedule decayed the learning rate away, and the steps are too small to learn."
            )
            return message, [DECAYED_SCHEDULE_REMEDY, *code_info(self.code).remedies[1:]], True
        if small:
            message = (
                f"{what}; each step changes the weights by a median {update_ratio:.2g} of their size{lr}: the steps "
                "are too small to learn."
            )
            return message, None, True  # the catalog's remedies start with raising the learning rate
        message = (
            f"{what}{lr}, though the updates are of a healthy size. Not judged stuck: a loss with moving targets "
            "(RL, adversarial) need not fall; if yours should, check the loss against the targets."
        )
        remedies = [
            "Check that the loss matches the targets (class indices vs one-hot, logits vs probabilities).",
            "Try a learning-rate range test: raise it if updates are tiny, lower it if the loss is noisy.",
        ]
        return message, remedies, False


def _better(improvement: float) -> str:
    """How much better than the start, as a message says it: "2.5% better", or "no better" (not "-0.0% better")."""
    return f"{format_share(improvement)} better" if improvement > 0 else "no better"
