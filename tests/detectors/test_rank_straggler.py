"""rank_straggler on scripted per-rank phase times."""

import subprocess
import sys

import numpy as np

from lightning_lossguard.detectors import RankStraggler
from tests.detectors.curves import RNG

BATCHES = 10


def phases(ranks: int, **slow: tuple[int, float]) -> dict[str, np.ndarray]:
    """One interval of healthy phase times (ms, with jitter) for ``ranks`` ranks; ``slow[phase] = (rank, extra)``
    adds ``extra`` ms to that rank's phase, and the wait it causes to the others' backward (DDP's all-reduce)."""
    base = {"data": 1.0, "training_step": 4.0, "backward": 6.0, "optimizer": 2.0}
    out = {p: v * (1 + 0.1 * RNG.standard_normal((ranks, BATCHES))) for p, v in base.items()}
    for phase, (rank, extra) in slow.items():
        out[phase][rank] += extra
        if phase != "backward":
            others = [r for r in range(ranks) if r != rank]
            out["backward"][others] += extra  # the others wait for it inside the synchronising phase
    out["step"] = out["training_step"] + out["backward"] + out["optimizer"]
    return out


def feed(detector: RankStraggler, intervals: list[dict[str, np.ndarray]]) -> list:
    found = []
    for i, interval in enumerate(intervals):
        found += detector.update(list(range(i * BATCHES, (i + 1) * BATCHES)), interval)
    return found


def test_a_rank_slow_in_data_loading_is_named_after_persist_intervals_not_the_ranks_waiting_for_it() -> None:
    detector = RankStraggler()
    assert feed(detector, [phases(2, data=(1, 50.0)) for _ in range(2)]) == []  # not yet persistent
    [found] = feed(detector, [phases(2, data=(1, 50.0))])
    ev = found.evidence
    assert found.code == "rank_straggler" and found.severity == "warning"
    assert ev["slow_rank"] == 1 and ev["ranks_slow"] == 1 and ev["intervals"] == 3
    assert ev["data_ms"] > 45 and ev["data_others_ms"] < 2 and ev["backward_others_ms"] > ev["backward_ms"]
    assert "Rank 1" in found.message and "data loading" in found.message and "wait for it in backward" in found.message
    assert "data pipeline" in found.remedies[0] and found.subject == "rank 1 data"


def test_one_slow_rank_of_eight_in_its_optimizer_step() -> None:
    [found] = feed(RankStraggler(), [phases(8, optimizer=(5, 30.0)) for _ in range(3)])
    assert found.evidence["slow_rank"] == 5 and "optimizer" in found.message


def test_a_forward_straggler_under_ddp_is_the_forward_not_the_others_backward() -> None:
    [found] = feed(RankStraggler(), [phases(4, training_step=(2, 40.0)) for _ in range(3)])
    assert found.evidence["slow_rank"] == 2 and "forward/loss" in found.message


def test_healthy_ranks_with_jitter_and_small_differences_stay_quiet() -> None:
    intervals = [phases(2) for _ in range(20)]
    intervals += [phases(2, data=(0, 2.0)) for _ in range(5)]  # 2 ms: below min_excess_ms and min_share
    assert feed(RankStraggler(), intervals) == []


def test_a_slowness_that_moves_between_ranks_is_not_persistent() -> None:
    intervals = [phases(2, data=(i % 2, 50.0)) for i in range(10)]
    assert feed(RankStraggler(), intervals) == []


def test_when_half_the_ranks_are_slow_no_rank_stands_out() -> None:
    intervals = [phases(4, data=(0, 50.0)) for _ in range(5)]
    for interval in intervals:
        interval["data"][1] += 50.0
    assert feed(RankStraggler(), intervals) == []


def test_a_single_process_is_never_judged_and_needs_no_note() -> None:
    detector = RankStraggler()
    one = {p: v[:1] for p, v in phases(2).items()}
    assert feed(detector, [one] * 5) == [] and detector.unjudged() is None
    feed(detector, [phases(2)])
    assert "needs 3 report intervals" in (detector.unjudged() or "")


def test_short_intervals_do_not_count() -> None:
    detector = RankStraggler()
    short = {p: v[:, :3] for p, v in phases(2, data=(1, 50.0)).items()}
    assert feed(detector, [short] * 5) == [] and detector.intervals == 0


def test_thresholds() -> None:
    strict = RankStraggler(RankStraggler.Thresholds(persist=1, slow_ratio=100))
    assert feed(strict, [phases(2, data=(1, 50.0))]) == []
    loose = RankStraggler(RankStraggler.Thresholds(persist=1))
    assert feed(loose, [phases(2, data=(1, 50.0))])


def test_judging_ranks_does_not_import_numpy_masked_arrays() -> None:
    # np.median's first call imports numpy.ma (~13 ms), paid at the first report of every rank. A fresh
    # interpreter, since any earlier test may have imported it; a straggler is found, so every median ran.
    script = (
        "import sys\n"
        "from tests.detectors.test_rank_straggler import feed, phases\n"
        "from lightning_lossguard.detectors import RankStraggler\n"
        "assert feed(RankStraggler(), [phases(4, data=(1, 50.0)) for _ in range(3)])\n"
        "assert 'numpy.ma' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
