import numpy as np
import pytest

from tests.detectors import curves


@pytest.fixture(autouse=True)
def _each_test_draws_its_own_numbers(request: pytest.FixtureRequest) -> None:
    """Every test draws the same noise whatever ran before it: with one stream per module, a test added above another
    changed the other's data (and a test could pass only on the draws its neighbours left it)."""
    curves.RNG = np.random.default_rng(0)
    if isinstance(getattr(request.module, "RNG", None), np.random.Generator):
        request.module.RNG = np.random.default_rng(getattr(request.module, "RNG_SEED", 0))
