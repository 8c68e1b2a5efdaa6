"""Bins and leading classes settled from a fast softmax are the site's, or left to it.

A site bins ``torch.softmax(logits, dim=1)`` (float32, then float64) on ``OUTPUT_EDGES``
and predicts its ``argmax``. :mod:`fedops.core.monitoring.outputs` reads both off a
faster softmax (along the first axis of the transposed logits: other bits) and flags the
rows where that could differ. Every row it does not flag must have exactly the site's bins
and class, on logits built to put probabilities on the bin edges and to tie.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.monitoring.outputs import (
    MARGIN,
    grid,
    owner_counts,
    settled_bins,
    settled_leader,
)
from fedops.core.monitoring.profile import OUTPUT_EDGES
from fedops.core.monitoring.rows import bin_index

EDGES = OUTPUT_EDGES[1:-1].tolist()


def edge_logits(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    """Logits whose probabilities sit on, or a hair from, the bin edges; with some
    tied rows and some far from any edge."""
    out = np.empty((rows, classes), np.float32)
    offsets = [0.0, 1e-9, -1e-9, 3e-8, -3e-8, 1e-6, -1e-6, 5e-5, -5e-5, 1e-3]
    for r in range(rows):
        kind = rng.integers(4)
        if kind == 0:  # one probability at (or next to) an edge
            p = rng.dirichlet(np.ones(classes - 1)) * 1.0
            target = rng.choice(EDGES) + rng.choice(offsets)
            p = np.concatenate([[target], p * (1 - target)])
            p = p[rng.permutation(classes)]
            out[r] = np.log(np.maximum(p, 1e-30)) + rng.normal()
        elif kind == 1:  # two leading classes tied, or nearly
            z = rng.normal(size=classes) * 0.5
            i, j = rng.choice(classes, 2, replace=False)
            z[i] = z.max() + 1
            z[j] = z[i] - rng.choice([0.0, 1e-7, 1e-5, 1e-3])
            out[r] = z
        elif kind == 2:  # confident rows
            out[r] = rng.normal(size=classes) * rng.choice([3.0, 10.0, 40.0])
        else:  # near uniform: every probability near 1/classes
            out[r] = rng.normal(size=classes) * rng.choice([0.0, 1e-6, 1e-3, 0.1])
    return out


def site_bins(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a site computes: bins of each class's float64 probability, and the argmax."""
    exact = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    bins = np.stack(
        [bin_index(exact[:, k].astype(np.float64), OUTPUT_EDGES) for k in range(exact.shape[1])]
    )
    return bins, exact.argmax(axis=1)


def fast(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits).T.contiguous(), dim=0).numpy()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), classes=st.sampled_from([2, 3, 10, 17, 70]))
def test_settled_rows_have_the_sites_bins_and_class(seed: int, classes: int):
    logits = edge_logits(np.random.default_rng(seed), 200, classes)
    want_bins, want_class = site_bins(logits)
    cols = fast(logits)
    bins, unsettled = settled_bins(cols, OUTPUT_EDGES)
    leader, close = settled_leader(cols)
    settled = ~unsettled
    np.testing.assert_array_equal(bins[:, settled], want_bins[:, settled])
    np.testing.assert_array_equal(leader[~close], want_class[~close])


def test_a_value_on_an_edge_or_a_tie_is_left_to_the_exact_softmax():
    cols = np.array(
        [[0.1, 0.3, 0.05, 0.45, 0.45 + MARGIN / 4], [0.9, 0.7, 0.95, 0.45, 0.45 - MARGIN / 4]],
        np.float32,
    )
    cols[0, 2] = np.nextafter(np.float32(0.2), np.float32(1))  # an ulp above an edge
    cols[1, 2] = 1 - cols[0, 2]
    _, unsettled = settled_bins(cols, OUTPUT_EDGES)
    assert unsettled.tolist() == [True, True, True, False, False]
    _, close = settled_leader(cols)
    assert close.tolist() == [False, False, False, True, True]


def test_rows_far_from_every_edge_are_settled_and_binned():
    cols = np.array([[0.05, 0.15, 0.55, 0.999], [0.95, 0.85, 0.45, 0.001]], np.float32)
    bins, unsettled = settled_bins(cols, OUTPUT_EDGES)
    assert not unsettled.any()
    assert bins.tolist() == [[0, 1, 5, 9], [9, 8, 4, 0]]
    leader, close = settled_leader(cols)
    assert leader.tolist() == [1, 1, 0, 0] and not close.any()


def test_values_that_are_no_probabilities_are_unsettled():
    cols = np.array([[np.nan, np.inf, 0.55, 3.0], [0.45, 0.45, 0.05, -2.5]], np.float32)
    _, unsettled = settled_bins(cols, OUTPUT_EDGES)
    assert unsettled.tolist() == [True, True, False, True]
    _, close = settled_leader(cols)
    assert close[:2].tolist() == [True, True]


@pytest.mark.parametrize(
    ("edges", "want"),
    [
        (OUTPUT_EDGES, (0.1, 0.1)),
        (np.array([-np.inf, 0.2, 0.5, np.inf]), (0.2, 0.3)),
        (np.array([-np.inf, 0.1, 0.2, 0.5, np.inf]), None),  # uneven
        (np.array([0.0, 0.1, 0.2, 0.3, np.inf]), None),  # a finite first edge
        (np.array([-np.inf, 0.5, np.inf]), None),  # a single inner edge
    ],
)
def test_grid_recognises_evenly_spaced_edges(edges: np.ndarray, want: tuple[float, float] | None):
    got = grid(edges)
    if want is None:
        assert got is None
    else:
        assert got is not None and got == pytest.approx(want)


def test_uneven_edges_leave_every_row_unsettled():
    cols = np.full((3, 5), 0.33, np.float32)
    _, unsettled = settled_bins(cols, np.array([-np.inf, 0.1, 0.2, 0.5, np.inf]))
    assert unsettled.all()


def test_owner_counts_count_each_owners_values_per_bin():
    rng = np.random.default_rng(3)
    owner = np.sort(rng.integers(0, 7, 500))
    bins = rng.integers(0, 4, (3, 500)).astype(np.int8)
    got = owner_counts(bins, owner, 7, 4)
    want = np.zeros((3, 7, 4), np.int64)
    for k in range(3):
        np.add.at(want[k], (owner, bins[k].astype(np.int64)), 1)
    np.testing.assert_array_equal(got, want)
