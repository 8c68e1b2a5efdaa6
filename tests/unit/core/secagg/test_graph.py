"""The SecAgg+ neighbour graph: symmetric, k-regular (k even) or complete, seeded."""

from __future__ import annotations

import math
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.secagg import graph


def connected(g: dict[int, tuple[int, ...]]) -> bool:
    start = next(iter(g))
    seen, queue = {start}, deque([start])
    while queue:
        for v in g[queue.popleft()]:
            if v not in seen:
                seen.add(v)
                queue.append(v)
    return len(seen) == len(g)


@st.composite
def graphs(draw):
    labels = draw(st.lists(st.integers(1, 10**4), min_size=2, max_size=80, unique=True))
    degree = draw(st.integers(1, len(labels) + 3))
    seed = draw(st.integers(0, 2**32 - 1))
    return labels, degree, seed


@settings(max_examples=150, deadline=None)
@given(case=graphs())
def test_graph_is_symmetric_and_regular(case):
    labels, k, seed = case
    n = len(labels)
    g = graph.neighbours(labels, k, seed)
    assert sorted(g) == sorted(labels)
    for u, vs in g.items():
        assert list(vs) == sorted(set(vs)), "sorted, no repeats"
        assert u not in vs
        assert set(vs) <= set(labels)
        for v in vs:
            assert u in g[v], f"{u} -> {v} but not back"
    even = 2 * math.ceil(k / 2)
    expected = n - 1 if k >= n - 1 else min(even, n - 1)
    assert {len(vs) for vs in g.values()} == {expected}
    if k >= n - 1:
        assert all(set(vs) == set(labels) - {u} for u, vs in g.items())
    assert connected(g)


@settings(max_examples=50, deadline=None)
@given(case=graphs())
def test_graph_is_reproducible_from_the_seed(case):
    labels, k, seed = case
    assert graph.neighbours(labels, k, seed) == graph.neighbours(labels, k, seed)
    assert graph.neighbours(labels, k, seed) == graph.neighbours(list(reversed(labels)), k, seed)


def test_different_seeds_give_different_graphs():
    clients = list(range(1, 41))
    distinct = {tuple(sorted(graph.neighbours(clients, 4, seed).items())) for seed in range(6)}
    assert len(distinct) > 1


@pytest.mark.parametrize(
    ("n", "k", "degree"),
    [(4, 2, 2), (5, 2, 2), (5, 3, 4), (6, 3, 4), (6, 4, 4), (6, 5, 5), (7, 5, 6), (9, 1, 2)],
)
def test_odd_degrees_round_up_to_even(n, k, degree):
    g = graph.neighbours(range(1, n + 1), k, seed=3)
    assert {len(v) for v in g.values()} == {degree}


def test_duplicate_clients_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        graph.neighbours([1, 2, 2, 3], 2, seed=0)


@pytest.mark.parametrize(
    ("n", "degree"),
    [(0, 0), (1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (8, 6), (9, 8), (16, 8), (17, 10),
     (100, 14), (1000, 20), (1024, 20), (1025, 22)],
)  # fmt: skip
def test_default_degree_values(n, degree):
    assert graph.default_degree(n) == degree


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 2**40))
def test_default_degree_is_twice_log2_capped(n):
    ceil_log2 = (n - 1).bit_length()  # exact ⌈log2 n⌉ for n >= 1
    assert graph.default_degree(n) == min(n - 1, 2 * ceil_log2)


@pytest.mark.parametrize(("k", "t"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (20, 11)])
def test_default_threshold_values(k, t):
    assert graph.default_threshold(k) == t


@given(k=st.integers(1, 10**6))
def test_default_threshold_is_the_smallest_majority(k):
    t = graph.default_threshold(k)
    assert k / 2 < t <= k
    assert not k / 2 < t - 1


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(2, 200),
    degree=st.integers(1, 210),
    seed=st.integers(0, 2**63 - 1),
    data=st.data(),
)
def test_one_clients_neighbourhood_is_its_row_of_the_graph(n, degree, seed, data):
    full = graph.neighbours(range(1, n + 1), degree, seed)
    for i in data.draw(st.lists(st.integers(1, n), min_size=1, max_size=5, unique=True)):
        assert graph.neighbourhood(i, n, degree, seed) == full[i]


@pytest.mark.parametrize("n", [2, 3, 9, 40])
def test_every_neighbourhood_matches_the_graph(n):
    for degree in range(1, n + 1):
        full = graph.neighbours(range(1, n + 1), degree, seed=n + degree)
        assert {i: graph.neighbourhood(i, n, degree, n + degree) for i in full} == full


@pytest.mark.parametrize("index", [0, -1, 6])
def test_a_neighbourhood_outside_the_cohort_is_refused(index):
    with pytest.raises(ValueError, match=f"client index {index} is not in 1..5"):
        graph.neighbourhood(index, 5, 2, seed=0)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 300), degree=st.one_of(st.none(), st.integers(1, 400)))
def test_effective_degree_is_what_the_graph_gives(n, degree):
    requested = graph.default_degree(n) if degree is None else min(degree, n - 1)
    g = graph.neighbours(range(1, n + 1), requested, seed=1)
    assert {len(v) for v in g.values()} == {graph.effective_degree(n, degree)}


def test_the_graph_seed_is_a_63_bit_hash_of_the_context():
    seeds = {graph.graph_seed(bytes([i])) for i in range(64)}
    assert len(seeds) == 64
    assert all(0 <= s < 2**63 for s in seeds)
    assert graph.graph_seed(b"round-1") == graph.graph_seed(b"round-1")
