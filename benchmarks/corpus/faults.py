"""Faults injected into corpus programs, the same way for every program, so recall is measured on the
architectures, optimizers and training steps of the healthy corpus itself.

Each fault wraps a hook of the built module (``configure_optimizers``, ``training_step``,
``manual_backward``, a submodule's forward) or changes its parameters; the program's own code is not
edited. ``expect`` lists the diagnoses that name the fault correctly: a code, or ``code:phrase`` for a code that
counts only when its message or first remedy says ``phrase`` (a dead-units diagnosis names a learning-rate blow-up
only when it blames the learning rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn

from benchmarks.corpus.program import Program, Run
from lightning_lossguard.diagnosis import Diagnosis

INSTABILITY = (
    "exploding_gradients",
    "loss_divergence",
    "nonfinite_loss",
    "nonfinite_gradients",
    "loss_oscillation",
    "dead_gradients:learning rate far too high",
    "vanishing_gradients:learning rate far too high",
    "loss_plateau:Lower the learning rate",
    "val_loss_rising:unstable optimisation",
)
"""Codes that say "the optimisation became unstable": the right answer to a learning rate far too high."""

LOWER_OR_CLIP = ("lower the learning rate", "clip gradients", "clipping is")
"""First remedies that answer a learning rate far too high (clipping too: it stops the blow-up)."""


@dataclass(frozen=True)
class Fault:
    """A bug a user could ship, injected into a built run.

    Attributes:
        name: the fault's name in ``Program.faults``.
        description: what the bug is, in the words of a bug report.
        expect: diagnoses that count as naming it (``code`` or ``code:phrase``, see :func:`names_it`).
        inject: ``(run, program) -> onset batch`` (the training batch where the fault starts; 0 from the start).
        advice: phrases (any case), one of which the first remedy of the run's first warning or error should contain:
            what a user who acts on that alone is told to fix (see :func:`advises_it`). Scored, not gated.
    """

    name: str
    description: str
    expect: tuple[str, ...]
    inject: Callable[[Run, Program], int]
    advice: tuple[str, ...] = ()


def advises_it(diagnosis: Diagnosis, advice: tuple[str, ...]) -> bool:
    """Whether the first remedy of ``diagnosis`` contains one of the ``advice`` phrases (any case)."""
    first = diagnosis.remedies[0].lower() if diagnosis.remedies else ""
    return any(phrase.lower() in first for phrase in advice)


def names_it(diagnosis: Diagnosis, expect: tuple[str, ...]) -> bool:
    """Whether ``diagnosis`` is one of ``expect``: its code, and for ``code:phrase`` the phrase in its message or its
    first remedy."""
    for entry in expect:
        code, _, phrase = entry.partition(":")
        if diagnosis.code != code:
            continue
        if not phrase or phrase in diagnosis.message or (diagnosis.remedies and phrase in diagnosis.remedies[0]):
            return True
    return False


def planned_batches(run: Run) -> int:
    """Training batches the run will see (``max_steps`` optimizer steps x accumulation, else its epochs)."""
    accumulate = int(run.trainer.get("accumulate_grad_batches", 1))
    steps = run.trainer.get("max_steps", -1)
    if steps and steps > 0:
        return int(steps) * accumulate
    train = run.train.train_dataloader() if isinstance(run.train, L.LightningDataModule) else run.train
    # A dict of loaders: Lightning's max_size_cycle runs the longest. A BatchSizeFinder's runs: the initial size.
    per_epoch = max(len(t) for t in train.values()) if isinstance(train, dict) else len(train)
    limit = run.trainer.get("limit_train_batches", 1.0)
    per_epoch = min(per_epoch, limit) if isinstance(limit, int) else int(per_epoch * limit)
    return per_epoch * int(run.trainer.get("max_epochs", 1))


# -- learning rate ----------------------------------------------------------------------------------------
_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def _optimizers_and_schedulers(config: Any) -> Iterator[Any]:
    if isinstance(config, dict):
        for value in config.values():
            yield from _optimizers_and_schedulers(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            yield from _optimizers_and_schedulers(value)
    elif config is not None:
        yield config


def _wrap_optimizers(run: Run, change: Callable[[Any], None]) -> None:
    """Apply ``change`` to every optimizer and scheduler ``configure_optimizers`` returns."""
    module = run.module
    original = module.configure_optimizers

    def configure_optimizers() -> Any:
        config = original()
        for item in _optimizers_and_schedulers(config):
            change(item)
        return config

    module.configure_optimizers = configure_optimizers  # type: ignore[method-assign]


def _scale_lr(factor: float) -> Callable[[Run, Program], int]:
    def inject(run: Run, program: Program) -> int:
        def change(item: Any) -> None:
            if isinstance(item, torch.optim.Optimizer):
                for group in item.param_groups:
                    for key in _LR_KEYS:
                        if isinstance(group.get(key), (int, float)):
                            group[key] = group[key] * factor
            elif hasattr(item, "base_lrs"):  # an LR scheduler: it recomputes lr from base_lrs
                item.base_lrs = [lr * factor for lr in item.base_lrs]
                if isinstance(getattr(item, "eta_min", None), (int, float)):
                    item.eta_min = item.eta_min * factor

        _wrap_optimizers(run, change)
        return 0

    return inject


# -- zero_grad forgotten ----------------------------------------------------------------------------------
def _no_zero_grad(run: Run, program: Program) -> int:
    def change(item: Any) -> None:
        if isinstance(item, torch.optim.Optimizer):
            item.zero_grad = lambda *args, **kwargs: None  # type: ignore[method-assign]

    _wrap_optimizers(run, change)
    module = run.module
    if not module.automatic_optimization:
        # self.optimizers() hands out LightningOptimizer wrappers, whose zero_grad comes from the optimizer
        # class and zeroes the real gradients: the wrappers need the no-op too.
        optimizers = module.optimizers

        def optimizers_without_zero_grad(*args: Any, **kwargs: Any) -> Any:
            found = optimizers(*args, **kwargs)
            for item in found if isinstance(found, list) else [found]:
                change(item)
            return found

        module.optimizers = optimizers_without_zero_grad  # type: ignore[method-assign]
    return 0


# -- a NaN in one batch -----------------------------------------------------------------------------------
def _poison(batch: Any) -> tuple[Any, bool]:
    """The batch with a NaN in its first floating-point tensor (copied), and whether one was found."""
    if isinstance(batch, torch.Tensor) and batch.is_floating_point():
        poisoned = batch.clone()
        poisoned.view(-1)[0] = math.nan
        return poisoned, True
    if isinstance(batch, (list, tuple)):
        items, done = [], False
        for item in batch:
            if not done:
                item, done = _poison(item)
            items.append(item)
        return (type(batch)(items) if isinstance(batch, tuple) else items), done
    if isinstance(batch, dict):
        out, done = {}, False
        for key, item in batch.items():
            if not done:
                item, done = _poison(item)
            out[key] = item
        return out, done
    return batch, False


def _nan_batch(run: Run, program: Program) -> int:
    module = run.module
    original = module.training_step
    at = max(20, planned_batches(run) * 2 // 5)
    calls = [0]
    embedding = next((m for m in module.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))), None)
    active = [False]

    def nan_embedding(mod: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if not active[0]:
            return None
        output = output.clone()
        output.view(-1)[0] = math.nan
        return output

    if embedding is not None:  # token batches have no float to poison: poison the first embedding (bag) instead
        embedding.register_forward_hook(nan_embedding)

    def training_step(batch: Any, *args: Any, **kwargs: Any) -> Any:
        index, calls[0] = calls[0], calls[0] + 1
        if index == at:
            batch, done = _poison(batch)
            active[0] = not done
        try:
            return original(batch, *args, **kwargs)
        finally:
            active[0] = False

    module.training_step = training_step  # type: ignore[method-assign]
    return at


# -- loss sign flipped ------------------------------------------------------------------------------------
def _flipped_sign(run: Run, program: Program) -> int:
    module = run.module
    if module.automatic_optimization:
        original = module.training_step

        def training_step(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                return -out
            if isinstance(out, dict) and isinstance(out.get("loss"), torch.Tensor):
                return {**out, "loss": -out["loss"]}
            return out

        module.training_step = training_step  # type: ignore[method-assign]
    else:
        backward = module.manual_backward

        def manual_backward(loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
            backward(-loss, *args, **kwargs)

        module.manual_backward = manual_backward  # type: ignore[method-assign]
    return 0


# -- exp() on the output ----------------------------------------------------------------------------------
def _exp_output(run: Run, program: Program) -> int:
    if not program.output_module:
        raise ValueError(f"{program.name} offers exp_output but names no output_module")
    target = run.module.get_submodule(program.output_module)

    def hook(mod: nn.Module, inputs: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return torch.exp(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (torch.exp(output[0]), *output[1:])
        return None

    target.register_forward_hook(hook)
    return 0


# -- everything frozen ------------------------------------------------------------------------------------
def _frozen(run: Run, program: Program) -> int:
    """Every parameter frozen but the last one registered (so backward still has something to reach)."""
    params = list(run.module.parameters())
    for p in params[:-1]:
        p.requires_grad_(False)
    return 0


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("lr_x1000", "the learning rate is 1000x too high", INSTABILITY, _scale_lr(1000.0), LOWER_OR_CLIP),
        Fault(
            "lr_div_1e6",
            "the learning rate is 1e6x too low",
            ("tiny_updates", "loss_plateau"),
            _scale_lr(1e-6),
            ("raise the learning rate",),
        ),
        Fault(
            "no_zero_grad",
            "optimizer.zero_grad() is never called: gradients pile up",
            INSTABILITY,
            _no_zero_grad,
            ("zero_grad",),
        ),
        Fault(
            "nan_batch",
            "one batch has a NaN in its inputs",
            ("nonfinite_loss", "nonfinite_gradients"),
            _nan_batch,
            ("inspect the batch",),
        ),
        Fault(
            "flipped_sign",
            "the loss is returned with its sign flipped",
            # nonfinite_loss names it where the loss ran to -inf and NaN before a loss-curve report could.
            ("loss_divergence", "val_loss_rising:negated", "nonfinite_loss:maximised by mistake"),
            _flipped_sign,
            ("sign of the loss",),
        ),
        Fault(
            "exp_output",
            "exp() applied to the model's output",
            # It blows up; or, where the targets are negative, the loss gets stuck far above where it should be,
            # which only the predictions compared with the targets show (OutputMonitor's output_range_mismatch);
            # or the output saturates at zero and passes (almost) no gradient back.
            (
                "exploding_gradients",
                "nonfinite_loss",
                "nonfinite_gradients",
                "loss_divergence",
                "loss_plateau",
                "output_range_mismatch:bounded",
                "vanishing_gradients",
            ),
            _exp_output,
            ("output activation", "last layer hands the loss"),
        ),
        Fault(
            "frozen",
            "every parameter but one is frozen",
            ("loss_plateau", "tiny_updates"),
            _frozen,
            ("require a gradient", "requires_grad"),
        ),
    )
}
"""Every injectable fault, by name."""
