"""What every detector shares: named thresholds, resumable state, and building a diagnosis."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from lightning_lossguard import options
from lightning_lossguard.catalog import code_info
from lightning_lossguard.diagnosis import Diagnosis


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Base of each detector's thresholds: named, documented (``metadata["doc"]``), overridable."""

    def describe(self) -> dict[str, tuple[float, str]]:
        """Each threshold's current value and what it means."""
        return {f.name: (getattr(self, f.name), str(f.metadata.get("doc", ""))) for f in dataclasses.fields(self)}

    def ranges(self) -> dict[str, str]:
        """Each threshold's valid range, as written in the docs (``[1, inf)``, ``(0, 1]``...)."""
        return {f.name: valid_range(f.metadata) for f in dataclasses.fields(self)}


def threshold(default: float, doc: str, low: float = 0.0, high: float = math.inf, open_low: bool = False) -> Any:
    """Declare a threshold field with its documentation and its valid range ``[low, high]`` (``(low, high]``
    when ``open_low``); an override outside it fails when LossGuard is built."""
    assert (default > low if open_low else default >= low) and default <= high, f"default {default} outside range"
    return dataclasses.field(default=default, metadata={"doc": doc, "low": low, "high": high, "open_low": open_low})


def valid_range(metadata: Mapping[str, Any]) -> str:
    low, high = metadata.get("low", 0.0), metadata.get("high", math.inf)
    bracket = "(" if metadata.get("open_low") else "["
    return f"{bracket}{low:g}, " + ("inf)" if math.isinf(high) else f"{high:g}]")


T = TypeVar("T", bound=Thresholds)


def diagnosis_of(
    code: str,
    step: int,
    message: str,
    evidence: Mapping[str, float],
    subject: str = "",
    remedies: Sequence[str] | None = None,
) -> Diagnosis:
    """A diagnosis of ``code`` at its catalog severity, with the catalog's remedies unless ``remedies`` are given."""
    info = code_info(code)
    return Diagnosis(
        code=code,
        severity=info.severity,
        step=int(step),
        message=message,
        evidence={k: float(v) for k, v in evidence.items()},
        remedies=list(remedies if remedies is not None else info.remedies),
        subject=subject,
    )


class Detector(Generic[T]):
    """A detector turns plain numbers into diagnoses of one code. It knows nothing of Lightning.

    Subclasses set ``code`` and ``Thresholds`` and keep their state in plain attributes (lists, dicts,
    numbers, deques, :class:`~lightning_lossguard.detectors.stats.BlockMedians`), which
    :meth:`state_dict` turns into primitives so checkpoints load with ``weights_only=True``.
    """

    code: ClassVar[str]
    Thresholds: ClassVar[type[Thresholds]]
    derived: ClassVar[tuple[str, ...]] = ()
    """Attributes :meth:`state_dict` leaves out: a subclass rebuilds them from the rest on load."""

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
        return diagnosis_of(self.code, step, message, evidence, subject, remedies)

    def unjudged(self) -> str | None:
        """Why this detector could not judge the run yet (too short), or None when it could."""
        return None

    def undone_by(self, diagnosis: Diagnosis) -> str | None:
        """Hindsight on a diagnosis this detector reported: a note for the end of the fit when the run later undid
        what it was reported for (the diagnosis stands as it was reported), or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for name, value in vars(self).items():
            if name == "thresholds" or name in self.derived:
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
        meta = fields[name].metadata
        kind = type(getattr(defaults, name))
        label = f"Threshold {code}.{name}"
        if kind is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            options.whole(label, value, math.ceil(meta.get("low", 0)), _int_high(meta.get("high", math.inf)))
        else:
            options.number(
                label, value, meta.get("low", 0.0), meta.get("high", math.inf), open_low=meta.get("open_low", False)
            )
        values[name] = kind(value)
    return dataclasses.replace(defaults, **values)


MAX_COUNT = 10_000_000
"""Upper bound of a count threshold declared without one (steps, windows, blocks)."""


def _int_high(high: float) -> int:
    return MAX_COUNT if math.isinf(high) else int(high)
