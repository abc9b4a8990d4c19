"""FSDP1 (``FullyShardedDataParallel``) on CPU with gloo, without Lightning (whose ``FSDPStrategy`` needs CUDA):
LossGuard's recorder on two ranks reads the flat shards and combines them, once per report, into the norms of the
unsharded model, compared with a plain copy of the model trained on the same global batches.

    python tests/distributed/fsdp1_probe.py OUT.json [--flat]

``--flat`` steps the flat parameters themselves (``use_orig_params=False``); by default the original parameters
(``use_orig_params=True``). Rank 0 writes what it measured and the reference norms to OUT.json.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import sys
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lightning_lossguard.signals.clock import HostClock
from lightning_lossguard.signals.parameters import clean_name, watched_parameters
from lightning_lossguard.signals.recorder import SignalRecorder
from lightning_lossguard.strategies import parameter_sharding

STEPS = 4


class ShardingStrategy(enum.Enum):
    FULL_SHARD = 1


class FSDPStrategy:
    """What LossGuard reads of Lightning's FSDPStrategy: its name, sharding strategy and world size."""

    sharding_strategy = ShardingStrategy.FULL_SHARD
    world_size = 2
    num_nodes = 1


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 7), nn.Tanh(), nn.Linear(7, 1))


def run(rank: int, out: str, flat: bool, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from torch.distributed.fsdp import FullyShardedDataParallel

    sharded = FullyShardedDataParallel(model(), use_orig_params=not flat, device_id=torch.device("cpu"))
    plain = model()
    optimizer = torch.optim.SGD(sharded.parameters(), lr=0.1)
    reference = torch.optim.SGD(plain.parameters(), lr=0.1)
    watched = watched_parameters(sharded, [optimizer])
    sharding = parameter_sharding(FSDPStrategy(), watched.params)
    recorder = SignalRecorder(list(watched.params), HostClock(), sharding=sharding)
    generator = torch.Generator().manual_seed(1)
    expected: list[dict[str, float]] = []
    for step in range(STEPS):
        x, y = torch.randn(8, 6, generator=generator), torch.randn(8, 1, generator=generator)
        mine = slice(4 * rank, 4 * rank + 4)
        for opt in (optimizer, reference):
            opt.zero_grad()
        nn.functional.mse_loss(sharded(x[mine]), y[mine]).backward()
        nn.functional.mse_loss(plain(x), y).backward()  # the global batch: the mean of the ranks' gradients
        recorder.begin_batch()
        recorder.timer.batch_start(step)
        recorder.record_gradients(step, optimizer)
        if step == STEPS - 1:
            recorder.sample_before_step(step, optimizer, [], max_update_elements=10_000)
        optimizer.step()
        reference.step()
        if step == STEPS - 1:
            recorder.sample_after_step()
        recorder.timer.batch_end()
        recorder.record_loss(step, torch.tensor(0.0), None)
        expected.append({n: float(p.grad.norm()) for n, p in plain.named_parameters()})  # type: ignore[union-attr]
        grads = [p.grad for p in plain.parameters() if p.grad is not None]
        expected[-1]["total"] = float(torch.stack([g.norm() for g in grads]).norm())

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(tensor) for _ in range(2)]
        dist.all_gather(out, tensor)
        return torch.stack(out)

    window = recorder.drain(gather)
    if rank == 0:
        result: dict[str, Any] = {
            "names": list(watched.names),
            "shapes": [list(p.shape) for p in watched.params],
            "measured": window.param_norms.tolist(),
            "total": window.grad_norms.tolist(),
            "expected": expected,
            "update_ratio": window.update_ratio.tolist() if window.update_ratio is not None else None,
            "clean": clean_name("net._fsdp_wrapped_module.0.weight"),
        }
        with open(out, "w") as f:
            json.dump(result, f)
    # Both ranks leave together: a rank that tears gloo down while its peer is still in the group aborts it
    # (SIGABRT, "terminate called without an active exception"; seen in about 1 run in 12).
    dist.barrier()
    dist.destroy_process_group()
    # And skip the interpreter's finalization: FSDP's modules still hold the group, and a gloo thread that frees a
    # tensor there takes the GIL of an interpreter going away and aborts the process the same way (CI saw it
    # once with the barrier alone; 0 in 160 runs here). The result is written and flushed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


if __name__ == "__main__":
    mp.spawn(run, args=(sys.argv[1], "--flat" in sys.argv, free_port()), nprocs=2)
