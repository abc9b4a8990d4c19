"""The scripted curves' noise is the same in every test, whatever ran before it (tests/detectors/conftest.py)."""

import numpy as np
import pytest

from tests.detectors import curves


@pytest.mark.parametrize("draws_before", [0, 7])
def test_every_test_starts_from_the_same_draws(draws_before: int) -> None:
    expected = 2.3 * 10 ** (0.05 * np.random.default_rng(0).standard_normal(5))
    assert np.array_equal(curves.flat(5), expected)
    curves.flat(draws_before)  # what this test leaves behind must not reach the next one
