"""What every detector shares: named thresholds, resumable state, and building a diagnosis."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from lightning_lossguard.catalog import code_info
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Base of each detector's thresholds: named, documented (``metadata["doc"]``), overridable."""

    def describe(self) -> dict[str, tuple[float, str]]:
        """Each threshold's current value and what it means."""
        return {f.name: (getattr(self, f.name), str(f.metadata.get("doc", ""))) for f in dataclasses.fields(self)}


def threshold(default: float, doc: str) -> Any:
    """Declare a threshold field with its documentation."""
    return dataclasses.field(default=default, metadata={"doc": doc})


T = TypeVar("T", bound=Thresholds)


class Detector(Generic[T]):
    """A detector turns plain numbers into diagnoses of one code. It knows nothing of Lightning.

    Subclasses set ``code`` and ``Thresholds`` and keep their state in plain attributes (lists, dicts,
    numbers, deques, :class:`~lightning_lossguard.detectors.stats.BlockMedians`), which
    :meth:`state_dict` turns into primitives so checkpoints load with ``weights_only=True``.
    """

    code: ClassVar[str]
    Thresholds: ClassVar[type[Thresholds]]

    def __init__(self, thresholds: T | None = None) -> None:
        self.thresholds: T = thresholds if thresholds is not None else self.Thresholds()  # type: ignore[assignment]

    def diagnosis(
        self,
        step: int,
        message: str,
        evidence: Mapping[str, float],
        subject: str = "",
        remedies: Sequence[str] | None = None,
    ) -> Diagnosis:
        info = code_info(self.code)
        return Diagnosis(
            code=self.code,
            severity=info.severity,
            step=int(step),
            message=message,
            evidence={k: float(v) for k, v in evidence.items()},
            remedies=list(remedies if remedies is not None else info.remedies),
            subject=subject,
        )

    def unjudged(self) -> str | None:
        """Why this detector could not judge the run yet (too short), or None when it could."""
        return None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for name, value in vars(self).items():
            if name == "thresholds":
                continue
            state[name] = _to_primitive(value)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            current = getattr(self, name, None)
            if current is not None and hasattr(current, "load_state_dict"):
                current.load_state_dict(value)
            elif isinstance(current, deque):
                setattr(self, name, deque(_from_primitive(value), maxlen=current.maxlen))
            else:
                setattr(self, name, _from_primitive(value))


def _to_primitive(value: Any) -> Any:
    if hasattr(value, "state_dict"):
        return value.state_dict()
    if isinstance(value, (list, tuple, deque)):
        return [_to_primitive(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_primitive(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return value


def _from_primitive(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_primitive(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_primitive(v) for k, v in value.items()}
    return value


def apply_overrides(defaults: T, overrides: Mapping[str, float], code: str) -> T:
    """``defaults`` with ``overrides`` applied; unknown names fail with the allowed ones listed."""
    fields = {f.name: f for f in dataclasses.fields(defaults)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"Unknown threshold(s) {unknown} for {code!r}. Allowed: {', '.join(fields) or '(none)'}.")
    values: dict[str, Any] = {}
    for name, value in overrides.items():
        kind = type(getattr(defaults, name))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Threshold {code}.{name} must be a number, got {value!r}.")
        if kind is int and float(value) != int(value):
            raise ValueError(f"Threshold {code}.{name} must be a whole number, got {value!r}.")
        values[name] = kind(value)
    return dataclasses.replace(defaults, **values)
