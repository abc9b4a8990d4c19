"""What a fit tells the user about signals it will not have, or had only in part: texts decided from plain facts."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_lossguard.detectors.nonfinite_loss import NonfiniteLoss
from lightning_lossguard.diagnosis import Severity


def start_notes(
    *,
    fast_dev_run: bool,
    has_logger: bool,
    has_log_dir: bool,
    no_parameters: bool,
    manual: bool,
    loggers_without_tensorboard: Sequence[str] = (),
    gradient_hooked: int = 0,
    watched: int = 0,
) -> list[str]:
    """The notes a fit starts with: where the report goes (or why it does not) and which signals are unavailable.
    ``loggers_without_tensorboard``: the loggers' class names when none of them is a TensorBoard logger;
    ``gradient_hooked``: how many of the ``watched`` parameters carry tensor hooks that may change their gradients."""
    notes = []
    if fast_dev_run:
        notes.append("fast_dev_run: Lightning disables logging, so diagnoses are printed but no report is written.")
    elif not has_logger:
        notes.append(
            "No logger (Trainer(logger=False)): no lossguard.json is written and nothing goes to TensorBoard; "
            "diagnoses are printed and kept in guard.diagnoses."
        )
    elif not has_log_dir:
        notes.append("The logger has no log directory: the JSON report is not written.")
    if loggers_without_tensorboard and not fast_dev_run:
        names = ", ".join(loggers_without_tensorboard)
        notes.append(
            f"No TensorBoard logger ({names}): LossGuard's scalars go to it, its diagnoses only to the console"
            + (" and lossguard.json (`lossguard report` on the log directory)." if has_log_dir else ".")
        )
    if no_parameters:
        notes.append("The model has no trainable parameters in its optimizers: gradient diagnoses are unavailable.")
    if gradient_hooked:
        notes.append(
            f"{gradient_hooked} of the {watched} watched parameters carry gradient hooks (Tensor.register_hook): "
            "LossGuard reads their gradients after the hooks ran. If the hooks clamp or rescale them, the gradient "
            "norms show only what is left (a blow-up shows in the loss first), and the run already clips."
        )
    if manual:
        notes.append(
            "Manual optimization: gradients are measured at each optimizer.step() (before self.clip_gradients "
            "when the module clips with it); loss diagnoses need training_step to return the loss."
        )
    return notes


def overfit_batches_note(overfit: float) -> str:
    """Why ``val_loss_rising`` is off under ``Trainer(overfit_batches=...)``."""
    return (
        f"Trainer(overfit_batches={overfit}) overfits a few batches on purpose: val_loss_rising (overfitting) "
        "is not judged in this fit."
    )


def no_loss_note(batches: int) -> str:
    """No batch of the fit returned a loss: the loss curve was never seen."""
    return (
        f"training_step returned no loss in any of {batches} batches, so loss-curve diagnoses "
        "(divergence, plateau, oscillation, non-finite loss) were not judged: return the loss, or "
        '{"loss": loss}, from training_step.'
    )


def skipped_batches_note(
    skipped: int, batches: int, logs: NonfiniteLoss | None = None, told: Severity | None = None
) -> str:
    """Batches whose ``training_step`` returned None (automatic optimization: Lightning skips them): their losses
    were never seen, and a common reason to skip is a loss that is not finite. ``logs``: the ``nonfinite_loss``
    detector, which counts what those of them whose logged values were read (timed batches) logged; ``told``: the
    severity it reported that with (None: not reported, e.g. suppressed)."""
    said = (
        f"training_step returned None on {skipped} of {batches} training batches ({skipped / batches:.1%}): "
        "Lightning ran no backward for them, so they trained nothing, and LossGuard saw no loss for them."
    )
    fix = "return that loss once, and nonfinite_loss names the step and the likely cause."
    if logs is not None and logs.skipped_nonfinite:
        reported = f"; nonfinite_loss, {'a' if told == Severity.WARNING else 'an'} {told}" if told is not None else ""
        return (
            f"{said} {logs.skipped_nonfinite} of the {logs.skipped_read} whose logged values LossGuard read logged a "
            f"value that is not finite (first {logs.skipped_first_names} at step {logs.skipped_first_step}"
            f"{reported}): skipping hides the cause, it does not fix it: {fix}"
        )
    if logs is not None and logs.skipped_read:
        said += f" The {logs.skipped_read} of them whose logged values LossGuard read logged only finite values."
    return f"{said} If they are skipped because the loss is NaN or inf, the cause is hidden, not fixed: {fix}"


def returned_loss_notes(
    notes: list[str],
    batches: int,
    losses: int,
    automatic: bool,
    logs: NonfiniteLoss | None = None,
    told: Severity | None = None,
) -> list[str]:
    """The fit-end ``notes`` with what the batches that returned no loss mean: ``losses`` of the ``batches``
    returned one (``logs``, ``told``: as :func:`skipped_batches_note`). None returned: the run-length notes go
    (nothing was judged at all), and the first note says why: the skipped batches' note when they logged a loss
    that is not finite (a deliberate skip), else that no loss was returned."""
    skipped = automatic and losses < batches
    if batches and not losses:
        notes = [n for n in notes if not n.startswith("Run too short")]
        if not (skipped and logs is not None and logs.skipped_nonfinite):
            return [no_loss_note(batches), *notes]
    if not skipped:
        return notes
    note = skipped_batches_note(batches - losses, batches, logs, told)
    return [*notes, note] if losses else [note, *notes]
