"""Unit tests for fedops.core.partition: IID and Dirichlet label-skew splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedops.core import partition


def _assert_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    for p in parts:
        assert np.all(np.diff(p) > 0), "each part is sorted without duplicates"
    joined = np.concatenate(parts) if parts else np.array([], dtype=int)
    assert len(joined) == n, "parts are disjoint and together as large as the dataset"
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


# --- iid --------------------------------------------------------------------------------------


def test_iid_hand_sized_parts():
    parts = partition.iid(10, 3, seed=0)
    assert [len(p) for p in parts] == [4, 3, 3]
    _assert_disjoint_cover(parts, 10)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 400), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_iid_is_a_disjoint_near_equal_cover(n, data, seed):
    sites = data.draw(st.integers(1, min(n, 25)))
    parts = partition.iid(n, sites, seed=seed)
    assert len(parts) == sites
    _assert_disjoint_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    again = partition.iid(n, sites, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_iid_depends_on_seed():
    a = partition.iid(100, 4, seed=1)
    b = partition.iid(100, 4, seed=2)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("n", "sites", "match"), [(5, 0, "num_sites must be >= 1"), (3, 4, "cannot split 3")]
)
def test_iid_refuses_impossible_site_counts(n, sites, match):
    with pytest.raises(ValueError, match=match):
        partition.iid(n, sites, seed=0)


# --- dirichlet --------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=10, max_size=300),
    data=st.data(),
    alpha=st.floats(0.3, 50.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_is_a_disjoint_cover_respecting_min_examples(labels, data, alpha, seed):
    labels = np.array(labels)
    n = len(labels)
    sites = data.draw(st.integers(1, min(6, n)), label="sites")
    min_examples = data.draw(st.integers(0, n // (3 * sites)), label="min_examples")
    try:
        parts = partition.dirichlet(
            labels, sites, alpha=alpha, seed=seed, min_examples=min_examples, max_attempts=50
        )
    except ValueError as exc:
        assert "no Dirichlet" in str(exc)
        assume(False)
    assert len(parts) == sites
    _assert_disjoint_cover(parts, n)
    assert min(len(p) for p in parts) >= min_examples
    again = partition.dirichlet(
        labels, sites, alpha=alpha, seed=seed, min_examples=min_examples, max_attempts=50
    )
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_small_alpha_skews_labels_more_than_large_alpha():
    labels = np.repeat(np.arange(10), 100)

    def mean_classes_per_site(alpha: float) -> float:
        parts = partition.dirichlet(labels, 5, alpha=alpha, seed=0, min_examples=10)
        # classes that make up at least 5% of a site's data
        counts = [np.bincount(labels[p], minlength=10) / len(p) for p in parts]
        return float(np.mean([np.sum(c >= 0.05) for c in counts]))

    assert mean_classes_per_site(100.0) == 10.0
    assert mean_classes_per_site(0.1) < 6.0


def test_dirichlet_single_site_gets_everything():
    labels = np.array([0, 1, 1, 2, 2, 2, 0, 1, 2, 0])
    (only,) = partition.dirichlet(labels, 1, alpha=0.5, seed=3, min_examples=10)
    np.testing.assert_array_equal(only, np.arange(10))


def test_dirichlet_refuses_bad_arguments():
    labels = np.zeros(20, dtype=int)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        partition.dirichlet(labels, 2, alpha=0.0, seed=0)
    with pytest.raises(ValueError, match="cannot give 3 sites 10 examples each from 20"):
        partition.dirichlet(labels, 3, alpha=1.0, seed=0, min_examples=10)
    with pytest.raises(ValueError, match="cannot split 20 examples across 21 sites"):
        partition.dirichlet(labels, 21, alpha=1.0, seed=0, min_examples=0)


def test_dirichlet_gives_up_after_max_attempts_with_advice():
    # one class, 4 sites, tiny alpha: nearly every draw gives one site (almost) everything
    labels = np.zeros(40, dtype=int)
    with pytest.raises(ValueError, match="raise alpha or lower num_sites"):
        partition.dirichlet(labels, 4, alpha=1e-4, seed=0, min_examples=10, max_attempts=5)
