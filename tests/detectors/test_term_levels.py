import numpy as np

from lightning_lossguard.detectors.term_levels import TermLevels


def levels() -> TermLevels:
    return TermLevels(keep=10, share=0.25, fall=1.2, z=3.0)  # the defaults: one block of loss_divergence


def codebook_catching_up() -> dict[str, np.ndarray]:
    """A VQ-VAE's first 100 steps: the reconstruction falls 0.8 -> 0.2 while the codebook term climbs 0.3 -> 14."""
    rng = np.random.default_rng(4)
    noise = 10 ** (0.05 * rng.standard_normal((2, 100)))
    return {
        "reconstruction": np.geomspace(0.8, 0.2, 100) * noise[0],
        "codebook": np.concatenate([np.full(20, 0.3), np.geomspace(0.3, 14, 80)]) * noise[1],
    }


def fed(terms: dict[str, np.ndarray]) -> TermLevels:
    found = levels()
    for i in range(0, 100, 10):
        found.extend({name: values[i : i + 10] for name, values in terms.items()})
    return found


def test_a_term_still_learnt_while_another_climbs_is_a_trade_off() -> None:
    said = fed(codebook_catching_up()).trade_off()
    assert said is not None and said.startswith("the rise is in codebook 0.316 -> 10.3")
    assert "while reconstruction fell 0.74 -> 0.214" in said


def test_terms_that_all_climb_are_no_trade_off() -> None:
    terms = codebook_catching_up()
    terms["reconstruction"] = terms["reconstruction"][::-1] * 3
    assert fed(terms).trade_off() == ""


def test_a_small_term_that_shrinks_is_no_trade_off() -> None:
    # A regulariser at ~5% of the start that shrinks 10x is not the objective being learnt.
    terms = {"data": codebook_catching_up()["codebook"] + 0.8, "weight_decay": 0.05 * np.geomspace(1, 0.1, 100)}
    assert fed(terms).trade_off() == ""


def test_a_fall_within_the_terms_noise_is_no_trade_off() -> None:
    # The reconstruction's level falls 1.5x, but it wanders by a factor of 2 from batch to batch: its latest values
    # are not below its first beyond that noise.
    rng = np.random.default_rng(1)
    terms = codebook_catching_up()
    terms["reconstruction"] = np.concatenate([np.full(50, 0.8), np.full(50, 0.53)]) * 10 ** (
        0.3 * rng.standard_normal(100)
    )
    found = fed(terms)
    first, latest = np.median(found.first["reconstruction"]), np.median(found.latest["reconstruction"])
    assert first >= 1.2 * latest, "the level did fall as far as a learnt term's"
    assert found.trade_off() == ""


def test_a_run_without_terms_says_so() -> None:
    assert levels().trade_off() is None
    assert TermLevels(30, 0.25, 1.2, 3.0).trade_off() is None


def test_the_levels_survive_a_checkpoint() -> None:
    before = fed(codebook_catching_up())
    after = levels()
    after.load_state_dict(before.state_dict())
    assert after.trade_off() == before.trade_off() and after.first == before.first
