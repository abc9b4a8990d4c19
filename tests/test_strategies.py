"""How each Lightning strategy splits the gradients LossGuard reads, and the report's gather."""

from __future__ import annotations

import enum
import threading
import time
from typing import Any

import torch

from lightning_lossguard.signals.parameters import Sharding
from lightning_lossguard.strategies import (
    _wait_until_only_python_holds,
    any_rank,
    flat_sharding,
    gather_for,
    parameter_sharding,
    sharding_note,
)


class ShardingStrategy(enum.Enum):
    FULL_SHARD = 1
    SHARD_GRAD_OP = 2
    NO_SHARD = 3
    HYBRID_SHARD = 4


class FSDPStrategy:  # the name is what LossGuard recognises (Lightning's FSDPStrategy needs CUDA)
    def __init__(self, mode: ShardingStrategy, world_size: int = 8, num_nodes: int = 2) -> None:
        self.sharding_strategy = mode
        self.world_size = world_size
        self.num_nodes = num_nodes


class DDPStrategy:
    world_size = 8

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        import warnings

        warnings.warn("torch.distributed.nn.functional.all_gather is deprecated", FutureWarning, stacklevel=2)
        return torch.stack([tensor, tensor + 1])


def test_fsdp1_flat_shards_are_split_over_their_shard_group() -> None:
    assert flat_sharding(FSDPStrategy(ShardingStrategy.FULL_SHARD)) == Sharding(8, by_rows=False)
    assert flat_sharding(FSDPStrategy(ShardingStrategy.SHARD_GRAD_OP)) == Sharding(8, by_rows=False)
    assert flat_sharding(FSDPStrategy(ShardingStrategy.HYBRID_SHARD)) == Sharding(4, by_rows=False)  # one node
    assert flat_sharding(FSDPStrategy(ShardingStrategy.NO_SHARD)) is None
    assert flat_sharding(FSDPStrategy(ShardingStrategy.FULL_SHARD, world_size=1)) is None
    assert flat_sharding(DDPStrategy()) is None


def test_parameter_sharding_per_strategy() -> None:
    params = [torch.zeros(3), torch.zeros(2, 2)]
    assert parameter_sharding(DDPStrategy(), params) == [None, None]
    assert parameter_sharding(FSDPStrategy(ShardingStrategy.FULL_SHARD), params) == [Sharding(8, False)] * 2


def test_the_gather_is_the_strategys_all_gather_without_its_deprecation_warning(recwarn: Any) -> None:
    assert gather_for(DDPStrategy(), 1) is None
    gather = gather_for(DDPStrategy(), 2)
    assert gather is not None
    assert gather(torch.zeros(3)).tolist() == [[0, 0, 0], [1, 1, 1]]
    assert not [w for w in recwarn if "all_gather" in str(w.message)]


def test_what_cannot_be_sampled_is_said_once_as_a_note() -> None:
    names = ["a.weight", "b.weight", "c.weight"]
    assert sharding_note(DDPStrategy(), names, [None, None, None]) is None
    assert sharding_note(DDPStrategy(), names, [Sharding(2), None, None]) is None  # FSDP2 rows: all sampled
    note = sharding_note(DDPStrategy(), names, [Sharding(2), Sharding(4, by_rows=False), None])
    assert note is not None and note.startswith("1 parameter is split") and "b.weight" in note
    flat = sharding_note(FSDPStrategy(ShardingStrategy.FULL_SHARD), names, [Sharding(8, False)] * 3)
    assert flat is not None and "dead units are not sampled" in flat


def test_one_process_decides_alone() -> None:
    assert any_rank(object(), 1, True) is True and any_rank(object(), 1, False) is False


def test_the_decision_returns_once_only_python_holds_its_tensor() -> None:
    # A process group's worker thread holds the reduced tensor a little past the wait; the decision waits for it
    # (here a view is that other holder, let go by a thread 50 ms later).
    tensor = torch.zeros(1)
    holder = [tensor.view(1)]
    let_go = threading.Timer(0.05, holder.clear)
    let_go.start()
    _wait_until_only_python_holds(tensor)
    assert holder == [] and tensor._use_count() == 1
    kept = tensor.view(1)  # never let go: the wait gives up after its timeout
    started = time.monotonic()
    _wait_until_only_python_holds(tensor, timeout_s=0.05)
    assert 0.05 <= time.monotonic() - started < 1.0 and kept is not None
