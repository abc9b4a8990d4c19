"""Module hooks LossGuard installs: forward timing marks, and the execution order of the first batch.

Forward timing hooks the LightningModule and each of its top-level children that owns parameters, trainable
or frozen (a frozen backbone's forward is still forward time, not loss time), except loss modules. After the
first batch only the hooks whose calls were outermost stay: the rest would cost time and add nothing. The
cost budget times every few batches only; between timed batches the hooks are taken off, so the modules run
PyTorch's hook-free call path (unless a hook ever ran under ``torch.compile``: there, adding or removing a hook
would make the compiled code recompile, so they stay).

Bookkeeping inside ``training_step`` -- ``self.log``/``self.log_dict`` calls and torchmetrics updates -- is
timed too (sections ``log`` and ``metrics``), so it is not counted as loss time. The scalars logged in timed batches
are handed on (:class:`LoggingCalls`, whether the forward is timed or not): the terms of a loss that the step logs
but does not return are among them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.loss import _Loss
from torch.utils.hooks import RemovableHandle

from lightning_lossguard.signals.step_timer import StepTimer

_is_compiling = getattr(torch.compiler, "is_compiling", None) or (lambda: False)  # torch < 2.3 has none

BOOKKEEPING = ("log", "metrics")
"""Timed sections that are neither forward nor loss: logging calls and metric updates."""


class LoggingCalls:
    """The module's ``log``/``log_dict`` timed as bookkeeping in a training batch, and the ``(name, value)`` of each
    ``log`` call in a timed batch handed to ``on_log``."""

    def __init__(
        self, module: nn.Module, timer: StepTimer, on_log: Callable[[object, object], None] | None = None
    ) -> None:
        self._module = module
        self._patched: list[str] = []
        for method in ("log", "log_dict"):
            if callable(getattr(module, method, None)) and method not in vars(module):
                # log_dict calls log for each item: only log's (name, value) are handed to on_log.
                kept = on_log if method == "log" else None
                setattr(module, method, _timed(timer, "log", getattr(module, method), kept))
                self._patched.append(method)

    def remove(self) -> None:
        for method in self._patched:
            vars(self._module).pop(method, None)
        self._patched = []


class ForwardHooks:
    """Marks around the outermost forward calls of a training batch, and around metric updates."""

    def __init__(self, module: nn.Module, timer: StepTimer) -> None:
        self._handles: dict[int, tuple[RemovableHandle, RemovableHandle]] = {}
        self._outermost: set[int] = set()
        children = list(module.children())
        targets = [module] + [
            child for child in children if not isinstance(child, _Loss) and any(True for _ in child.parameters())
        ]
        self._metric_hooks = [
            handle
            for child in children
            if type(child).__module__.startswith("torchmetrics")
            for handle in _section_hooks(child, timer, "metrics")
        ]
        outermost = self._outermost
        self._targets = {id(target): target for target in targets}
        self._installed = True
        self._compiled = False

        def enter(target: nn.Module) -> Any:
            def hook(*_: Any) -> None:
                if _is_compiling():
                    self._compiled = True
                if timer.forward_enter():
                    outermost.add(id(target))

            return hook

        def exit_(*_: Any) -> None:
            timer.forward_exit()

        self._hook_functions = {key: (enter(target), exit_) for key, target in self._targets.items()}
        self._install()

    def _install(self) -> None:
        for key, target in self._targets.items():
            pre, post = self._hook_functions[key]
            self._handles[key] = (target.register_forward_pre_hook(pre), target.register_forward_hook(post))
        self._installed = True

    def prune(self) -> None:
        """After the first batch: a hooked call that is never outermost only costs time (about 8 us a call)."""
        for key in list(self._targets):
            if key not in self._outermost:
                for handle in self._handles.pop(key, ()):
                    handle.remove()
                del self._targets[key]

    def timing(self, on: bool) -> None:
        """Whether the batch about to start is timed: the hooks are put on for it, or taken off."""
        if on == self._installed or self._compiled:
            return
        if on:
            self._install()
        else:
            self._take_off()

    def _take_off(self) -> None:
        for pre, post in self._handles.values():
            pre.remove()
            post.remove()
        self._handles = {}
        self._installed = False

    @property
    def seen(self) -> bool:
        """Whether any hooked forward call happened in a training batch so far."""
        return bool(self._outermost)

    def remove(self) -> None:
        self._take_off()
        self._targets = {}
        for handle in self._metric_hooks:
            handle.remove()
        self._metric_hooks = []


def _timed(timer: StepTimer, section: str, method: Any, on_log: Callable[[object, object], None] | None = None) -> Any:
    """``method`` with its time inside a training batch recorded as ``section``; ``on_log`` gets the ``(name,
    value)`` of each ``log`` call made in a timed training batch."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if not timer.in_batch:
            return method(*args, **kwargs)
        if on_log is not None:
            with contextlib.suppress(Exception):  # a value LossGuard cannot keep must never fail the user's step
                on_log(args[0] if args else kwargs.get("name"), args[1] if len(args) > 1 else kwargs.get("value"))
        start = timer.clock.mark()
        try:
            return method(*args, **kwargs)
        finally:
            timer.section(section, start, timer.clock.mark())

    return call


