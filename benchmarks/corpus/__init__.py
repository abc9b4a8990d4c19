"""The healthy corpus: training programs modelled on the patterns real Lightning code uses, each with a
few injected faults, in two halves: ``tuning`` (detectors may be tuned on it) and ``held_out`` (written
apart and only measured). ``python -m benchmarks.corpus`` runs it; ``tests/test_corpus.py`` gates on it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from benchmarks.corpus.faults import FAULTS, Fault
from benchmarks.corpus.program import SPLITS, Program, Run


def _discover() -> dict[str, Program]:
    programs: dict[str, Program] = {}
    for split in SPLITS:
        package = importlib.import_module(f"benchmarks.corpus.{split}")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for program in getattr(module, "PROGRAMS", []):
                if program.name in programs:
                    raise ValueError(f"two corpus programs are named {program.name!r}")
                unknown = set(program.faults) - set(FAULTS)
                if unknown:
                    raise ValueError(f"{program.name}: unknown faults {sorted(unknown)}; known: {sorted(FAULTS)}")
                programs[program.name] = dataclasses.replace(program, split=split)
    return programs


PROGRAMS: dict[str, Program] = _discover()
"""Every corpus program by name, ``split`` set from the package it lives in."""

__all__ = ["FAULTS", "PROGRAMS", "SPLITS", "Fault", "Program", "Run"]
