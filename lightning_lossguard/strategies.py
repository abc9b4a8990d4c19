"""How a Lightning strategy splits the gradients LossGuard reads, so that each rank's norms combine correctly.

- DDP and single-device strategies: every rank holds whole gradients (DDP all-reduced them): nothing to combine.
- ``ModelParallelStrategy`` (FSDP2 ``fully_shard``, tensor parallelism): parameters are DTensors whose placements
  say how they are split (:func:`~lightning_lossguard.signals.parameters.sharding_of`).
- ``FSDPStrategy`` (FSDP1): parameters are plain tensors holding this rank's slice of a flattened parameter (or
  nothing); how many slices there are follows from the sharding strategy.
- DeepSpeed keeps gradients in its own partitioned buffers: not readable (the callback reports a gap).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from lightning_lossguard.diagnosis import first_few
from lightning_lossguard.signals.parameters import Sharding, sharding_of
from lightning_lossguard.signals.recorder import Gather

_FLAT_SHARDED = {"FULL_SHARD": "world", "SHARD_GRAD_OP": "world", "HYBRID_SHARD": "node", "_HYBRID_SHARD_ZERO2": "node"}
"""FSDP1 sharding strategies and the group each flat parameter is split over (``NO_SHARD``: not split)."""


def parameter_sharding(strategy: Any, parameters: Sequence[torch.Tensor]) -> list[Sharding | None]:
    """Per parameter, how its gradient is split across the ranks under ``strategy`` (None: whole on every rank)."""
    flat = flat_sharding(strategy)
    return [sharding_of(p) or flat for p in parameters]


def sharding_note(strategy: Any, names: Sequence[str], sharding: Sequence[Sharding | None]) -> str | None:
    """What LossGuard cannot sample under this sharding (None: nothing): said once, as a note."""
    if flat_sharding(strategy) is not None:
        return (
            "FSDPStrategy: each rank holds flat 1-D slices of the parameters, so gradient norms (total and per layer) "
            "are combined across ranks, but dead units are not sampled and vanishing_gradients cannot compare dense "
            "layers across depth. ModelParallelStrategy with fully_shard (FSDP2) keeps the parameters' shapes."
        )
    columns = [n for n, s in zip(names, sharding) if s is not None and not s.by_rows]
    if columns:
        shown = first_few(columns, 3)
        return (
            f"{len(columns)} parameter{' is' if len(columns) == 1 else 's are'} split along a dimension other than "
            f"their rows ({shown}): their gradient "
            "norms are combined across ranks, but dead units are not sampled for them."
        )
    return None


def flat_sharding(strategy: Any) -> Sharding | None:
    """FSDP1 (Lightning's ``FSDPStrategy``): each rank holds a slice of every flattened parameter, so a watched
    parameter's gradient there is a 1-D piece (or nothing). The pieces of one parameter add up over the shard
    group: every rank (``FULL_SHARD``, ``SHARD_GRAD_OP``) or the ranks of one node (hybrid sharding, replicated
    across nodes). None for other strategies and for ``NO_SHARD``."""
    if type(strategy).__name__ != "FSDPStrategy" or int(getattr(strategy, "world_size", 1)) < 2:
        return None
    mode = _FLAT_SHARDED.get(getattr(getattr(strategy, "sharding_strategy", None), "name", "FULL_SHARD"))
    if mode is None:
        return None
    world = int(strategy.world_size)
    ways = world if mode == "world" else max(1, world // max(1, int(getattr(strategy, "num_nodes", 1))))
    return Sharding(ways, by_rows=False) if ways > 1 else None


def gather_for(strategy: Any, world_size: int) -> Gather | None:
    """The report's one collective under a distributed strategy: ``strategy.all_gather`` (every rank's ``[n]``
    tensor, stacked in rank order), None for a single process. Lightning's implementation goes through a torch
    function that newer torch releases deprecate: that warning is Lightning's to fix, so it is not shown here."""
    if world_size < 2:
        return None

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*all_gather is deprecated.*")
            gathered: torch.Tensor = strategy.all_gather(tensor)
        return gathered

    return gather


def any_rank(strategy: Any, world_size: int, flag: bool) -> bool:
    """Whether ``flag`` is true on any rank: one all-reduce (the flag itself for a single process).

    It returns once the process group has let go of the reduced tensor. A gloo worker thread drops its reference
    after the wait has returned, and dropping a reference to a tensor Python made takes the interpreter's lock; when
    that falls in the interpreter's shutdown, the process aborts ("terminate called without an active exception").
    Measured under ``ddp_spawn`` on CPU with ``fail_on`` set: 5 of 25 fits lost rank 1 that way, the end-of-fit
    decision being the last collective before the rank exits."""
    if world_size < 2:
        return flag
    decision = torch.tensor(int(flag), device=strategy.root_device)
    reduced = bool(strategy.reduce(decision, reduce_op=torch.distributed.ReduceOp.SUM))
    _wait_until_only_python_holds(decision)
    return reduced


def _wait_until_only_python_holds(tensor: torch.Tensor, timeout_s: float = 1.0) -> None:
    """Sleep (the interpreter's lock released) while something other than this Python object holds ``tensor``."""
    use_count = getattr(tensor, "_use_count", None)
    deadline = time.monotonic() + timeout_s
    while use_count is not None and use_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.0002)
