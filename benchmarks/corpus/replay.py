"""Replay the gradient detectors' inputs from corpus fits as the cost budget could have sampled them.

The budget measures per-layer gradients on a stride of optimizer steps, set from the time it measures: which steps a
verdict rests on depends on the host. A healthy fit that warns at one stride and phase is a CI failure waiting for a
slower machine (the S4D classifier's was one). This fits the corpus programs once with every step measured
(``budget=None``), keeps what ``exploding_gradients``, ``vanishing_gradients`` and ``dead_gradients`` were handed at
each report, and replays it at every stride up to ``--max-stride`` and every phase: the first ``--warm-up`` reports
whole (the budget measures every step until its first review, which may already set a stride: its warm-up only
defers the planning of the interval), then the rows of steps at that stride and the last row of each report, as the
budget keeps them. The loss stays whole (it is recorded on every step whatever the budget).

    python -m benchmarks.corpus.replay                       # every healthy fit
    python -m benchmarks.corpus.replay --faults NAME ...     # some programs' faults
    python -m benchmarks.corpus.replay --save runs.pkl       # keep the captured inputs ...
    python -m benchmarks.corpus.replay --load runs.pkl       # ... and replay them again (after a detector change)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import pickle
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from benchmarks.corpus import PROGRAMS
from benchmarks.corpus.run import Job, Result, plan, run_all, run_program
from benchmarks.corpus.workers import available_cores
from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.detectors.dead_gradients import DeadGradients
from lightning_lossguard.detectors.exploding_gradients import ExplodingGradients
from lightning_lossguard.detectors.vanishing_gradients import VanishingGradients

Call = tuple[tuple[Any, ...], dict[str, Any]]
"""One ``update`` call: its positional and keyword arguments."""

# Any, not type[Detector]: each detector's ``update`` has its own signature, which the base class does not declare.
ROWS: dict[type[Any], tuple[int, ...]] = {
    ExplodingGradients: (2, 1),  # the per-layer norms, the global norms
    VanishingGradients: (1, 4),  # the per-layer norms, the global norms
    DeadGradients: (1,),  # the per-parameter norms
}
"""Per detector, the positional arguments with one row per measured optimizer step (``steps`` is argument 0); the
first is the one whose rows have an entry per layer or parameter."""


@contextlib.contextmanager
def recording() -> Iterator[dict[str, list[Call]]]:
    """While open, every ``update`` of the detectors in ``ROWS`` is recorded (copied) by code, then run as usual."""
    calls: dict[str, list[Call]] = {cls.code: [] for cls in ROWS}
    originals = {cls: cls.update for cls in ROWS}

    def recorder(cls: type[Any]) -> Any:
        def update(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls[cls.code].append(copy.deepcopy((args, kwargs)))
            return originals[cls](self, *args, **kwargs)

        return update

    try:
        for cls in ROWS:
            cls.update = recorder(cls)
        yield calls
    finally:
        for cls, original in originals.items():
            cls.update = original


def capture(job: Job) -> tuple[Result, dict[str, list[Call]]]:
    """One corpus fit with every step measured (a faulty one stops once named), and what the detectors were handed."""
    name, seed, fault = job
    with recording() as calls, tempfile.TemporaryDirectory() as root:
        result = run_program(name, root, seed, fault, guard={"budget": None}, stop_when_named=True)
    return result, calls


def sampled(call: Call, cls: type[Any], stride: int, phase: int) -> Call:
    """``call`` with only the rows the budget keeps at ``stride`` (offset ``phase``): steps at the stride, and the
    report's last step."""
    args, kwargs = call
    steps = list(args[0])
    if stride == 1 or not steps:
        return call
    keep = [i for i, step in enumerate(steps) if step % stride == phase or i == len(steps) - 1]
    kept = list(args)
    kept[0] = [steps[i] for i in keep]
    for position in ROWS[cls]:
        if position < len(args) and args[position] is not None and len(args[position]) == len(steps):
            kept[position] = np.asarray(args[position])[keep]
    return tuple(kept), kwargs


def replay(cls: type[Any], calls: list[Call], stride: int, phase: int, warm_up: int = 1) -> Diagnosis | None:
    """The first warning or error a fresh detector gives on ``calls`` sampled at ``stride``/``phase`` after ``warm_up``
    whole reports. A change in the rows' width (parameters unfrozen or frozen) starts a fresh detector, as the run's
    new layout does."""
    detector, width, reports = cls(), None, 0
    for args, kwargs in calls:
        if len(args[0]):
            shape = np.shape(args[ROWS[cls][0]])[1:]
            if width is not None and shape != width:
                detector = cls()
            width, reports = shape, reports + 1
        call = (args, kwargs) if reports <= warm_up else sampled((args, kwargs), cls, stride, phase)
        found: list[Diagnosis] = [
            d for d in detector.update(*call[0], **call[1]) if d.severity.at_least(Severity.WARNING)
        ]
        if found:
            return found[0]
    return None


def samplings(max_stride: int) -> list[tuple[int, int]]:
    """Every (stride, phase) up to ``max_stride``."""
    return [(stride, phase) for stride in range(1, max_stride + 1) for phase in range(stride)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="programs to run (default: all)")
    parser.add_argument("--faults", action="store_true", help="their injected faults instead of the healthy seeds")
    parser.add_argument("--max-stride", type=int, default=8)
    parser.add_argument("--warm-up", type=int, default=1, help="reports measured on every step first")
    parser.add_argument("--save", help="keep the captured inputs in this file")
    parser.add_argument("--load", help="replay inputs captured before instead of fitting")
    args = parser.parse_args(argv)
    if args.load:
        with open(args.load, "rb") as file:
            captured = pickle.load(file)
    else:
        names = args.names or sorted(PROGRAMS)
        jobs = [job for job in plan(names, (0, 1, 2), args.faults) if bool(job[2]) == args.faults]
        captured = list(zip(jobs, run_all(jobs, processes=available_cores(), work=capture)))  # type: ignore[arg-type]
    if args.save:
        with open(args.save, "wb") as file:
            pickle.dump(captured, file)
    every = samplings(args.max_stride)
    totals = {cls.code: [0, 0] for cls in ROWS}  # samplings that fired, fits with any
    for job, (result, calls) in captured:
        for cls in ROWS:
            fired = [
                (stride, found.step)
                for stride, phase in every
                if (found := replay(cls, calls[cls.code], stride, phase, args.warm_up))
            ]
            totals[cls.code][0] += len(fired)
            totals[cls.code][1] += bool(fired)
            if fired:
                live = ", ".join(f"{d.code}@{d.step}" for d in result.alarms) or "nothing"
                print(
                    f"{job}: {cls.code} in {len(fired)} of {len(every)} samplings, first at (stride, step) "
                    f"{sorted(set(fired))[:4]}; the fit itself said {live}"
                )
    for code, (times, fits) in totals.items():
        print(f"{code}: fired in {times} of {len(every) * len(captured)} samplings, in {fits} of {len(captured)} fits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
