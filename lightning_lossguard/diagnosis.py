"""The unit of output: a :class:`Diagnosis` (code, severity, evidence, remedies)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Severity(str, Enum):
    """How bad a finding is. Ordered: ``info < warning < error``."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Severity | str) -> bool:
        """True when this severity is ``other`` or worse."""
        return self.rank >= Severity(other).rank

    def __str__(self) -> str:
        return self.value


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


def worst(severities: Iterable[Severity]) -> Severity | None:
    """The highest of these severities (None for none)."""
    return max(severities, key=lambda severity: severity.rank, default=None)


@dataclass(frozen=True)
class Diagnosis:
    """One finding about a training run.

    Attributes:
        code: stable identifier from the catalog (``exploding_gradients``, ...).
        severity: ``info``, ``warning`` or ``error``.
        step: global step at which the finding was decided.
        message: one plain sentence saying what happened.
        evidence: the numbers the decision was made on (steps are stored as floats).
        remedies: what to try, most likely first.
        subject: the layer, parameter, loss term or metric the finding is about ("" for the run).
    """

    code: str
    severity: Severity
    step: int
    message: str
    evidence: dict[str, float] = field(default_factory=dict)
    remedies: list[str] = field(default_factory=list)
    subject: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """Identity used to report a finding once: the code and what it is about."""
        return (self.code, self.subject)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "step": self.step,
            "subject": self.subject,
            "message": self.message,
            "evidence": {k: json_number(v) for k, v in self.evidence.items()},
            "remedies": list(self.remedies),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnosis:
        return cls(
            code=str(data["code"]),
            severity=Severity(data["severity"]),
            step=int(data["step"]),
            message=str(data["message"]),
            evidence={str(k): _from_json_number(v) for k, v in dict(data.get("evidence", {})).items()},
            remedies=[str(r) for r in data.get("remedies", [])],
            subject=str(data.get("subject", "")),
        )

    def evidence_text(self) -> str:
        """Evidence as ``name=value`` pairs, numbers in a compact form."""
        return ", ".join(f"{k}={format_number(v)}" for k, v in self.evidence.items())

    def one_line(self) -> str:
        return f"[step {self.step}] {self.severity.value} {self.code}: {self.message}"

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from lightning_lossguard.report.console import render_diagnosis

        yield render_diagnosis(self)


def first_few(names: Sequence[str], limit: int) -> str:
    """The first ``limit`` names, comma-separated, and how many more there are: "a, b, c and 5 more"."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def format_number(value: float) -> str:
    """Format a number for people: integers plain, others with 3 significant digits."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if float(value).is_integer() and abs(value) < 1e9:
        return str(int(value))
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.3g}"
    return f"{value:.4g}"


def format_share(fraction: float) -> str:
    """A share for people, with the digits a small one needs: "37%", "2.5%", "0.031%"; "0%" only when it is 0 (a
    model training 0.003% of its parameters is not training none)."""
    percent = 100 * fraction
    return f"{percent:.0f}%" if percent == 0 or abs(percent) >= 10 else f"{percent:.2g}%"


FACTOR_FROM = 10.0
"""A rise to this many times its base or more is written as a factor ("12x"): "+1100%" reads as noise, and a blown-up
loss gives percentages 20 digits long."""


def format_change(before: float, after: float) -> str:
    """How far ``after`` moved from a positive ``before``, for people: "+44%", "-3%", and a rise to ``FACTOR_FROM``
    times or more as a factor, "12x". Empty where a relative change means nothing: ``before`` not positive (a
    percentage of 0 or of a negative loss), ``after`` negative, or either not finite. Callers then quote both values."""
    if not (math.isfinite(before) and math.isfinite(after)) or before <= 0 or after < 0:
        return ""
    ratio = after / before
    return f"{ratio:.3g}x" if ratio >= FACTOR_FROM else f"{ratio - 1:+.0%}"


def json_number(value: float) -> float | str:
    """A number for JSON: NaN and infinities become the strings "nan", "inf", "-inf" (strict parsers reject them)."""
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _from_json_number(value: Any) -> float:
    return float(value)
