"""``dead_gradients``: parameters whose gradient is exactly zero for many consecutive steps, or layers
where most output units get no gradient (dead ReLUs). A unit is a row of a weight (a linear layer's output
feature, a convolution's output channel), and a column of a transposed convolution's weight (``[in, out, ...]``;
one with groups is not sampled for units: a column there mixes a channel of every group).

Only watched parameters count: frozen ones (``requires_grad=False``) are never watched, and a step where
a parameter had no gradient at all (``grad is None``) neither extends nor breaks its streak. Watched parameters that
have had no gradient at all on any measured step for ``absent_steps`` optimizer steps and ``absent_share`` of a run
of known length, while others had theirs, are cut off from the loss: an info, since a feature extractor run under
``torch.no_grad()`` without being frozen (as Lightning's own transfer-learning example does) looks the same as a
stray ``.detach()``. In the healthy corpus, every step measured, no parameter is without a gradient that long but
the prototypes SwAV holds for its first 60 of 240 steps (a quarter of its run); sampled as the budget does, a
mixture-of-experts expert routed on 4% of the steps was missed by every sampled step in 5 of 36 samplings.

Where the gradient stops tells the cause: when even the output layer gets none, nothing reaches the
model from the loss (a flat region of the loss, an output activation that cannot reach the targets, a
detached graph) — unless layers before it still get theirs: then its gradient is cleared after backward
(code that freezes it for a while, a hook) or its input is zero; when only hidden layers are dead, their
units never activate (initialisation, biases, a learning rate that knocked them out). Units that were
alive in the run's first sample (each optimizer's parameters are sampled at its own step), or a loss that
jumped well above its first batches, blame a learning rate far too high. The first batches' level is their median,
or the first batch's loss alone when the next two are both ``blowup`` times it: a first update that blew the loss up
(a learning rate x1000 does it in one step) would otherwise be its own reference. Only layers upstream of the dead
one on the autograd graph starve because of it; dead layers on another path (another head, another
optimizer's network) are named apart. Weights that
``torch.nn.utils.prune`` masks (Lightning's ``ModelPruning``) get no gradient by design: they are not judged, and
the report notes it. Nor are the rows of lookup tables (embeddings, and any parameter the autograd graph reads row
by row: a learned position table sliced to the sequence, a codebook indexed by codes): a row no batch reads gets no
gradient, and it is an entry, not a unit. Nor are the units of a linear layer whose output is read only in part (a
wider head sliced to the classes in use): the units left out get no gradient by design. Nor is a parameter whose
layer still gets a gradient through another of its parameters: a dead unit zeroes both its weights' and its bias's
gradients, so a bias at exactly zero beside a weight that is not has per-sample gradients that cancel over the batch
(a hinge loss with every sample inside the margin on both sides gives its output bias -1 + 1 = 0). Nor are output
units, or a whole model, without gradient once the loss has fallen to a small share of its first batches' level
(not through zero: a loss that turned negative has no floor it could have reached): a
loss with a flat region (a hinge, a margin, a clamp) gives exactly zero gradient to the outputs whose samples cleared
it, so a fitted classifier's output rows go quiet class by class. A bug that starves the outputs (a final activation
that cannot reach the targets, a detached graph, a learning rate that knocked them out) leaves the loss high.
Hidden units dead from the run's first sample (in every layer found, each with some units still alive, and no
parameter at zero) under a loss fitted all the same are an info: the live units carry the fit, the dead ones cost
capacity (a neural field whose near-zero hash features leave most of a ReLU layer off from the start fits well).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.diagnosis import Diagnosis, Severity, first_few
from lightning_lossguard.signals.gradients import NO_GRADIENT


@dataclasses.dataclass(frozen=True)
class DeadGradientsThresholds(Thresholds):
    min_steps: int = threshold(25, "Consecutive optimizer steps with an exactly-zero gradient norm.")
    unit_share: float = threshold(0.7, "Share of output units with an all-zero gradient that makes a layer dead ...")
    unit_samples: int = threshold(2, "... in this many consecutive report-step samples.")
    min_units: int = threshold(8, "Layers with fewer output units are not judged by unit share.")
    min_weight_share: float = threshold(
        0.01, "Parameters dead from the start count only if they hold this share of the weights (or die later).", high=1
    )
    jump: float = threshold(
        2.0, "A loss this many times above its first batches' level blames a learning rate far too high.", low=1
    )
    output_steps: int = threshold(
        10, "Zero-gradient steps of the output layer that mean no gradient reaches the model."
    )
    absent_steps: int = threshold(
        50,
        "Optimizer steps (first to latest measured) in which a watched parameter never had a gradient (grad is "
        "None) while others had theirs: reported as cut off from the loss (an info).",
    )
    absent_share: float = threshold(
        0.5,
        "... and this share of the planned optimizer steps, when known (SwAV and DINO hold a layer's gradient at None "
        "for their first steps on purpose).",
        high=1,
    )
    blowup: float = threshold(
        10.0,
        "The second and third batches' losses both this many times the first's: the first update blew the loss up, "
        "and the first batch, the only one no update touched, is alone the first batches' level.",
        low=1,
    )
    fitted: float = threshold(
        0.1,
        "A loss at or below this share of its first batches' level (and not below zero) has been fitted: output "
        "units without gradient then cleared a flat region of the loss (a hinge's margin met), they did not die; "
        "hidden units dead from the first sample cost capacity, not learning (an info).",
        high=1,
    )


_FLAT_LOSS_REMEDIES = (
    "Smooth the loss: Huber/SmoothL1 instead of a hinge or clamp with a flat region.",
    "Make the output activation match the targets (no final ReLU for negative targets, no sigmoid for values "
    "outside [0, 1]).",
    "Look for .detach(), torch.no_grad() or integer casts between the model and the loss.",
)

_ABSENT_REMEDIES = (
    "If they should learn, look for a .detach(), torch.no_grad() or an unused submodule between them and the loss.",
    "If they are meant to stay fixed (a feature extractor run under torch.no_grad()), freeze them: "
    "module.requires_grad_(False), or freeze() on a LightningModule, and leave them out of configure_optimizers.",
    "In a mixture of experts, an expert the router sends no tokens to gets no gradient: check the router's load "
    "balance (an auxiliary balancing loss, a capacity factor).",
)

_SPARE_REMEDIES = (
    "Nothing to fix if the fit is good enough. For the capacity back: LeakyReLU/GELU in the named layer, or an "
    "initialisation that spreads its inputs (the inputs it sees may be almost the same for every sample).",
    "Check the initialisation and biases of the named layer (very negative biases kill ReLUs).",
)

_CLEARED_REMEDIES = (
    "If code clears this layer's gradient on purpose for a while (DINO and SwAV freeze their last layer in the first "
    "epoch), set p.grad = None instead of zeroing it: LossGuard does not judge a step without a gradient.",
    "Look for hooks or code after backward that zero or overwrite the gradient, and for an input to the layer that is "
    "all zeros.",
)


class DeadGradients(Detector[DeadGradientsThresholds]):
    """Zero-gradient streaks per parameter, and dead-unit shares sampled on report steps."""

    code = "dead_gradients"
    Thresholds = DeadGradientsThresholds

    def __init__(self, thresholds: DeadGradientsThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.streak: list[int] = []
        self.streak_start: list[int] = []
        self.unit_streak: list[int] = []
        self.last_share: list[float] = []
        self.first_share: list[float] = []  # the run's first sample: were the units alive at the start?
        self.first_step = -1  # the first optimizer step seen: did a dead parameter have a gradient before?
        self.rows_seen = 0
        self.had_gradient: list[bool] = []  # per parameter: a non-zero gradient seen at some step
        self.had_any: list[bool] = []  # per parameter: a gradient (zero included) seen at some step
        self.any_since = -1  # the first step ``had_any`` covers
        self.any_rows = 0  # measured steps since then
        self.absent_told = False

    def unjudged(self) -> str | None:
        need = int(self.thresholds.min_steps)
        return None if self.rows_seen >= need else f"needs {need} optimizer steps, saw {self.rows_seen}"

    def update(
        self,
        steps: Sequence[int],
        param_norms: np.ndarray,
        names: Sequence[str],
        sizes: Sequence[int],
        layer_names: Sequence[str],
        depth: Sequence[int],
        unit_share: np.ndarray | None = None,
        units: Sequence[int] = (),
        outputs: Sequence[int] | None = None,
        loss_jump: float = math.nan,
        first_share: np.ndarray | None = None,
        upstream: Sequence[int] | None = None,
        pruned: Sequence[bool] = (),
        planned_steps: int | None = None,
    ) -> list[Diagnosis]:
        """Judge one window.

        Args:
            param_norms: ``[steps, params]``; exactly 0 is a zero gradient, -1 no gradient.
            sizes: elements per parameter; layer_names: the layer of each parameter; depth: the position
                of that layer from the input side.
            outputs: parameters of the output layers (where the loss's gradient arrives first); default: the
                deepest layer.
            loss_jump: the current loss level over the level of the very first batches: a loss that jumped
                (>= ``jump``) says a learning rate far too high knocked the units out; one at or below ``fitted``
                says silent outputs cleared the loss.
            first_share: the first dead-unit sample of this window; the run's very first one is kept, to tell
                units that were alive at the start (and died in training) from units dead from the start.
            upstream: per layer (the values of ``depth``), a bitmask of the layers upstream of it on a gradient path
                (None: unknown, a lower depth counts as upstream). Only those starve because of a dead layer.
            pruned: per parameter, masked by pruning (its columns are "no gradient" by design: never called cut off).
            planned_steps: the run's planned optimizer steps (None: unknown).

            unit_share: latest report-step sample, per parameter, of the share of dead output units
                (-1 where not sampled); units: output units per parameter.
        """
        t = self.thresholds
        p = len(names)
        if len(self.streak) != p:
            self.streak, self.streak_start, self.unit_streak = [0] * p, [0] * p, [0] * p
        if len(self.had_gradient) != p:
            self.had_gradient = [False] * p
        streak = np.asarray(self.streak, dtype=np.int64)
        start = np.asarray(self.streak_start, dtype=np.int64)
        rows = np.asarray(param_norms)
        if len(rows):
            if self.first_step < 0:
                self.first_step = int(steps[0])
            self.rows_seen += len(rows)
            # Per parameter: zeros extend the streak, a (non-zero, present) gradient resets it, "no gradient"
            # leaves it alone. Count the zeros after the last reset of this window.
            index = np.arange(len(rows))[:, None]
            zero = rows == 0.0
            last_reset = np.where(~zero & (rows != NO_GRADIENT), index, -1).max(axis=0)
            after = zero & (index > last_reset)
            zeros_after = after.sum(axis=0)
            restarted = (last_reset >= 0) | (streak == 0)
            first_zero = np.where(after, index, len(rows)).min(axis=0)
            step_of = np.asarray(steps, dtype=np.int64)[np.minimum(first_zero, len(rows) - 1)]
            start = np.where(restarted & (zeros_after > 0), step_of, start)
            streak = np.where(last_reset >= 0, zeros_after, streak + zeros_after)
            self.had_gradient = (np.asarray(self.had_gradient, dtype=bool) | (last_reset >= 0)).tolist()
        self.streak, self.streak_start = streak.tolist(), start.tolist()
        absent = self._absent(steps, rows, names, sizes, layer_names, pruned, planned_steps)
        if first_share is not None and not self.first_share:
            self.first_share = [float(v) for v in first_share]
        if unit_share is not None:
            self.last_share = [float(v) for v in unit_share]
            for i, share in enumerate(unit_share):
                if share == NO_GRADIENT:
                    continue
                judged = i < len(units) and units[i] >= t.min_units and share >= t.unit_share
                self.unit_streak[i] = self.unit_streak[i] + 1 if judged else 0
        # A dead unit zeroes its weights' gradient along with its bias's: a parameter at zero while another of its
        # layer still gets a gradient has per-sample gradients that cancel (a bias under a hinge loss with every
        # sample inside the margin on both sides), not dead units.
        live = [i for i in range(p) if self.streak[i] == 0 and self.had_gradient[i]]  # latest gradient non-zero
        flowing_layers = {layer_names[i] for i in live}
        dead = [i for i in range(p) if self.streak[i] >= t.min_steps and layer_names[i] not in flowing_layers]
        unit_dead = [i for i in range(p) if self.unit_streak[i] >= t.unit_samples]
        total = max(sum(sizes), 1)
        died = [i for i in dead if self.streak_start[i] > self.first_step >= 0]  # had a gradient, then lost it
        if sum(sizes[i] for i in dead) < t.min_weight_share * total and not died:
            dead = []  # a bias that never gets a gradient by construction (it cancels out of the loss) is harmless
        if not steps or not (dead or unit_dead):
            return absent
        output = list(outputs) if outputs else [i for i in range(p) if depth[i] == max(depth)]
        output_dead = all(self.streak[i] >= t.output_steps for i in output)
        # Parameters off the output layer whose latest gradient was non-zero: the loss's gradient does reach the model.
        flowing = [i for i in live if i not in output]
        # The loss is fitted: silent outputs cleared its flat region (NaN: not known; below zero: not a fit's floor).
        if 0.0 <= loss_jump <= t.fitted:
            unit_dead = [i for i in unit_dead if i not in output]
            if output_dead and not flowing:
                return absent  # nothing reaches the model because nothing is left to fit, not because it is cut off
        if not (dead or unit_dead):
            return absent
        # The gradient stops at the deepest dead layer; the layers before it starve as a consequence.
        stop = max(unit_dead or dead, key=lambda i: (depth[i], i))
        evidence: dict[str, float] = {
            "dead_params": len(dead),
            "watched_params": p,
            "dead_weight_share": sum(sizes[i] for i in dead) / total,
            "output_layer_dead": float(output_dead),
        }
        parts = []
        if dead:
            named = first_few([names[i] for i in dead], 4)
            evidence.update(
                {
                    "zero_steps": min(self.streak[i] for i in dead),
                    "first_zero_step": min(self.streak_start[i] for i in dead),
                }
            )
            parts.append(
                f"{len(dead)} of {p} parameters ({evidence['dead_weight_share']:.0%} of the weights) got an "
                f"exactly-zero gradient for at least {t.min_steps} steps in a row: {named}"
            )
        if unit_dead:
            worst = stop if stop in unit_dead else max(unit_dead, key=lambda j: self.last_share[j])
            evidence.update({"dead_unit_share": self.last_share[worst], "units": units[worst]})
            parts.append(
                f"in layer {layer_names[worst]}, {self.last_share[worst]:.0%} of the {units[worst]} output units got "
                f"no gradient in {self.unit_streak[worst]} report samples in a row"
            )
        found = "; ".join(parts)
        found = found[0].upper() + found[1:]
        remedies = list(code_info(self.code).remedies)
        if output_dead and flowing:
            message = (
                f"The output layer {layer_names[output[0]]} gets no gradient while {len(flowing)} other parameters "
                f"do. {found}. Its gradient is cleared after backward (code that freezes the layer for a while, or a "
                "hook), or its input is all zeros; what the layers before it get comes another way (an auxiliary "
                "loss, a skip connection)."
            )
            evidence["flowing_params"] = len(flowing)
            remedies = [*_CLEARED_REMEDIES, remedies[0]]
            subject = layer_names[output[0]]
        elif output_dead:
            message = (
                f"No gradient reaches the model: even the output layer {layer_names[output[0]]} gets none. {found}. "
                "The loss is flat where the model is (a clamp/hinge region, an output activation that cannot reach "
                "the targets) or the graph is detached."
            )
            remedies = [*_FLAT_LOSS_REMEDIES, remedies[0]]
            subject = layer_names[output[0]]
        else:
            silent = {i for i in dead + unit_dead if depth[i] != depth[stop]}
            if upstream is not None and max(depth) < len(upstream):
                before = {i for i in silent if upstream[depth[stop]] >> depth[i] & 1}
                after = {i for i in silent if upstream[depth[i]] >> depth[stop] & 1}
                unrelated = silent - before - after
            else:
                before, unrelated = {i for i in silent if depth[i] < depth[stop]}, set()
            starved = sorted({layer_names[i] for i in before})
            elsewhere = sorted({layer_names[i] for i in unrelated})
            below = f"; the layers before it ({', '.join(starved)}) get nothing either" if starved else ""
            if elsewhere:  # on another gradient path (another head, another optimizer's model): a cause of its own
                below += f"; off its gradient path, {', '.join(elsewhere)} get none either"
            started_alive = (
                stop < len(self.first_share) and 0 <= self.first_share[stop] < t.unit_share / 2 and stop in unit_dead
            ) or (stop in dead and self.streak_start[stop] > self.first_step >= 0)
            # Units dead from the first sample while the loss fitted all the same: the live ones carry the fit. Every
            # layer found must be so (one whose units died in training is a warning of its own).
            spare = (
                not dead
                and stop in unit_dead
                and 0.0 <= loss_jump <= t.fitted
                and all(
                    i < len(self.first_share) and self.first_share[i] >= t.unit_share / 2 and self.last_share[i] < 1.0
                    for i in unit_dead
                )
            )
            if spare:
                return [*absent, self._spare_units(int(steps[-1]), found, evidence, layer_names[stop], stop, loss_jump)]
            if loss_jump >= t.jump or started_alive:
                if loss_jump >= t.jump:
                    how = f"after the loss jumped {loss_jump:.3g}x above its first batches"
                elif stop in unit_dead:
                    how = f"in training ({self.first_share[stop]:.0%} were dead at the first step)"
                else:
                    how = (
                        f"in training (it had a gradient until step {self.streak_start[stop]}; a clamp or a saturation)"
                    )
                why = (
                    f"its units were knocked out (dead ReLUs, or saturated gates and tanh units) {how}: most likely a "
                    "learning rate far too high"
                )
                remedies = [
                    "Lower the learning rate (try 10x lower), or add a warm-up.",
                    "Clip gradients: Trainer(gradient_clip_val=1.0) (recurrent networks need it).",
                    *remedies[:1],
                ]
                evidence["loss_jump"] = loss_jump
                if started_alive and stop < len(self.first_share) and self.first_share[stop] >= 0:
                    evidence["dead_unit_share_at_start"] = self.first_share[stop]
            else:
                why = (
                    "its units never activate (dead ReLUs, saturated units, zero or very negative initialisation, or a "
                    "learning rate that knocked them out)"
                )
            message = f"{found}. The gradient stops at {layer_names[stop]}: {why}{below}."
            subject = layer_names[stop]
        return [*absent, self.diagnosis(int(steps[-1]), message, evidence, subject=subject, remedies=remedies)]

    def _spare_units(
        self, step: int, found: str, evidence: dict[str, float], layer: str, stop: int, loss_jump: float
    ) -> Diagnosis:
        """Hidden units dead from the run's first sample while the loss was fitted all the same: an info (capacity
        the model does without), not a warning that the gradient stops there."""
        evidence = {**evidence, "dead_unit_share_at_start": self.first_share[stop], "loss_vs_first": loss_jump}
        message = (
            f"{found}. They were {self.first_share[stop]:.0%} dead at the first sample, and the loss has fallen to "
            f"{loss_jump:.1%} of its first batches' level all the same: the live units carry the fit, so the dead ones "
            "cost capacity, not learning."
        )
        found_info = self.diagnosis(step, message, evidence, subject=layer, remedies=_SPARE_REMEDIES)
        return dataclasses.replace(found_info, severity=Severity.INFO)

    def _absent(
        self,
        steps: Sequence[int],
        rows: np.ndarray,
        names: Sequence[str],
        sizes: Sequence[int],
        layer_names: Sequence[str],
        pruned: Sequence[bool],
        planned_steps: int | None,
    ) -> list[Diagnosis]:
        """Parameters without any gradient on every measured step since ``any_since``, while others had theirs:
        once, as an info."""
        t = self.thresholds
        p = len(names)
        if len(self.had_any) != p:
            self.had_any, self.any_since, self.any_rows = [False] * p, -1, 0
        if not len(rows):
            return []
        if self.any_since < 0:
            self.any_since = int(steps[0])
        self.any_rows += len(rows)
        had_any = np.asarray(self.had_any, dtype=bool) | (rows != NO_GRADIENT).any(axis=0)
        self.had_any = had_any.tolist()
        span = int(steps[-1]) - self.any_since + 1
        need = max(t.absent_steps, t.absent_share * planned_steps if planned_steps else 0)
        if self.absent_told or span < need or not had_any.any():
            return []
        absent = [i for i in range(p) if not had_any[i] and not (i < len(pruned) and pruned[i])]
        if not absent:
            return []
        self.absent_told = True
        share = sum(sizes[i] for i in absent) / max(sum(sizes), 1)
        layers = list(dict.fromkeys(layer_names[i] for i in absent))
        named = first_few([names[i] for i in absent], 4)
        message = (
            f"{len(absent)} of {p} watched parameters ({share:.0%} of the trained weights) have had no gradient at all "
            f"(grad is None) on any of the {self.any_rows} measured steps from step {self.any_since} to {steps[-1]}, "
            f"while the others had theirs: {named}. The loss does not reach them, so the optimizer leaves them as they "
            "are."
        )
        evidence = {
            "absent_params": len(absent),
            "watched_params": p,
            "absent_weight_share": share,
            "absent_steps": span,
            "measured_steps": self.any_rows,
        }
        found = self.diagnosis(int(steps[-1]), message, evidence, subject=layers[0], remedies=_ABSENT_REMEDIES)
        return [dataclasses.replace(found, severity=Severity.INFO)]
