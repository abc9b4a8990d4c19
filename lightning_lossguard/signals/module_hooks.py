"""Module hooks LossGuard installs: forward timing marks, and the execution order of the first batch.

Forward timing hooks the LightningModule and each of its top-level children that owns parameters, trainable
or frozen (a frozen backbone's forward is still forward time, not loss time), except loss modules. After the
first batch only the hooks whose calls were outermost stay: the rest would cost time and add nothing.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.loss import _Loss
from torch.utils.hooks import RemovableHandle

from lightning_lossguard.signals.step_timer import StepTimer


class ForwardHooks:
    """Marks around the outermost forward calls of a training batch."""

    def __init__(self, module: nn.Module, timer: StepTimer) -> None:
        self._handles: dict[int, tuple[RemovableHandle, RemovableHandle]] = {}
        self._outermost: set[int] = set()
        targets = [module] + [
            child
            for child in module.children()
            if not isinstance(child, _Loss) and any(True for _ in child.parameters())
        ]
        outermost = self._outermost

        def enter(target: nn.Module) -> Any:
            def hook(*_: Any) -> None:
                if timer.forward_enter():
                    outermost.add(id(target))

            return hook

        for target in targets:
            pre = target.register_forward_pre_hook(enter(target))
            post = target.register_forward_hook(lambda *_: timer.forward_exit())
            self._handles[id(target)] = (pre, post)

    def prune(self) -> None:
        """After the first batch: a hooked call that is never outermost only costs time (about 8 us a call)."""
        for key, handles in list(self._handles.items()):
            if key not in self._outermost:
                for handle in handles:
                    handle.remove()
                del self._handles[key]

    @property
    def seen(self) -> bool:
        """Whether any hooked forward call happened in a training batch so far."""
        return bool(self._outermost)

    def remove(self) -> None:
        for pre, post in self._handles.values():
            pre.remove()
            post.remove()
        self._handles = {}


class ExecutionOrder:
    """Records, during one batch, the order in which modules that own parameters run their forward."""

    def __init__(self, module: nn.Module) -> None:
        self.order: list[str] = []
        self._handles: list[RemovableHandle] = []
        order = self.order

        def record(name: str) -> Any:
            def hook(*_: Any) -> None:
                if name not in order:
                    order.append(name)

            return hook

        for name, sub in module.named_modules():
            if any(True for _ in sub.parameters(recurse=False)):
                self._handles.append(sub.register_forward_pre_hook(record(name)))

    def stop(self) -> list[str]:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.order
