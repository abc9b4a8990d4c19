import numpy as np

from lightning_lossguard.detectors.stats import BlockMedians, convex_curvature_noise, curvature_noise, row_medians


def ar1(n: int, rho: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = np.empty(n)
    noise[0] = rng.standard_normal()
    for i in range(1, n):
        noise[i] = rho * noise[i - 1] + np.sqrt(1 - rho**2) * rng.standard_normal()
    return noise


def test_curvature_noise_ignores_a_steady_trend_at_every_lag() -> None:
    values = 0.05 * np.arange(400) + ar1(400, 0.0)  # spread 1 around a line that climbs 20
    for lag in (1, 2, 3, 4):
        assert 0.8 < curvature_noise(values, lag) < 1.2


def test_a_longer_lag_sees_noise_that_wanders() -> None:
    values = ar1(400, 0.8)  # spread 1, but neighbours share most of their deviation
    assert curvature_noise(values) < 0.45 < 0.65 < curvature_noise(values, lag=4)  # in theory 0.38, 0.71


def test_the_convex_measure_reads_symmetric_noise_alike_and_ignores_a_fall_that_levels_off() -> None:
    values = ar1(400, 0.0)
    for lag in (1, 4, 16):
        assert 0.85 < convex_curvature_noise(values, lag) < 1.2
    fall = values + 100 * np.exp(-np.arange(400) / 30)  # a loss that falls fast and levels off, 100x its noise
    assert curvature_noise(fall, 16) > 1.3 and curvature_noise(fall, 40) > 1.4  # the fall's curvature counted
    assert 0.85 < convex_curvature_noise(fall, 16) < 1.2 and convex_curvature_noise(fall, 40) < 1.0
    assert np.isnan(convex_curvature_noise(np.arange(20.0) ** 2, 2))  # a parabola: no negative one


def test_too_few_values_for_the_lag_have_no_noise() -> None:
    assert np.isnan(curvature_noise([1.0, 2.0, 4.0, 3.0, 5.0], lag=2))
    assert np.isfinite(curvature_noise([1.0, 2.0, 4.0, 3.0, 5.0, 4.0], lag=2))


def test_row_medians_are_numpy_medians_nan_included() -> None:
    rng = np.random.default_rng(0)
    for width in (1, 2, 5, 6):
        rows = rng.normal(size=(4, width))
        rows[1, 0] = np.nan  # a row with a NaN has a NaN median, as np.median says
        rows[2, -1] = -np.inf
        np.testing.assert_array_equal(row_medians(rows), np.median(rows, axis=1))


def test_block_medians_since_a_step_are_the_blocks_that_end_after_it() -> None:
    blocks = BlockMedians(4)
    blocks.extend(list(range(10)), [1.0, 9.0, 2.0, 3.0, 5.0, 6.0, 7.0, 100.0, 0.0, 0.0])
    assert blocks.since(3) == [(7, 6.5)]  # the pending two values are no block yet
    assert blocks.since(2) == [(3, 2.5), (7, 6.5)]
