"""The rank a loss finding starts on, from scripted per-rank losses."""

import math

import numpy as np

from lightning_lossguard.detectors import LossDivergence, NonfiniteLoss
from lightning_lossguard.detectors.rank_attribution import RankAttribution, ranks_text
from tests.detectors.curves import RNG


def judge(losses: np.ndarray, code: str = "nonfinite_loss", chunk: int = 10) -> list:
    """Feed ``losses[rank, step]`` window by window, as the diagnostician does: the detector sees the mean over
    ranks, the attribution every rank's own losses."""
    detector = NonfiniteLoss() if code == "nonfinite_loss" else LossDivergence()
    ranks = RankAttribution()
    found = []
    for i in range(0, losses.shape[1], chunk):
        part = losses[:, i : i + chunk]
        steps = list(range(i, i + part.shape[1]))
        ranks.update(steps, part)
        found += ranks.attribute(detector.update(steps, part.mean(axis=0)))
    return found


def test_a_nan_on_rank_1_only_names_rank_1_and_when_the_others_followed() -> None:
    losses = np.full((2, 30), 0.5)
    losses[1, 25:] = math.nan
    losses[0, 26:] = math.nan  # the averaged update poisons rank 0 at the next step
    [found] = judge(losses)
    assert found.evidence["first_step"] == 25
    assert found.evidence["first_rank"] == 1 and found.evidence["ranks_affected"] == 1 and found.evidence["ranks"] == 2
    assert "on rank 1 only" in found.message and "rank 0 followed at step 26" in found.message
    assert "rank 1's batch of step 25" in found.message


def test_nan_on_two_of_eight_ranks_names_both() -> None:
    losses = np.full((8, 20), 0.5)
    losses[[3, 5], 12] = math.inf
    [found] = judge(losses)
    assert found.evidence["first_rank"] == 3 and found.evidence["ranks_affected"] == 2
    assert "on ranks 3 and 5 only" in found.message


def test_nan_on_every_rank_at_once_is_a_shared_cause() -> None:
    losses = np.full((2, 20), 0.5)
    losses[:, 15:] = math.nan
    [found] = judge(losses)
    assert found.evidence["ranks_affected"] == 2 and "every rank at once" in found.message
    assert "only" not in found.message


def test_a_single_process_is_left_as_it_is() -> None:
    ranks = RankAttribution()
    ranks.update([0, 1], np.array([[0.5, math.nan]]))  # one rank: nothing to attribute
    [found] = NonfiniteLoss().update([0, 1], [0.5, math.nan])
    assert ranks.attribute([found]) == [found]


def rising(n: int, start: int, rate: float) -> np.ndarray:
    """A flat noisy loss that grows geometrically from ``start`` on."""
    curve = 1.0 * 10 ** (0.02 * RNG.standard_normal(n))
    grow = np.arange(n) >= start
    curve[grow] *= rate ** (np.arange(n)[grow] - start + 1)
    return curve


def test_a_blow_up_on_one_rank_names_it_and_how_far_behind_the_others_are() -> None:
    bad = rising(200, 100, 1.08)  # rank 1's data blows up at step 100
    dragged = rising(200, 125, 1.02)  # rank 0 follows later and less (the shared weights)
    found = [d for d in judge(np.stack([dragged, bad]), "loss_divergence") if d.subject != "falling"]
    assert found, "the mean loss diverges"
    ev = found[0].evidence
    assert ev["first_rank"] == 1 and ev["ranks_affected"] == 1
    assert ev["first_rank_rise"] > 3 * ev["other_ranks_rise"]
    assert "on rank 1 only" in found[0].message and "rank 1's data" in found[0].message


def test_a_blow_up_on_every_rank_alike_is_not_blamed_on_one() -> None:
    curves = np.stack([rising(200, 100, 1.05), rising(200, 100, 1.05)])
    found = judge(curves, "loss_divergence")
    assert found and found[0].evidence["ranks_affected"] == 2 and "every rank alike" in found[0].message


def test_state_survives_a_checkpoint() -> None:
    ranks = RankAttribution()
    ranks.update([0, 1], np.array([[0.5, math.nan], [math.nan, math.nan]]))
    restored = RankAttribution()
    restored.load_state_dict(ranks.state_dict())
    assert restored.first_nonfinite == [1, 0] and restored.ranks == 2


def test_ranks_text() -> None:
    assert ranks_text([1]) == "rank 1"
    assert ranks_text([5, 1]) == "ranks 1 and 5"
    assert ranks_text([1, 3, 5]) == "ranks 1, 3 and 5"
