"""``loss_divergence``: the training loss climbs far above where it started and keeps climbing, or falls
without bound (a loss heading to -inf is almost always a flipped sign).

Judged on block medians (minibatch noise and single bad batches do not count) with rank statistics, which
hold for heavy-tailed per-sample losses (batch size 1). A rise must be large (``rise``), significant against
the run's own noise (Mann-Kendall ``z`` over the blocks since the best level, or the level's shift in robust
standard errors, ``level_z``: a climb of a few blocks has no trend to test) and still going on. The message quotes
the statistic that decided.

Some losses rise legitimately (RL targets that move, GAN losses, curricula, a learned temperature), so the
severity follows corroboration: an **error** only when a second, independent signal agrees — the gradient
norm grew ``grad_rise``-fold with the loss — or the loss leaves every plausible range
(``implausible_rise``); a **warning** for a rise of ``warn_rise``-fold with the gradients steady; otherwise
an **info** that says what else was checked. A corroborated rise is judged as one with steady gradients (a
warning from ``warn_rise``-fold, below it an info), not an error, when the run hands
over its ``loss_terms`` (or logs them with ``self.log``: logged scalars whose weighted sum is the loss on every logged
batch, to ``term_sum_tolerance``, count as its terms; :class:`~lightning_lossguard.detectors.logged_terms.LoggedTerms`)
and one that held a fair
share of the start (``term_share``) has fallen well below it
(``term_fall``, beyond its own noise; :class:`~lightning_lossguard.detectors.term_levels.TermLevels`): the
objective is still being learnt, and one term trades off against the others (a VQ-VAE's codebook loss while its
codes catch up with a growing encoder; its total and gradients alone look like a divergence). The term's growth
explains the gradients' then, so they corroborate nothing: the healthy VQ-VAE's total rose 3.5-12.6x and came back
(a warning on two of its three seeds while this was a warning whatever the rise).

False-alarm bound: under exchangeable noise (no trend) the Mann-Kendall test exceeds ``z`` = 3 with probability
about 0.0013 per report, and the level shift exceeds ``level_z`` = 5 robust standard errors with probability below
1e-6 for Gaussian noise of the log loss.

A blow-up that came back down is judged apart: a block median ``warn_rise`` times the loss before any update,
peaking within ``blow_up_within`` steps and since fallen ``recovered``-fold (a learning rate too high for the
start). The loss before any update is the first batch's when it averaged ``first_rows`` samples or more; a
single sample's loss can be near 0 by chance (on the healthy corpus one batch-size-1 run's first loss was 40x
below its later peak), so smaller batches use the median of the first batches that hold that many. A spike of a few
batches hides in its block's median: an orthogonal RNN at a learning rate 1000x too high went 1.28 → 517, 8.3, 276,
456, 40 in its first five updates and sat at ~1.2 after, saturated, with a first block's median only ~6x its start. So
within the first ``blow_up_within`` steps the peak is also the lowest of the ``blow_up_batches`` highest losses of any
block-length run of batches, for batches of ``first_rows`` samples or more (single samples' losses are heavy-tailed
enough that a few in ten far above the first is noise), when it is also ``warn_rise`` times the level the loss came
back to: an energy-based model's loss, near 0 by design, went from 0.000111 in its first batch to a spike of 0.0229 and
back to 0.00089, a drift far from a first value near 0 by chance, not a blow-up.

A reported climb that the loss comes back from (under ``1 + rise`` times its start after the report, and still
there at the end of the fit) gets a note at the end of the fit saying it was a transient; the diagnosis itself stands
as it was reported (it was what the losses said then). Not in a run that broke: after a corroborated blow-up, a loss
back near its start is a model that collapsed (only the output bias learning), not a transient.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import (
    BlockMedians,
    curvature_noise,
    log10_array,
    mann_kendall,
    median,
    theil_sen_slope,
)
from lightning_lossguard.diagnosis import Diagnosis, Severity

UNBOUNDED_FALL_REMEDIES = (
    "Check the sign of the loss: minimise a loss, maximise a score (return -score).",
    "Check that the loss is bounded below (e.g. log of a probability, not of an unbounded output).",
)
"""For a loss that heads to -inf: a score maximised by mistake, or a loss with no lower bound."""


@dataclasses.dataclass(frozen=True)
class LossDivergenceThresholds(Thresholds):
    block: int = threshold(10, "Batches per block median.", low=1, high=10_000)
    min_blocks: int = threshold(5, "Blocks needed before judging.", low=2)
    start_blocks: int = threshold(3, "Blocks whose median is the start level.", low=1)
    rise: float = threshold(
        1.0, "Rise above the start, as a multiple of the start's magnitude (1.0: the loss doubled).", open_low=True
    )
    z: float = threshold(
        3.0, "Mann-Kendall z of the block medians since the best level: how significant the climb must be ...", low=1
    )
    level_z: float = threshold(
        5.0, "... or the rise in decades over the block-to-block noise of the log loss (robust z).", low=1
    )
    trend_blocks: int = threshold(4, "Latest blocks whose trend must still point away from the start.", low=2)
    grad_rise: float = threshold(
        10.0,
        "Growth of the gradient norm that corroborates a rise (error): since the start, or from the loss's best to "
        "the latest block.",
        low=1,
    )
    warn_rise: float = threshold(
        100.0,
        "Uncorroborated rise (x the start; gradients that a trading-off term explains corroborate nothing) that is a "
        "warning; below it, info.",
        low=1,
    )
    term_share: float = threshold(
        0.25,
        "A loss term that held this share of the start (its first block; the terms' magnitudes summed) ...",
        open_low=True,
        high=1,
    )
    term_fall: float = threshold(
        1.2,
        "... and fell this many times below it in the latest block, beyond its own noise (rank-sum z of the two "
        "blocks' values at most -z), makes a corroborated rise a warning (here and in exploding_gradients): one term "
        "trades off against the others while the objective is still learnt.",
        low=1,
    )
    term_sum_tolerance: float = threshold(
        1e-4,
        "Scalars the step logs count as the loss's terms when a positive-weighted sum of them gives the loss on every "
        "logged batch to within this fraction of its size (used when no loss_terms are handed over).",
        open_low=True,
        high=0.01,
    )
    implausible_rise: float = threshold(
        1e4, "Rise (x the start) beyond any plausible range: an error on its own.", low=1
    )
    fall: float = threshold(
        10.0, "Fall below the start into negative values, as a multiple of the start's magnitude.", open_low=True
    )
    recovered: float = threshold(
        3.0, "A blow-up counts once the loss has come back this many times below its peak.", low=1
    )
    blow_up_within: int = threshold(
        100,
        "Steps from the start within which a blow-up peaks: a learning rate too high for the start blows the loss "
        "up in the first updates; a loss that grows for hundreds of steps (rewards propagating through a value "
        "function) and falls back is not that.",
        low=1,
    )
    blow_up_batches: int = threshold(
        3,
        "A blow-up's peak is also the lowest of the highest this many losses of any block-length run of batches in "
        "the first blow_up_within steps (batches of first_rows samples or more): one or two bad batches do not make a "
        "blow-up, a spike of a few does.",
        low=1,
    )
    first_rows: int = threshold(
        8,
        "Samples the reference level of a blow-up averages over: the median loss of the first batches that hold "
        "this many (the first batch alone, whose loss is the one before any update, when it is that large; a "
        "single sample's loss can be near 0 by chance). Three batches when the batch size is unknown.",
        low=1,
        high=10_000,
    )
    plunge: float = threshold(
        100.0,
        "A loss this many times farther below zero than its start's magnitude (at least 1) falls without bound.",
        low=1,
    )
    keep_pace: float = threshold(
        0.5, "A fall is unbounded while its recent rate is at least this share of its earlier rate.", high=1
    )


_TERMS_REMEDY = (
    "If the loss sums terms that can trade off (a VQ-VAE's codebook loss, a KL or adversarial term), log each "
    'with self.log or return them: {"loss": total, "loss_terms": {...}}; a rise of one term while another is still '
    "learnt is then told apart."
)


class LossDivergence(Detector[LossDivergenceThresholds]):
    """Start level vs current level of the block-median loss, its trend, and the gradient norm alongside."""

    code = "loss_divergence"
    Thresholds = LossDivergenceThresholds

    def __init__(self, thresholds: LossDivergenceThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.blocks = BlockMedians(int(self.thresholds.block))
        self.grads = BlockMedians(int(self.thresholds.block))  # log10 of the gradient norm
        self.latest: deque[float] = deque(maxlen=int(self.thresholds.block))  # the last finite batch losses
        self.first: list[float] = []  # the very first finite batch losses: the level before anything happened
        self.peak: list[float] = []  # [highest block median, its step]
        self.early: list[list[float]] = []  # [step, loss] of the finite losses within blow_up_within of the start
        self.spike: list[float] = []  # [highest blow_up_batches-th highest loss of a block-length run there, its step]
        self.first_batch_rows = 0  # samples in the first batch, as the callback saw them (0: unknown)

    def unjudged(self) -> str | None:
        need = int(self.thresholds.min_blocks * self.thresholds.block)
        return None if self.blocks.count >= need else f"needs {need} batches, saw {self.blocks.count}"

    def update(
        self,
        steps: Sequence[int],
        losses: Sequence[float] | np.ndarray,
        grad_steps: Sequence[int] = (),
        grad_norms: Sequence[float] | np.ndarray = (),
        first_batch_rows: int = 0,
        trade_off: str | None = None,
    ) -> list[Diagnosis]:
        """Judge one window. ``trade_off``: what the loss's terms did (:class:`TermLevels`): None when the run hands
        over none, "" when none of them is still being learnt."""
        t = self.thresholds
        if not self.first_batch_rows:
            self.first_batch_rows = int(first_batch_rows)
        known = len(self.blocks.values)
        self.blocks.extend(steps, losses)
        finite = [v for v in np.asarray(losses, dtype=np.float64).tolist() if math.isfinite(v)]
        self.latest.extend(finite)
        self.first.extend(finite[: max(0, max(3, int(t.first_rows)) - len(self.first))])
        for value, step in zip(self.blocks.values[known:], self.blocks.steps[known:]):
            if not self.peak or value > self.peak[0]:
                self.peak = [value, float(step)]
        self._spike(steps, losses)
        if len(grad_steps):
            self.grads.extend(grad_steps, log10_array(grad_norms))
        values = self.blocks.values
        if not steps or not self.latest:
            return []
        k = int(t.start_blocks)
        decided = int(steps[-1])
        if len(values) < t.min_blocks:
            # Too early for trend statistics; only a fall far beyond any bounded objective counts (a flipped sign
            # that reaches NaN within a few dozen steps; under a line search, within a few steps: before a single
            # block of finite losses, so the start is then the loss before any update).
            start = median(values[: min(k, len(values) - 1)]) if len(values) >= 2 else self.first[0]
            return self._plunging(decided, start, median(self.latest))
        start = median(values[: min(k, len(values) - 1)])
        current = median(values[-k:])
        scale = abs(start) if start != 0 else max(abs(current), 1e-12)
        recent = max(2, int(t.trend_blocks))
        slope = theil_sen_slope(self.blocks.steps[-recent:], values[-recent:])
        if current >= start + t.rise * scale and slope > 0 and start > 0:
            return self._rising(decided, start, current, trade_off)
        # A loss near zero by design (a negative cosine, a critic's score) falls in absolute terms: scale at least 1.
        if current < 0 and current <= start - t.fall * max(scale, 1.0) and slope < 0:
            return self._falling(decided, start, current) or self._plunging(decided, start, current)
        return self._blew_up(decided, current)

    def undone_by(self, diagnosis: Diagnosis) -> str | None:
        """Hindsight on a reported climb: the training loss came back under the line it had crossed (``1 + rise``
        times its start) after the report, and its level at the end of the fit (the median of the last
        ``start_blocks`` blocks) is under it too. By this detector's own rule the run ended without a divergence, so
        the report was a transient (a VQ-VAE's codebook term that climbs while its codes catch up, then falls back).
        None otherwise, and for a blow-up (already one that came down) or a fall."""
        start = diagnosis.evidence.get("start_loss", math.nan)
        if "rise_factor" not in diagnosis.evidence or not start > 0:
            return None
        line = start * (1 + self.thresholds.rise)
        after = self.blocks.since(diagnosis.step)
        k = int(self.thresholds.start_blocks)
        if len(after) < k:
            return None
        end = median([v for _, v in after[-k:]])
        back = next((s for s, v in after if v < line), None)
        if back is None or not end < line:
            return None
        risen = diagnosis.evidence.get("current_loss", math.nan)
        return (
            f"{self.code} at step {diagnosis.step} was a transient: the training loss, reported at {risen:.4g} "
            f"({risen / start:.3g}x its start {start:.4g}), came back under {1 + self.thresholds.rise:g}x its start "
            f"({line:.4g}) at step {back} and ended the fit at {end:.4g}."
        )

    def _spike(self, steps: Sequence[int], losses: Sequence[float] | np.ndarray) -> None:
        """Keep the first ``blow_up_within`` steps' losses and raise the peak to a spike of ``blow_up_batches`` of
        them within one block's length: a blow-up that lasts a few batches hides in its block's median. Only for
        batches that average ``first_rows`` samples or more: single samples' losses are heavy-tailed enough that a
        few in ten far above the first ones is noise."""
        t = self.thresholds
        if self.first_batch_rows < t.first_rows:
            return
        start = self.early[0][0] if self.early else None
        kept = len(self.early)
        for step, value in zip(steps, np.asarray(losses, dtype=np.float64).tolist()):
            if not math.isfinite(value):
                continue
            start = step if start is None else start
            if step - start <= t.blow_up_within:
                self.early.append([float(step), value])
        if len(self.early) == kept:
            return  # past the first steps: nothing new to look at
        k, size = int(t.blow_up_batches), int(t.block)
        for i in range(max(0, kept - size + 1), max(0, len(self.early) - size + 1)):  # the runs with a new loss
            run = sorted(self.early[i : i + size], key=lambda row: row[1])
            if len(run) >= k and (not self.spike or run[-k][1] > self.spike[0]):
                self.spike = [run[-k][1], run[-k][0]]

    def _blew_up(self, decided: int, current: float) -> list[Diagnosis]:
        """The loss shot up ``warn_rise``-fold above its very first batch (or batches) and came back down: a
        blow-up in the first steps (a learning rate far too high for the start) that left the model damaged."""
        t = self.thresholds
        rows = self.first_batch_rows
        batches = 3 if rows <= 0 else math.ceil(t.first_rows / rows)  # the first batches that hold first_rows
        single = batches == 1
        first = median(self.first[:batches])  # NaN before any finite loss
        if not (first > 0 and current > 0):
            return []
        # A block's median that came back recovered-fold; or a spike of a few batches that towers warn_rise-fold over
        # the level it came back to as well (a loss near 0 by design drifts far from a first value near 0 by chance).
        for candidate, back in ((self.peak, t.recovered), (self.spike, t.warn_rise)):
            if not candidate:
                continue
            peak, at = candidate
            if peak >= t.warn_rise * first and peak >= back * current and at - self.blocks.steps[0] <= t.blow_up_within:
                break
        else:
            return []  # no blow-up, still up there (the rising rule's concern), or a slow climb and fall
        factor = peak / first
        message = (
            f"The training loss blew up from {first:.4g} in its first {'batch' if single else 'batches'} to "
            f"{peak:.4g} ({factor:.3g}x) around "
            f"step {at:.0f}, then came back down to {current:.4g}: the learning rate is far too high for the start "
            "of training, and the blow-up may have damaged the model."
        )
        remedies = [
            "Lower the learning rate, or add a warm-up (a few hundred steps from a small rate).",
            "Clip gradients: Trainer(gradient_clip_val=1.0).",
            "Check the scale of the inputs and the initialisation of new layers (a new head on large features).",
        ]
        evidence = {"first_loss": first, "peak_loss": peak, "peak_step": at, "current_loss": current, "factor": factor}
        severity = Severity.ERROR if factor >= t.implausible_rise else Severity.WARNING
        found = self.diagnosis(decided, message, evidence, subject="blow-up", remedies=remedies)
        return [dataclasses.replace(found, severity=severity)]

    def _plunging(self, decided: int, start: float, current: float) -> list[Diagnosis]:
        """A loss ``plunge`` times below zero farther than its start's magnitude (at least 1): no bounded
        objective does that."""
        t = self.thresholds
        scale = max(abs(start), 1.0)
        if not (current < 0 and abs(current) >= t.plunge * scale):
            return []
        return self._report_fall(decided, start, current, math.nan, "fell")

    def _rising(self, decided: int, start: float, current: float, terms: str | None) -> list[Diagnosis]:
        """``terms``: what the loss's terms did (``update``'s ``trade_off``)."""
        t = self.thresholds
        values, at = self.blocks.values, self.blocks.steps
        best = int(np.argmin(values))
        # The crossing of the climb being reported: after the best level (an early fall starts above the line too).
        line = start + t.rise * abs(start)
        first = next((s for s, v in zip(at[best:], values[best:]) if v >= line), None)
        if first is None:
            return []  # the latest block is a new best: the recent median is high, but nothing climbs from there
        z = mann_kendall(values[best:])
        factor = current / start
        k = int(t.start_blocks)
        logs = [math.log10(v) for v in values if v > 0]
        noise = curvature_noise(logs) * math.sqrt(2 / k)  # standard error of the difference of two k-block medians
        level_z = math.log10(factor) / noise if noise > 0 else math.inf
        if z < t.z and level_z < t.level_z and factor < t.implausible_rise:
            return []  # not significant against the run's own noise
        growth = self._grad_growth(at[best])
        corroborated = growth >= t.grad_rise
        trade_off = terms if corroborated and factor < t.implausible_rise else ""
        # A trading term explains the gradients' growth: then they corroborate nothing (a rise with steady gradients).
        if (corroborated and not trade_off) or factor >= t.implausible_rise:
            severity = Severity.ERROR
        elif factor >= t.warn_rise:
            severity = Severity.WARNING
        else:
            severity = Severity.INFO
        if math.isnan(growth):
            grad_text = "the gradient norm was not measured"
        elif corroborated:
            grad_text = f"the gradient norm grew {growth:.3g}x with it"
        else:
            grad_text = f"the gradient norm changed only {growth:.3g}x and every value is finite"
        message = (
            f"The training loss rose from {start:.4g} to {current:.4g} ({factor:.3g}x its start; best "
            f"{min(values):.4g}) and is still rising ({self._significance(z, level_z)}); it crossed "
            f"{1 + t.rise:g}x the start at step {first}; {grad_text}."
        )
        remedies = None
        if trade_off:
            message += f" But {trade_off}, so it is not judged a divergence."
            remedies = [
                "If that term should not grow this far, lower the learning rate or its weight in the total.",
                "Watch the terms in TensorBoard; a run that keeps learning needs nothing.",
            ]
        elif severity is Severity.ERROR and terms is None and factor < t.implausible_rise:
            remedies = [*code_info(self.code).remedies, _TERMS_REMEDY]
        if severity is Severity.INFO and not trade_off:
            message += (
                " Not judged a divergence: objectives with moving targets (RL), adversarial or curriculum losses "
                "rise legitimately. If yours should fall, lower the learning rate."
            )
        evidence = {
            "start_loss": start,
            "best_loss": min(values),
            "current_loss": current,
            "rise_factor": factor,
            "trend_z": z,
            "level_z": level_z,
            "grad_growth": growth,
            "first_step": first,
        }
        found = self.diagnosis(decided, message, evidence, remedies=remedies)
        return [dataclasses.replace(found, severity=severity)]

    def _significance(self, z: float, level_z: float) -> str:
        """The statistic that made the rise significant, as the message quotes it: the climb's trend, else the
        level's shift against the run's own noise, else a rise no training loss makes (a climb of a few blocks has
        no trend z to speak of: under four blocks it is 0)."""
        t = self.thresholds
        if z >= t.z:
            return f"trend z={z:.1f} since its best"
        if level_z >= t.level_z:
            if not math.isfinite(level_z):
                return "a level shift the run's block-to-block noise cannot explain"
            return f"level z={level_z:.3g} against the run's block-to-block noise"
        return f"beyond {t.implausible_rise:g}x its start, past any plausible training loss"

    def _falling(self, decided: int, start: float, current: float) -> list[Diagnosis]:
        t = self.thresholds
        values, at = self.blocks.values, self.blocks.steps
        n = len(values)
        top = int(np.argmax(values))
        z = mann_kendall(values[top:])
        if z > -t.z or n - top < 6:
            return []
        third = max(2, (n - top) // 3)
        earlier = theil_sen_slope(at[top : top + 2 * third][-third:], values[top : top + 2 * third][-third:])
        later = theil_sen_slope(at[-third:], values[-third:])
        if not (earlier < 0 and later < 0 and later <= t.keep_pace * earlier):
            return []  # the fall slows down: a loss that is negative by design converging to its bound
        return self._report_fall(decided, start, current, z, "keeps falling as fast lately as before")

    def _report_fall(self, decided: int, start: float, current: float, z: float, how: str) -> list[Diagnosis]:
        t = self.thresholds
        factor = abs(current) / max(abs(start), 1e-12)
        message = (
            f"The training loss {how} ({start:.4g} -> {current:.4g}) and does not level off: it falls without "
            "bound. A loss that heads to -inf is usually maximised by mistake (negated sign) or unbounded below."
        )
        remedies = [*UNBOUNDED_FALL_REMEDIES, "Lower the learning rate."]
        evidence = {"start_loss": start, "current_loss": current, "trend_z": z, "fall_factor": factor}
        severity = Severity.ERROR if factor >= t.implausible_rise else Severity.WARNING
        found = self.diagnosis(decided, message, evidence, subject="falling", remedies=remedies)
        return [dataclasses.replace(found, severity=severity)]

    def _grad_growth(self, best_step: float) -> float:
        """How many times the gradient norm grew with the loss (NaN when unmeasured): between the start and now
        (k blocks each), or between the blocks up to the loss's best and the latest block, whichever is more. The
        second sees a blow-up of the last few dozen steps after a long fall, which k-block medians smooth away."""
        grads, at = self.grads.values, self.grads.steps
        k = int(self.thresholds.start_blocks)
        if len(grads) < 2:
            return math.nan
        since_start = median(grads[-k:]) - median(grads[:k])
        upto = [v for s, v in zip(at, grads) if s <= best_step][-k:]
        since_best = grads[-1] - median(upto) if upto and at[-1] > best_step else -math.inf
        return float(10 ** max(since_start, since_best))
