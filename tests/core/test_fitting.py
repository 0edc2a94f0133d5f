"""weld_core.fitting: the fast median and three-unknown least squares equal numpy's general routines."""

import numpy as np
import pytest

from weld_core.fitting import least_squares_3, median


@pytest.mark.parametrize('size', [1, 2, 7, 4800, 4801])
def test_median_is_numpys(size: int) -> None:
    values = np.random.default_rng(size).normal(size=size)
    assert median(values) == np.median(values)
    assert median(values.astype(np.float32)) == pytest.approx(float(np.median(values.astype(np.float32))))


def test_least_squares_3_is_the_masked_or_weighted_least_squares_solution() -> None:
    rng = np.random.default_rng(0)
    u, v = rng.uniform(0, 320, 500), rng.uniform(0, 240, 500)
    values = 0.1 + 2e-5 * u - 3e-5 * v + rng.normal(0, 1e-4, 500)
    keep = rng.random(500) > 0.3
    design = np.stack([u, v, np.ones_like(u)], axis=1)
    expected = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
    np.testing.assert_allclose(least_squares_3(u, v, values, keep), expected, rtol=1e-8, atol=1e-12)
    weight = rng.uniform(0, 2, 500)
    root = np.sqrt(weight)
    weighted = np.linalg.lstsq(design * root[:, None], values * root, rcond=None)[0]
    np.testing.assert_allclose(least_squares_3(u, v, values, weight), weighted, rtol=1e-8, atol=1e-12)


def test_least_squares_3_gives_the_minimum_norm_solution_for_points_on_a_line() -> None:
    u = np.arange(20, dtype=np.float64)
    v = np.full(20, 5.0)  # one row of pixels: the slope along v is undetermined
    values = 1.0 + 0.5 * u
    solution = least_squares_3(u, v, values, np.ones(20, bool))
    design = np.stack([u, v, np.ones_like(u)], axis=1)
    np.testing.assert_allclose(solution, np.linalg.lstsq(design, values, rcond=None)[0], atol=1e-9)
