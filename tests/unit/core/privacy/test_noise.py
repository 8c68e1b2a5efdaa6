"""SecureNormal: Gaussian noise from the OS CSPRNG, checked against the normal law."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedops.core.privacy.noise import SecureNormal

ALPHA = 1e-9  # chance failure rate per assertion


@pytest.mark.parametrize(("loc", "scale"), [(0.0, 1.0), (3.0, 0.25), (-1.0, 40.0)])
def test_the_draws_follow_the_normal_law(loc, scale):
    draws = SecureNormal().normal(loc, scale, size=200_001)  # odd: the last pair is cut
    assert draws.shape == (200_001,) and np.all(np.isfinite(draws))
    assert stats.kstest(draws, "norm", args=(loc, scale)).pvalue > ALPHA
    # the two halves of each Box-Muller pair are independent
    half = len(draws) // 2
    assert stats.pearsonr(draws[:half], draws[half : 2 * half]).pvalue > ALPHA


def test_shapes_and_scalars_match_numpy():
    source = SecureNormal()
    assert source.normal(0.0, 1.0, size=(3, 4)).shape == (3, 4)
    assert isinstance(source.normal(0.0, 2.0), float)
    assert source.normal(0.0, 1.0, size=0).shape == (0,)


def test_two_draws_never_repeat_and_no_seed_reproduces_them():
    a, b = SecureNormal().normal(size=64), SecureNormal().normal(size=64)
    assert not np.array_equal(a, b)
