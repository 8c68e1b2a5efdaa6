"""Drift statistics from shared-bin histograms, checked against scipy on raw samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from fedops.core.monitoring.drift import (
    bin_edges,
    drift_report,
    histogram,
    js_distance,
    ks,
    pooled,
    psi,
    psi_level,
)


def test_psi_is_hand_computed():
    ref, cur = np.array([50, 50]), np.array([25, 75])
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(ref, cur) == pytest.approx(expected, rel=1e-5)
    assert psi(ref, ref) == 0.0
    assert [psi_level(v) for v in (0.05, 0.1, 0.2, 0.25, 0.3)] == [
        "none",
        "moderate",
        "moderate",
        "moderate",
        "significant",
    ]


def test_psi_stays_finite_when_a_bin_empties():
    assert math.isfinite(psi(np.array([10, 10, 10]), np.array([0, 15, 15])))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 50), min_size=2, max_size=12).filter(lambda c: sum(c) > 0),
    st.data(),
)
def test_js_distance_equals_scipy(ref, data):
    cur = data.draw(
        st.lists(st.integers(0, 50), min_size=len(ref), max_size=len(ref)).filter(
            lambda c: sum(c) > 0
        )
    )
    assert js_distance(np.array(ref), np.array(cur)) == pytest.approx(
        jensenshannon(ref, cur, base=2), abs=1e-9
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(5, 300), st.integers(5, 300), st.floats(-1, 1))
def test_ks_equals_scipy_when_every_value_has_its_own_bin(seed, n, m, shift):
    rng = np.random.default_rng(seed)
    a = np.round(rng.normal(0, 1, n), 2)
    b = np.round(rng.normal(shift, 1, m), 2)
    edges = np.concatenate([np.unique(np.concatenate([a, b])), [np.inf]])
    statistic, pvalue = ks(histogram(a, edges), histogram(b, edges))
    exact = ks_2samp(a, b, method="asymp")
    assert statistic == pytest.approx(exact.statistic, abs=1e-12)
    assert pvalue == pytest.approx(exact.pvalue, abs=1e-9)


def test_drift_is_detected_on_a_shift_and_not_on_a_resample():
    rng = np.random.default_rng(0)
    edges = bin_edges(rng.normal(0, 1, 5000), bins=10)
    assert len(edges) == 11 and edges[0] == -np.inf and edges[-1] == np.inf
    ref = histogram(rng.normal(0, 1, 5000), edges)
    same = histogram(rng.normal(0, 1, 5000), edges)
    moved = histogram(rng.normal(1.0, 1, 5000), edges)
    quiet, loud = drift_report(["x", "x"], [ref, ref], [same, moved])
    assert quiet.level == "none" and not quiet.alert and quiet.ks_pvalue > 0.001
    assert loud.level == "significant" and loud.alert and loud.ks_pvalue < 1e-6


def test_pooled_drift_is_the_drift_of_summed_histograms():
    rng = np.random.default_rng(1)
    edges = bin_edges(rng.normal(size=1000), bins=8)
    sites = [rng.normal(i * 0.2, 1, 300) for i in range(4)]
    summed = pooled([histogram(s, edges) for s in sites])
    assert np.array_equal(summed, histogram(np.concatenate(sites), edges))
    with pytest.raises(ValueError, match="different bins"):
        pooled([np.zeros(3, np.int64), np.zeros(4, np.int64)])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no finite values"):
        bin_edges(np.array([np.nan]))
    with pytest.raises(ValueError, match="no observations"):
        psi(np.array([0, 0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="one name"):
        drift_report(["a"], [], [])
