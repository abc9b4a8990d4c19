"""The diagnosis codes: the project's public vocabulary.

Each code documents itself: what it detects, its default severity, the remedies to try first and when
silencing it is legitimate. Users gate CI on these names and suppress them; never rename one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightning_lossguard.diagnosis import Severity

if TYPE_CHECKING:
    from lightning_lossguard.diagnosis import Diagnosis


@dataclass(frozen=True)
class CodeInfo:
    """What a diagnosis code means and what to do about it."""

    code: str
    severity: Severity
    title: str
    meaning: str
    remedies: tuple[str, ...]
    silence_when: str


_CODES = (
    CodeInfo(
        "nonfinite_loss",
        Severity.ERROR,
        "The loss is NaN or Inf",
        "The training loss returned by training_step is NaN or infinite.",
        (
            "Inspect the batch at the reported step for NaN/Inf in inputs or targets.",
            "Lower the learning rate.",
            "Clip gradients (Trainer(gradient_clip_val=1.0)).",
            "Check log/exp/division/sqrt in a custom loss (add an epsilon, clamp the input).",
        ),
        "Never in normal training; a NaN loss poisons the weights at the next optimizer step.",
    ),
    CodeInfo(
        "nonfinite_gradients",
        Severity.ERROR,
        "NaN/Inf gradients",
        "Gradients contain NaN or Inf while the loss was finite, outside the normal skipped steps of a "
        "16-bit GradScaler.",
        (
            "Look at the named parameter: the non-finite values start there.",
            "Check the loss' backward: sqrt/log/pow at 0, a division by a value that can be 0, or a NaN/Inf the "
            "forward leaves out (torch.where or a mask over a missing target, a margin loss over a NaN input): its "
            "gradient is still NaN.",
            "Inspect the batch of that step for NaN/Inf in the inputs (and the activations before the named layer).",
            "Lower the learning rate and clip gradients.",
            "Under 16-mixed, try bf16-mixed or keep the loss computation in float32.",
        ),
        "If a custom optimizer deliberately skips non-finite steps and you accept the lost steps.",
    ),
    CodeInfo(
        "exploding_gradients",
        Severity.ERROR,
        "Exploding gradients",
        "The pre-clip gradient norm jumps far above its own recent robust baseline and keeps growing, "
        "or exceeds an absolute ceiling.",
        (
            "Clip gradients: Trainer(gradient_clip_val=1.0).",
            "Lower the learning rate, or add a warm-up.",
            "Normalise exponential or high-power terms in the loss (e.g. exp(10·error) explodes quickly).",
            "Add normalisation layers before the named layer.",
        ),
        "When a large but bounded norm is expected (e.g. a sum-reduced loss): raise the ceiling or "
        "spike_factor instead of suppressing.",
    ),
    CodeInfo(
        "vanishing_gradients",
        Severity.WARNING,
        "Vanishing gradients",
        "Early layers get gradients orders of magnitude smaller than late layers, or the global norm "
        "collapses while the loss has not improved.",
        (
            "Use ReLU-family activations instead of sigmoid/tanh in deep stacks.",
            "Add normalisation layers (BatchNorm/LayerNorm) and residual connections.",
            "Use a variance-preserving initialisation (Kaiming for ReLU, Xavier for tanh).",
            "Check whether a dominating regulariser drowns the data term (see loss_term_imbalance).",
        ),
        "Layers that are meant to learn slowly (e.g. a deliberately down-weighted embedding).",
    ),
    CodeInfo(
        "dead_gradients",
        Severity.WARNING,
        "Dead (zero) gradients",
        "Parameters whose gradient is exactly zero for many consecutive optimizer steps, or layers where "
        "most units get no gradient: dead ReLUs, zero initialisation, a flat region of a non-smooth loss.",
        (
            "Check the initialisation and biases of the named layer (very negative biases kill ReLUs; "
            "all-zero weights never break symmetry).",
            "Smooth the loss: Huber/SmoothL1 instead of a hinge or clamp with a flat region.",
            "Look for .detach(), torch.no_grad() or integer casts between the layer and the loss.",
            "Use LeakyReLU/GELU, a lower learning rate, or make the output activation match the targets.",
        ),
        "Parameters that are unused on purpose in this phase (freeze them with requires_grad=False "
        "instead: frozen parameters are never reported).",
    ),
    CodeInfo(
        "tiny_updates",
        Severity.WARNING,
        "Updates too small to learn",
        "The optimizer's update changes the weights by a tiny fraction per step (update/weight ratio far "
        "below ~1e-3) for a sustained period: the learning rate is too low to learn.",
        (
            "Raise the learning rate (try 10x steps; a learning-rate finder helps).",
            "Check that the LR scheduler did not decay the rate to ~0.",
            "Check for a huge weight decay or gradient clipping threshold that throttles every step.",
        ),
        "Deliberately slow fine-tuning of a model that is already converged.",
    ),
    CodeInfo(
        "loss_divergence",
        Severity.ERROR,
        "The loss diverges",
        "The training loss rises far above where it started and keeps rising, or falls without bound "
        "(a loss heading to -inf usually has its sign flipped).",
        (
            "Lower the learning rate.",
            "Clip gradients: Trainer(gradient_clip_val=1.0).",
            "Check the sign and scale of the loss (minimise the loss, maximise a score).",
        ),
        "Adversarial or min-max objectives where the logged loss is meant to grow.",
    ),
    CodeInfo(
        "loss_plateau",
        Severity.WARNING,
        "The loss is stuck",
        "The training loss stopped improving early, close to where it started, or at ln K, the loss of predicting 1/K "
        "for every target: either way the model has not learned.",
        (
            "Raise the learning rate.",
            "Check that gradients reach the parameters (see dead_gradients/vanishing_gradients).",
            "Check that the loss matches the targets (class indices vs one-hot, logits vs probabilities).",
        ),
        "Fine-tuning a model that already fits the data (the loss starts converged).",
    ),
    CodeInfo(
        "loss_oscillation",
        Severity.WARNING,
        "The loss oscillates",
        "The training loss swings up and down by a large factor, cycle after cycle, with no downward trend.",
        (
            "Lower the learning rate or the momentum (e.g. 0.99 -> 0.9).",
            "Use larger batches.",
            "Use an LR schedule that decays (cosine, step) or a warm-up.",
        ),
        "Cyclic LR schedules whose swings are intended.",
    ),
    CodeInfo(
        "val_loss_rising",
        Severity.WARNING,
        "The validation loss rises",
        "The validation loss rises by a meaningful, persistent margin after a low start or a minimum: "
        "overfitting, forgetting, a fine-tuning learning rate that is too high, or a domain gap.",
        (
            "Keep the best checkpoint: ModelCheckpoint(monitor='val_loss'), EarlyStopping(monitor='val_loss').",
            "Regularise: weight decay, dropout, data augmentation, more data.",
            "When fine-tuning: lower the learning rate, freeze early layers, add a warm-up.",
        ),
        "Validation sets that are too small to be meaningful (fix the validation set instead).",
    ),
    CodeInfo(
        "loss_term_imbalance",
        Severity.WARNING,
        "One loss term dominates",
        "In a multi-term loss, one term is orders of magnitude larger than the others, so the others "
        "barely steer the gradients.",
        (
            "Rescale or normalise the terms so they are of comparable size.",
            "Learn the weights (uncertainty weighting) or balance gradients (GradNorm).",
            "If the large term is a regulariser, lower its weight.",
        ),
        "A term that is meant to dominate early (e.g. a warm-up reconstruction term), or a small term weighted "
        "down on purpose whose name does not say so (a term named like an auxiliary loss, 'aux_loss', 'balance', "
        "'router_z', 'z_loss', 'load_balancing', gets an info instead).",
    ),
    CodeInfo(
        "loss_scale_shift",
        Severity.INFO,
        "The loss or gradient scale jumped",
        "The loss level or the gradient-norm level moved by more than an order of magnitude between two "
        "phases of a run and stayed there (e.g. after switching from a pre-training loss to a custom loss).",
        (
            "Re-tune the learning rate for the new phase (the effective step size changed with the scale).",
            "Normalise the new loss to the scale of the old one, or reset the optimizer state.",
        ),
        "Planned phase changes where the new scale is intended.",
    ),
    CodeInfo(
        "slowing_loss_step",
        Severity.WARNING,
        "The loss step gets slower",
        "The time to compute the loss (training_step) grows steadily over training: state that grows "
        "every step, Python loops over a growing history, tensors kept alive across steps.",
        (
            "Look for lists or tensors kept across steps (histories, memory banks) and bound them.",
            ".detach() what you store between steps so old graphs are freed.",
            "Vectorise Python loops over samples or history.",
            "Profile the loss (torch.profiler) around training_step.",
        ),
        "A curriculum that deliberately makes batches larger or sequences longer over time.",
    ),
    CodeInfo(
        "expensive_loss",
        Severity.WARNING,
        "The loss is expensive",
        "Computing the loss takes a large share of each step (per-sample Python loops, "
        "constant work redone every step).",
        (
            "Vectorise: no per-sample Python loops in the loss.",
            "Move constant work (matrices, masks, kernels) out of the loss into __init__/setup.",
            "Profile the loss (torch.profiler) to find the expensive op.",
        ),
        "Losses that are inherently costly (e.g. a perceptual loss through a second network).",
    ),
    CodeInfo(
        "memory_growth",
        Severity.WARNING,
        "Memory grows every step",
        "Host RSS or CUDA allocated memory grows steadily with steps: tensors or graphs kept alive "
        "across steps (the usual companion of a slowing step).",
        (
            "Store .detach()-ed values (or .item() at epoch end), never the loss tensor itself.",
            "Bound histories and caches; clear lists you append to every step.",
            "Check for outputs kept by on_train_batch_end hooks or metric objects that accumulate.",
        ),
        "Caches that fill up to a fixed size and then stop growing.",
    ),
    CodeInfo(
        "rank_straggler",
        Severity.WARNING,
        "One rank is slower than the others",
        "Under DDP or FSDP one rank's steps are persistently slower than the other ranks' in one phase (data "
        "loading, forward/loss, backward or the optimizer step), so every rank waits for it at each synchronisation.",
        (
            "Check that rank's data pipeline and host first: slow or remote storage, decoding, too few DataLoader "
            "workers, another process on the host.",
            "Balance the shards: the same amount of work per rank (bucket variable-length samples by length).",
            "Pin DataLoader workers and threads per rank (num_workers, torch.set_num_threads) so ranks do not share "
            "cores.",
        ),
        "Heterogeneous hardware on purpose (one rank on a slower device) whose cost you accept.",
    ),
    CodeInfo(
        "stalled_training",
        Severity.ERROR,
        "Training stalled",
        "No training step completed for stall_timeout seconds: the loop is stuck (or was, for that long) in a "
        "phase the report names, with every thread's Python stack.",
        (
            "Read the stacks in the notes: the main thread's innermost frame is where the loop waits.",
            "A rank waiting in a collective (backward, an all-gather) waits for another rank: look at the rank that "
            "is elsewhere (it crashed, diverged in control flow, or is stuck in its data loader).",
            "A data-loader worker that died or hangs: run with num_workers=0 to see its error, check shared memory.",
            "A deadlock in user code (locks, queues, a subprocess): the stacks of the other threads show it.",
        ),
        "Never for a real hang; raise stall_timeout above the longest legitimate pause (a first step that "
        "compiles, a long validation batch, a large checkpoint).",
    ),
    CodeInfo(
        "output_range_mismatch",
        Severity.WARNING,
        "Predictions cannot reach the targets",
        "The model's outputs cannot reach the targets the loss compares them with: outputs clamped at a bound "
        "(a final ReLU) or kept on one side of zero (an exp or softplus) while many targets lie beyond it, "
        "outputs outside [0, 1] fed to a probability loss, or probabilities (a softmax or sigmoid) fed to a loss "
        "that expects logits. Checked by OutputMonitor.",
        (
            "Match the output activation to the targets: no final ReLU/sigmoid for targets outside its range "
            "(or rescale the targets into it).",
            "For a probability loss (BCELoss, NLL on probabilities) end with a sigmoid/softmax, or better use the "
            "logit version (BCEWithLogitsLoss, cross_entropy) on raw outputs.",
            "For cross_entropy/BCEWithLogitsLoss pass raw logits: remove the softmax/sigmoid before the loss "
            "(apply it only to report predictions).",
        ),
        "Outputs bounded on purpose while some targets lie outside (e.g. noisy measurements of a non-negative "
        "quantity).",
    ),
    CodeInfo(
        "prediction_collapse",
        Severity.WARNING,
        "Predictions collapse to a few classes",
        "On validation the model predicts only one or a few classes while the targets contain more: the other "
        "classes are almost never predicted. Typical of cross-entropy on imbalanced data; checked by OutputMonitor.",
        (
            "Weight the loss by class: cross_entropy(weight=...) with weights ~ 1 / class frequency.",
            "Use a focal loss, which down-weights the easy majority examples.",
            "Resample: oversample the rare classes (WeightedRandomSampler) or undersample the majority.",
            "If the data is balanced, check the learning rate and the gradients: a diverged or dead network also "
            "predicts one class.",
        ),
        "Tasks where predicting the majority class is acceptable and the rare classes do not matter.",
    ),
    CodeInfo(
        "high_class_separation",
        Severity.INFO,
        "Highly class-separated features",
        "The penultimate features of the validation set are strongly separated by class (class separation R² "
        "above the threshold): good for this task's accuracy, but such features transfer worse to new "
        "tasks as fixed features. Checked by OutputMonitor(feature_layer=...).",
        (
            "If the features will be reused (fixed feature extractor, linear probes, retrieval), train with plain "
            "softmax cross-entropy: no label smoothing, logit penalty or cosine/normalised softmax.",
            "When transferring, fine-tune more layers than the last: the losses differ mainly in the last few.",
            "Nothing to do if the model is only used for this task: higher separation goes with higher accuracy here.",
        ),
        "Models that are only used for the task they were trained on.",
    ),
)

CATALOG: dict[str, CodeInfo] = {info.code: info for info in _CODES}
"""Every diagnosis code LossGuard can emit, by name."""


def code_info(code: str) -> CodeInfo:
    """Look up a code, with an error that lists the valid ones."""
    try:
        return CATALOG[code]
    except KeyError:
        raise ValueError(f"Unknown diagnosis code {code!r}. Known codes: {', '.join(CATALOG)}.") from None


CAUSE_ORDER = (
    "loss_divergence",
    "exploding_gradients",
    "nonfinite_gradients",
    "nonfinite_loss",
    "loss_scale_shift",
    "loss_term_imbalance",
    "vanishing_gradients",
    "dead_gradients",
    "tiny_updates",
    "loss_plateau",
    "loss_oscillation",
    "val_loss_rising",
    "memory_growth",
    "stalled_training",
    "rank_straggler",
    "slowing_loss_step",
    "expensive_loss",
    "output_range_mismatch",
    "prediction_collapse",
    "high_class_separation",
)
"""Within one step, causes come before the symptoms they produce (an explosion before the NaN)."""


LOSS_FELL = "loss_fell"
"""Evidence (1.0) of a ``nonfinite_loss`` whose last finite loss had fallen towards -inf: a loss maximised by mistake or
unbounded below is the cause of the gradients that blow up with it, so within its step it comes first, ahead of
:data:`CAUSE_ORDER` (else "clip gradients" would be the first remedy a user reads)."""

_RANK = {code: i for i, code in enumerate(CAUSE_ORDER)}


def cause_rank(diagnosis: Diagnosis) -> int:
    """Where ``diagnosis`` goes among those of its step: :data:`CAUSE_ORDER`, a loss that fell towards -inf first."""
    if diagnosis.evidence.get(LOSS_FELL):
        return -1
    return _RANK.get(diagnosis.code, len(_RANK))


def cause_first(diagnoses: Iterable[Diagnosis]) -> list[Diagnosis]:
    """The one order every reporter uses: by step (the earliest is usually the cause), and within one step
    causes before the symptoms they produce (:func:`cause_rank`)."""
    return sorted(diagnoses, key=lambda d: (d.step, cause_rank(d)))
