"""Checks of LossGuard's constructor arguments: a wrong value fails at construction, naming what is allowed.

Plain functions over plain values (no Lightning): each returns the normalised value or raises
``ValueError``/``TypeError`` with one sentence a person in a hurry can act on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from lightning_lossguard.catalog import CATALOG
from lightning_lossguard.diagnosis import Severity

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` when it is one of ``allowed`` (compared by equality and type), else a ValueError naming them."""
    options = list(allowed)
    if not any(value is option or (type(value) is type(option) and value == option) for option in options):
        shown = ", ".join(repr(o) for o in options)
        raise ValueError(f"{name} must be one of {shown}; got {value!r}.")
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}.")
    return value


def whole(name: str, value: Any, low: int, high: int | None = None, allow_none: bool = False) -> int | None:
    """An integer in ``[low, high]`` (``bool`` is not an integer here)."""
    if value is None and allow_none:
        return None
    limit = f"between {low} and {high}" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer {limit}{none}; got {value!r}.")
    return value


def number(
    name: str, value: Any, low: float, high: float, allow_none: bool = False, open_low: bool = False
) -> float | None:
    """A finite real number in ``[low, high]`` (``(low, high]`` when ``open_low``)."""
    if value is None and allow_none:
        return None
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value > low if open_low else value >= low)
        and value <= high
    )
    if not ok:
        bracket = "(" if open_low else "["
        upper = "inf)" if math.isinf(high) else f"{high:g}]"
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a number in {bracket}{low:g}, {upper}{none}; got {value!r}.")
    return float(value)


def seconds(name: str, value: Any) -> float | None:
    """A duration in seconds, finite and above zero, or None (off)."""
    if value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(f"{name} must be a number of seconds above 0, or None (off); got {value!r}.")
    return float(value)


def text(name: str, value: Any, pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
    if not isinstance(value, str) or not value or (pattern is not None and not pattern.match(value)):
        raise ValueError(f"{name} must be {hint or 'a non-empty string'}; got {value!r}.")
    return value


def report_name(value: Any) -> str:
    return text("name", value, _NAME, "1-64 letters, digits, '-' or '_'")


def codes(name: str, value: Any) -> list[str]:
    """A list of diagnosis codes (a single string is refused: ``suppress="loss_plateau"`` is a common slip)."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError(f"{name} must be a list of diagnosis codes, e.g. {name}=['loss_plateau']; got {value!r}.")
    return [known_code(name, code) for code in value]


def known_code(name: str, code: Any) -> str:
    if not isinstance(code, str) or code not in CATALOG:
        raise ValueError(f"{name}: unknown diagnosis code {code!r}. Known codes: {', '.join(CATALOG)}.")
    return code


def severities(value: Any) -> dict[str, str]:
    """``{code: "info" | "warning" | "error"}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"severity must be a dict of code -> 'info'|'warning'|'error'; got {value!r}.")
    out = {}
    for code, level in value.items():
        known_code("severity", code)
        out[code] = choice(f"severity[{code!r}]", level, [s.value for s in Severity])
    return out


def threshold_overrides(value: Any) -> dict[str, dict[str, float]]:
    """``{code: {threshold name: number}}`` (names and ranges are checked by each detector)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"thresholds must be a dict of code -> {{name: number}}; got {value!r}.")
    out: dict[str, dict[str, float]] = {}
    for code, overrides in value.items():
        known_code("thresholds", code)
        if not isinstance(overrides, Mapping):
            raise TypeError(
                f"thresholds[{code!r}] must be a dict of threshold name -> number, "
                f"e.g. thresholds={{{code!r}: {{'name': 5}}}}; got {overrides!r}."
            )
        out[code] = dict(overrides)
    return out
