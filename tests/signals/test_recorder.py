"""The recorder's one gather per report: every rank's losses and timings, and sharded gradients combined into the
norm of the whole parameter. Ranks are simulated in one process: each rank is a recorder holding its own piece of
a weight, and the gather stacks the packets the ranks sent."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from lightning_lossguard.signals.clock import HostClock
from lightning_lossguard.signals.gradients import NO_GRADIENT
from lightning_lossguard.signals.losses import LossProbe
from lightning_lossguard.signals.parameters import Sharding, sharding_of
from lightning_lossguard.signals.recorder import SignalRecorder
from lightning_lossguard.signals.step_timer import PHASES
from lightning_lossguard.signals.window import Window

torch.manual_seed(0)
WEIGHT = torch.randn(8, 4)
GRADS = [torch.randn(8, 4) for _ in range(3)]  # one per optimizer step
BIAS_GRADS = [torch.randn(8) for _ in range(3)]


class Rank:
    """One simulated rank: rows ``rows`` of the sharded weight, the whole (replicated) bias."""

    def __init__(self, rows: slice, ways: int, losses: list[float]) -> None:
        self.weight = nn.Parameter(WEIGHT[rows].clone())
        self.bias = nn.Parameter(torch.zeros(8))
        self.rows = rows
        self.optimizer = torch.optim.SGD([self.weight, self.bias], lr=0.1)
        self.recorder = SignalRecorder([self.weight, self.bias], HostClock(), sharding=[Sharding(ways), None])
        self.losses = losses
        self.sent: torch.Tensor | None = None

    def train(self, dead_rows: int = 0, first_dead: int | None = None) -> None:
        for step, (grad, bias) in enumerate(zip(GRADS, BIAS_GRADS)):
            self.recorder.begin_batch()
            self.recorder.timer.batch_start(step)
            self.recorder.timer.backward_start()
            self.recorder.timer.backward_end()
            self.weight.grad = grad[self.rows].clone()
            self.weight.grad[: first_dead if step == 0 and first_dead is not None else dead_rows] = 0.0
            self.bias.grad = bias.clone()
            self.recorder.record_gradients(step, self.optimizer)
            # The batch before a report is sampled (and, with first_dead, the run's first batch).
            sampled = step == len(GRADS) - 1 or (step == 0 and first_dead is not None)
            if sampled:
                self.recorder.sample_before_step(step, self.optimizer, [0], max_update_elements=1000)
            self.recorder.timer.optimizer_start()
            self.optimizer.step()
            if sampled:
                self.recorder.sample_after_step()
            self.recorder.timer.batch_end()
            self.recorder.record_loss(step, torch.tensor(self.losses[step]), None)


def drain_all(make: Callable[[], list[Rank]]) -> list[Window]:
    """Run the ranks twice from the same start: once to capture their packets, once to drain with all of them."""
    first = make()
    packets = []
    for rank in first:
        captured: list[torch.Tensor] = []

        def capture(t: torch.Tensor, captured: list[torch.Tensor] = captured) -> torch.Tensor:
            captured.append(t)
            return torch.stack([t] * len(first))

        rank.recorder.drain(capture)
        assert len(captured) == 1  # one collective per report, whatever was recorded
        packets.append(captured[0])
    second = make()
    calls: list[int] = []

    def gathered(t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.stack(packets)

    windows = [rank.recorder.drain(gathered) for rank in second]
    assert len(calls) == len(second)
    return windows


def two_ranks(dead: int = 0) -> list[Rank]:
    ranks = [Rank(slice(0, 4), 2, [0.5, 0.4, 0.3]), Rank(slice(4, 8), 2, [0.6, math.nan, 0.2])]
    for rank in ranks:
        rank.train(dead)
    return ranks


def test_sharded_norms_are_those_of_the_whole_parameter_and_losses_keep_their_rank() -> None:
    windows = drain_all(two_ranks)
    expected = [[g.norm().item(), b.norm().item()] for g, b in zip(GRADS, BIAS_GRADS)]
    for window in windows:  # every rank computes the same numbers
        np.testing.assert_allclose(window.param_norms, expected, rtol=1e-6)
        assert window.ranks == 2
        np.testing.assert_allclose(window.rank_loss, [[0.5, 0.4, 0.3], [0.6, math.nan, 0.2]], rtol=1e-6)
        np.testing.assert_allclose(window.loss, [0.55, math.nan, 0.25], rtol=1e-6)  # a NaN on any rank shows
        assert set(window.rank_phase_ms) == set(PHASES) and window.rank_phase_ms["step"].shape == (2, 3)
        assert np.isfinite(window.rank_phase_ms["backward"]).all()
    tail = windows[0].rank_tail()
    assert tail.step == 2 and tail.ranks == 2 and tail.loss is not None
    np.testing.assert_allclose(tail.loss, [0.3, 0.2], rtol=1e-6)
    assert set(tail.phase_rows) == set(PHASES) and tail.phase_rows["step"].shape == (2, 3)


def test_a_piece_held_by_two_ranks_of_four_counts_once() -> None:
    def four() -> list[Rank]:
        ranks = [Rank(slice(0, 4), 2, [0.5] * 3), Rank(slice(4, 8), 2, [0.5] * 3)]
        ranks += [Rank(slice(0, 4), 2, [0.5] * 3), Rank(slice(4, 8), 2, [0.5] * 3)]  # a replicated mesh dimension
        for rank in ranks:
            rank.train()
        return ranks

    [window, *_] = drain_all(four)
    np.testing.assert_allclose(window.param_norms[:, 0], [g.norm().item() for g in GRADS], rtol=1e-6)


def test_dead_units_and_update_ratios_add_up_over_the_shards() -> None:
    windows = drain_all(lambda: two_ranks(dead=3))  # 3 of each rank's 4 rows get no gradient: 6 of 8
    ranks = two_ranks(dead=3)  # the same run, to read the whole weight after the sampled step
    applied = torch.cat([r.weight.grad for r in ranks])  # type: ignore[misc]
    after = torch.cat([r.weight.detach() for r in ranks])
    expected = (0.1 * applied).norm().item() / (after + 0.1 * applied).norm().item()  # SGD: w -= 0.1 * grad
    for window in windows:
        assert window.dead_unit_share is not None and window.update_ratio is not None and window.sample_step == 2
        assert window.dead_unit_share[0] == 0.75 and window.dead_unit_share[1] == NO_GRADIENT  # the bias has no rows
        np.testing.assert_allclose(window.update_ratio[0], expected, rtol=1e-5)


def test_the_first_dead_unit_sample_of_a_window_is_combined_too() -> None:
    def sampled_twice() -> list[Rank]:
        ranks = [Rank(slice(0, 4), 2, [0.5] * 3), Rank(slice(4, 8), 2, [0.5] * 3)]
        for rank in ranks:
            rank.train(dead_rows=3, first_dead=1)  # 2 of 8 rows dead at the start, 6 of 8 at the end
        return ranks

    for window in drain_all(sampled_twice):
        assert window.dead_unit_first is not None and window.dead_unit_share is not None
        assert window.dead_unit_first[0] == 0.25 and window.dead_unit_share[0] == 0.75


def test_a_single_process_drain_is_unchanged() -> None:
    [rank] = [Rank(slice(0, 8), 1, [0.5, 0.4, 0.3])]
    rank.recorder.gradients.sharding = [None, None]
    rank.train()
    window = rank.recorder.drain()
    assert window.ranks == 1 and window.rank_loss is None and window.rank_phase_ms == {}
    np.testing.assert_allclose(window.param_norms[:, 0], [g.norm().item() for g in GRADS], rtol=1e-6)
    assert rank.recorder.last_ranks is None


class FakeMesh:
    def __init__(self, *sizes: int) -> None:
        self.sizes = sizes

    def size(self, dim: int) -> int:
        return self.sizes[dim]


class Placement:
    def __init__(self, dim: int | None) -> None:
        self.dim = dim

    def is_shard(self) -> bool:
        return self.dim is not None


class FakeDTensor:
    def __init__(self, mesh: FakeMesh, *dims: int | None) -> None:
        self.device_mesh = mesh
        self.placements = tuple(Placement(d) for d in dims)


def test_sharding_of_reads_the_placements() -> None:
    assert sharding_of(torch.zeros(2)) is None
    assert sharding_of(FakeDTensor(FakeMesh(4), 0)) == Sharding(4, by_rows=True)  # type: ignore[arg-type]
    assert sharding_of(FakeDTensor(FakeMesh(2, 4), None, 0)) == Sharding(4, True)  # type: ignore[arg-type]
    assert sharding_of(FakeDTensor(FakeMesh(2, 4), 0, 1)) == Sharding(8, by_rows=False)  # type: ignore[arg-type]
    assert sharding_of(FakeDTensor(FakeMesh(2), None)) is None  # type: ignore[arg-type]


def test_any_nonfinite_peeks_at_the_losses_without_taking_them() -> None:
    for terms in (None, {"a": torch.tensor(1.0)}):
        probe = LossProbe()
        probe.record(torch.tensor(1.0), terms)
        assert not probe.any_nonfinite()
        probe.record(torch.tensor(float("nan")), terms)
        assert probe.any_nonfinite()
        assert probe.take().shape[0] == 2  # nothing was consumed by the check
        assert not probe.any_nonfinite()


def test_any_nonfinite_reads_only_the_losses_since_the_previous_check() -> None:
    for terms in (None, {"a": torch.tensor(1.0)}):
        probe = LossProbe()
        probe.record(torch.tensor(float("inf")), terms)
        assert probe.any_nonfinite()
        probe.record(torch.tensor(2.0), terms)
        assert not probe.any_nonfinite()  # the inf was read by the first check (its report comes right away)
        probe.record(torch.tensor(3.0), terms)
        taken = probe.take()
        assert taken[:, 0].tolist() == [float("inf"), 2.0, 3.0]  # checked chunks and fresh losses, in order
        probe.record(torch.tensor(float("nan")), terms)
        assert probe.any_nonfinite()
        assert probe.take().shape[0] == 1


def test_pending_losses_are_read_once_each_between_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # A run validated after every batch asks for the pending losses at each validation: each call reads only the
    # losses recorded since the one before (a validation per batch used to restack its whole interval each time),
    # in order, across the tripwire's checked chunks, and the report still takes them all.
    for terms in (None, {"a": torch.tensor(1.0)}):
        probe = LossProbe()
        read: list[int] = []
        since = LossProbe._since
        monkeypatch.setattr(
            LossProbe, "_since", lambda self, first, read=read, since=since: read.append(first) or since(self, first)
        )
        expected: list[float] = []
        for batch in range(7):
            probe.record(torch.tensor(float(batch)), terms)
            expected.append(float(batch))
            if batch in (2, 4):
                assert not probe.any_nonfinite()  # moves the plain losses into a checked chunk
            if batch % 2:
                assert probe.pending().tolist() == expected
        assert read == [0, 2, 4]  # each call starts where the one before stopped
        assert probe.take()[:, 0].tolist() == expected
        assert probe.pending().tolist() == []  # the report took them: nothing read is kept
        probe.record(torch.tensor(9.0), terms)
        assert probe.pending().tolist() == [9.0]
        monkeypatch.undo()


def test_a_changed_loss_scale_applies_from_the_next_loss_on() -> None:
    # Lightning divides each loss by the accumulation of its batch: a scheduler that changes it mid-window.
    recorder = SignalRecorder([], HostClock(), loss_scale=8)
    for step, loss in enumerate([0.1, 0.1, 0.25, 0.25]):
        if step == 2:
            recorder.change_loss_scale(4)
        recorder.record_loss(step, torch.tensor(loss), None)
    np.testing.assert_allclose(recorder.drain().loss, [0.8, 0.8, 1.0, 1.0])
    recorder.record_loss(4, torch.tensor(0.25), None)
    np.testing.assert_allclose(recorder.drain().loss, [1.0])  # the next window starts at the new scale


def test_a_plain_loss_is_kept_only_when_the_run_has_no_loss_terms() -> None:
    recorder = SignalRecorder([], HostClock())
    recorder.record_loss(0, torch.tensor(1.0), None)  # the first loss fixes the run's terms: none
    assert recorder.record_plain_loss(1, torch.tensor(2.0, requires_grad=True), 0.1)
    window = recorder.drain()
    assert window.batch_steps == [0, 1] and window.loss.tolist() == [1.0, 2.0]
    assert np.isnan(window.learning_rate[0]) and window.learning_rate[1] == 0.1

    with_terms = SignalRecorder([], HostClock())
    with_terms.record_loss(0, torch.tensor(1.0), {"a": torch.tensor(0.5)})
    assert not with_terms.record_plain_loss(1, torch.tensor(2.0), 0.1)  # its row needs the terms: not kept
    assert with_terms.drain().batch_steps == [0]

    fresh = SignalRecorder([], HostClock())
    assert not fresh.record_plain_loss(0, torch.tensor(1.0), 0.1)  # no loss seen yet: the terms are unknown


def test_logged_scalars_are_read_with_the_losses_and_dropped_without_them() -> None:
    recorder = SignalRecorder([], HostClock())
    recorder.capture_logged("recon", torch.tensor(0.75))
    recorder.record_loss(0, torch.tensor(1.0), None)
    recorder.capture_logged("recon", 0.5)
    recorder.record_loss(1, torch.tensor(0.8), None)
    window = recorder.drain()
    assert window.logged_rows == [0, 1] and window.logged["recon"].tolist() == [0.75, 0.5]
    # Manual optimization that returns no loss: nothing to judge the logged values against, so they are not read.
    recorder.capture_logged("d_loss", torch.tensor(0.3))
    window = recorder.drain()
    assert window.logged == {} and window.logged_rows == []
    assert recorder.logged.take(torch.device("cpu")).rows == [], "dropped, not carried into the next window"
