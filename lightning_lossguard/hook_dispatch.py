"""Which of a callback's hooks Lightning dispatches: LossGuard hides those with nothing to do.

Lightning calls a callback's hook only if the attribute is callable, and its dispatch (a profiler context, a
formatted name) costs ~2 µs per hook and callback: more than a hook with nothing to do. An instance attribute
set to None hides such a hook from Lightning; removing it brings the class's method back.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

NO_OP_HOOKS = (
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)
"""Per-batch hooks LossGuard has no use for: hidden from Lightning for good."""

BACKWARD_HOOKS = ("on_before_backward", "on_after_backward")
STEP_HOOKS = ("on_before_optimizer_step",)
"""Per-batch hooks with work on some batches only (timed, sampled, the first, the one after a report)."""
START_HOOKS = ("on_train_batch_start",)
"""Hidden when the batch is plain: the previous batch's end prepared it."""


def own_hooks(callback: Callback, hooks: tuple[str, ...], owner: type) -> tuple[str, ...]:
    """The ``hooks`` that ``callback``'s class takes from ``owner``: a subclass that overrides one keeps it called."""
    return tuple(hook for hook in hooks if getattr(type(callback), hook) is getattr(owner, hook))


def offer(callback: Callback, hooks: tuple[str, ...], offered: bool) -> None:
    """Let Lightning call ``hooks`` (the class's methods), or hide them (an instance attribute set to None)."""
    own = vars(callback)
    for hook in hooks:
        if offered:
            own.pop(hook, None)
        else:
            own[hook] = None
