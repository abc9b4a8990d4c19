"""Part of the model left out of the optimizer, on every corpus program: does LossGuard say so?

The bug: ``configure_optimizers`` hands the optimizer one module's parameters (``self.head.parameters()``) while the
rest of the model still requires and gets gradients. Injected into each program (seed 0) by keeping, in every
optimizer ``configure_optimizers`` returns, only the parameters of the module that owns the last trainable parameter
(a head, an output layer). Not one of the corpus' faults: it is not injected the same way into every program (it
does nothing where one module owns every trainable parameter), and the suite does not run it.

Each fit stops once LossGuard warns that parameters were left out of the optimizer (``tiny_updates``, subject "left
out of the optimizer"). A program counts as *warned*, *told as an info* (the "gradients no optimizer uses" info: its
graph did not show a trained parameter reading the others), *silent*, or *no effect* (the optimizers ended up empty,
or the parameters left out moved anyway: L-BFGS keeps its own list of parameters, a program renormalises a table by
hand). ``python -m benchmarks.corpus.left_out [names]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
from typing import Any

import torch

from benchmarks.corpus import PROGRAMS
from benchmarks.corpus.faults import _wrap_optimizers
from benchmarks.corpus.run import StopWhenNamed, build, trainer_for
from benchmarks.corpus.workers import available_cores, quiet
from lightning_lossguard import LossGuard
from lightning_lossguard.detectors.tiny_updates import LEFT_OUT, UNUSED
from lightning_lossguard.outputs import OutputMonitor

EXPECT = ("tiny_updates:no optimizer holds them",)


def run_left_out(name: str) -> tuple[str, str, str]:
    """(program, verdict, detail) for one program with all but its last module left out of the optimizers."""
    quiet()
    program = PROGRAMS[name]
    run = build(program, 0)
    trainable = [p for p in run.module.parameters() if p.requires_grad]
    owner = next(m for m in run.module.modules() if any(p is trainable[-1] for p in m.parameters(recurse=False)))
    kept = {id(p) for p in owner.parameters(recurse=False)}
    left = [p for p in trainable if id(p) not in kept]
    if not left:
        return name, "n/a", "one module owns every trainable parameter"
    share = sum(p.numel() for p in left) / sum(p.numel() for p in trainable)
    held: list[int] = []

    def keep_last_module(item: Any) -> None:
        if isinstance(item, torch.optim.Optimizer):
            for group in item.param_groups:
                group["params"] = [p for p in group["params"] if id(p) in kept]
                held.extend(id(p) for p in group["params"])

    _wrap_optimizers(run, keep_last_module)
    before = [p.detach().clone() for p in left]
    guard = LossGuard(verbose=False, monitors=[OutputMonitor()] if program.output_monitor else [])
    with tempfile.TemporaryDirectory() as root:
        fit = trainer_for(run, root, name, [guard, StopWhenNamed(guard, EXPECT)])
        try:
            fit.fit(run.module, run.train, run.val)
        except Exception as error:  # a program that crashes is reported, not hidden
            return name, "crashed", f"{type(error).__name__}: {error}"
    told = {d.subject: d for d in guard.diagnoses if d.code == "tiny_updates"}
    first = next((f"{d.code}@{d.step}" for d in guard.diagnoses if d.severity != "info"), "none")
    detail = f"{share:.0%} of the trainable elements left out; first alarm {first}"
    if LEFT_OUT in told:
        return name, f"warned@{told[LEFT_OUT].step}", detail
    if UNUSED in told:
        return name, f"info@{told[UNUSED].step}", detail
    if not held:
        return name, "no effect", "the optimizers held none of the kept parameters"
    if any(not torch.equal(a, p.detach()) for a, p in zip(before, left, strict=True)):
        return name, "no effect", "the parameters left out moved anyway"
    return name, "silent", detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="programs to run (default: all)")
    parser.add_argument("--processes", type=int, default=available_cores(), help="fits run side by side")
    args = parser.parse_args(argv)
    names = args.names or sorted(PROGRAMS)
    verdicts: dict[str, list[tuple[str, str]]] = {}
    latencies: list[int] = []
    with multiprocessing.get_context("spawn").Pool(args.processes, maxtasksperchild=4) as pool:
        for name, verdict, detail in pool.imap_unordered(run_left_out, names):
            print(f"{verdict:12s} {name:34s} {detail}", flush=True)
            kind, _, step = verdict.partition("@")
            verdicts.setdefault(kind, []).append((name, detail))
            if kind == "warned":
                latencies.append(int(step))
    applicable = sum(len(v) for k, v in verdicts.items() if k in ("warned", "info", "silent"))
    counts = ", ".join(f"{kind} {len(v)}" for kind, v in sorted(verdicts.items()))
    median = f", median step of the warning {statistics.median(latencies):.0f}" if latencies else ""
    print(f"{len(names)} programs: {counts} ({applicable} where the injection took effect{median})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
