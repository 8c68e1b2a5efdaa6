"""A robust rule given too few results to do its job refuses the round.

``trimmed_mean`` drops ``floor(beta * n)`` values at each end: with fewer than
``1 / beta`` results that is none, and the plain mean lets one site set the model
(red team: three sites, one sends float32-max, the default ``beta = 0.1`` trims
nothing and the model goes to 3.4e38). Krum with too few results for its ``f`` is
refused the same way. :class:`AggregationRefused` is what the round driver turns
into an aborted round (``tests/unit/runtime/test_driver_refused_aggregate.py``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.results import AggregationRefused, FitResult
from fedops.core.strategies import Krum, MultiKrum, TrimmedMean

BIG = float(np.finfo(np.float32).max)


def _results(values: list[float]) -> list[FitResult]:
    return [
        FitResult(node_id=f"n{i}", params={"w": np.array([v], dtype=np.float32)}, num_examples=1)
        for i, v in enumerate(values)
    ]


def test_trimmed_mean_refuses_to_average_what_it_cannot_trim():
    # the red team's round: two honest sites and one float32-max update, beta = 0.1
    with pytest.raises(AggregationRefused, match=r"trim_fraction=0\.1 .*at least 10 results"):
        TrimmedMean(beta=0.1).aggregate_fit(1, {"w": np.zeros(1)}, _results([0.1, 0.2, BIG]))


def test_trimmed_mean_trims_once_it_has_enough_results():
    values = [0.1] * 9 + [BIG]
    out = TrimmedMean(beta=0.1).aggregate_fit(1, {"w": np.zeros(1)}, _results(values))
    np.testing.assert_allclose(out["w"], [0.1], rtol=1e-6)


def test_beta_zero_is_still_the_explicit_plain_mean():
    out = TrimmedMean(beta=0.0).aggregate_fit(1, {"w": np.zeros(1)}, _results([1.0, 2.0, 6.0]))
    np.testing.assert_allclose(out["w"], [3.0])


@pytest.mark.parametrize(("beta", "need"), [(0.1, 10), (0.25, 4), (1 / 3, 3), (0.2, 5), (0.0, 1)])
def test_min_results_is_the_fewest_that_trim_one_per_side(beta: float, need: int):
    assert TrimmedMean(beta=beta).min_results() == need


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-4, 0.4999))
def test_min_results_agrees_with_trimmed(beta: float):
    rule = TrimmedMean(beta=beta)
    n = rule.min_results()
    assert rule.trimmed(n) >= 1
    assert rule.trimmed(n - 1) == 0
    assert n <= math.ceil(1 / beta) + 1


@pytest.mark.parametrize(
    ("rule", "n"),
    [(Krum(byzantine=1), 4), (MultiKrum(byzantine=1, select=6), 5)],  # n <= 2f+2; m > n
)
def test_krum_short_of_results_is_refused_the_same_way(rule: Krum, n: int):
    with pytest.raises(AggregationRefused):
        rule.aggregate_fit(1, {"w": np.zeros(1)}, _results([float(i) for i in range(n)]))
    assert issubclass(AggregationRefused, ValueError)  # callers catching ValueError still do