def _section_hooks(module: nn.Module, timer: StepTimer, section: str) -> list[RemovableHandle]:
    """Forward hooks that record each call of ``module`` in a training batch as ``section``."""
    started: list[object] = []

    def pre(*_: Any) -> None:
        if timer.in_batch:
            started.append(timer.clock.mark())

    def post(*_: Any) -> None:
        if started:
            timer.section(section, started.pop(), timer.clock.mark())

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


class ExecutionOrder:
    """Records, during one batch, the order in which modules that own parameters run their forward.

    Inside a ``torch.compile``d module no hook is put: the compiled code checks its modules' hooks, and taking them
    off after the first batch would make it compile again (a minute on a large model). The compiled module's own
    call stands for its layers, in their registration order."""

    def __init__(self, module: nn.Module, hooked: bool = True) -> None:
        """``hooked`` False: no hook (the module's steps are compiled, :func:`compiled_steps`); the order stays
        unknown and the layers keep their registration order."""
        self.order: list[str] = []
        self._handles: list[RemovableHandle] = []
        order = self.order
        if not hooked:
            return

        def record(names: list[str]) -> Any:
            def hook(*_: Any) -> None:
                order.extend(name for name in names if name not in order)

            return hook

        compiled = compiled_modules(module)
        for name, sub in module.named_modules():
            if name in compiled:
                inner = [f"{name}.{n}" for n, m in sub.named_modules() if _owns_parameters(m)]
                if inner:
                    self._handles.append(sub.register_forward_pre_hook(record(inner)))
            elif _owns_parameters(sub) and not any(name.startswith(f"{outer}.") for outer in compiled):
                self._handles.append(sub.register_forward_pre_hook(record([name])))

    def stop(self) -> list[str]:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.order


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def compiled_steps(module: nn.Module) -> bool:
    """Whether Lightning runs the module's steps compiled (``trainer.fit(torch.compile(model))``: its ``forward`` and
    ``training_step`` are wrapped by ``torch.compile``). A module hook would then run inside the compiled code: a
    graph break at each hooked call, and a recompilation each time one is added or taken off."""
    context = getattr(module, "_compiler_ctx", None)
    return isinstance(context, dict) and context.get("compiler") == "dynamo"


def compiled_modules(module: nn.Module) -> list[str]:
    """Names of the outermost ``torch.compile`` wrappers (``OptimizedModule``) among the submodules."""
    names: list[str] = []
    for name, sub in module.named_modules():
        compiled = isinstance(getattr(sub, "_orig_mod", None), nn.Module)
        if name and compiled and not any(name.startswith(f"{outer}.") for outer in names):
            names.append(name)
    return names
