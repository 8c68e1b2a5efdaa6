"""The batched shuffle seeds equal what each site computes with numpy's SeedSequence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.seeds import shuffle_seeds
from fedops.tasks.site import shuffle_seed


@settings(max_examples=200, deadline=None)
@given(
    run_seed=st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**130)),
    server_round=st.one_of(st.integers(0, 10_000), st.integers(0, 2**70)),
    sites=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=12),
)
def test_batched_seeds_equal_seed_sequence_for_any_run_seed_round_and_sites(
    run_seed, server_round, sites
):
    got = shuffle_seeds(run_seed, server_round, np.array(sites, dtype=np.int64))
    assert got.dtype == np.int64 and got.shape == (len(sites),)
    assert got.tolist() == [shuffle_seed(run_seed, server_round, s) for s in sites]


def test_negative_or_too_large_inputs_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        shuffle_seeds(-1, 0, np.arange(3))
    with pytest.raises(ValueError, match="site indices"):
        shuffle_seeds(0, 0, np.array([2**32]))
    with pytest.raises(ValueError, match="site indices"):
        shuffle_seeds(0, 0, np.array([-1]))
