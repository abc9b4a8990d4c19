"""Hiding a callback's hook from Lightning: None makes Lightning skip it, removing it brings the method back,
and a subclass's own override is never counted as the owner's."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from lightning_lossguard.hook_dispatch import offer, own_hooks


class Base(Callback):
    def on_before_backward(self, *args: Any) -> None:
        pass


class Child(Base):
    def on_after_backward(self, *args: Any) -> None:
        pass


def test_offer_hides_a_hook_and_brings_the_method_back() -> None:
    callback = Base()
    offer(callback, ("on_before_backward",), False)
    assert callback.on_before_backward is None and not callable(callback.on_before_backward)
    offer(callback, ("on_before_backward",), False)  # hiding twice is harmless
    offer(callback, ("on_before_backward",), True)
    assert callback.on_before_backward.__func__ is Base.on_before_backward  # type: ignore[attr-defined]
    offer(callback, ("on_before_backward",), True)  # and so is offering twice
    assert "on_before_backward" not in vars(callback)


def test_own_hooks_leaves_out_what_a_subclass_overrides() -> None:
    hooks = ("on_before_backward", "on_after_backward")
    assert own_hooks(Base(), hooks, Base) == hooks
    assert own_hooks(Child(), hooks, Base) == ("on_before_backward",)
    assert own_hooks(Child(), ("on_after_backward", "on_before_zero_grad"), Callback) == ("on_before_zero_grad",)
