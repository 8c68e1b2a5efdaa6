"""The threads a round's batched work is spread over: every item handled once, by one
worker, results back in item order, a worker's failure reaching the caller."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.simulation.spread import MIN_ITEMS, Spread, balanced


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1000), max_size=60), st.integers(1, 5))
def test_balanced_puts_every_item_in_one_group_and_evens_the_load(
    weights: list[int], parts: int
) -> None:
    groups = balanced(weights, parts)
    flat = [i for g in groups for i in g]
    assert sorted(flat) == list(range(len(weights)))  # each item exactly once
    assert len(groups) <= parts and all(g == sorted(g) and g for g in groups)
    loads = [sum(max(1, weights[i]) for i in g) for g in groups]
    if len(groups) > 1:  # greedy largest-first: no group heavier than another by more than
        assert max(loads) - min(loads) <= max(max(1, w) for w in weights)  # one item


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_map_returns_results_in_item_order(workers: int) -> None:
    spread = Spread(workers)
    weights = [5, 1, 9, 3, 3, 7, 2, 8]
    seen: dict[int, int] = {}
    lock = threading.Lock()

    def work(worker: int, part: Sequence[int]) -> list[int]:
        with lock:
            for i in part:
                assert i not in seen
                seen[i] = worker
        return [10 * i for i in part]

    try:
        assert spread.map(work, weights) == [10 * i for i in range(len(weights))]
    finally:
        spread.close()
    assert sorted(seen) == list(range(len(weights)))
    assert set(seen.values()) == set(range(workers))  # every worker had a share


def test_few_items_stay_on_the_calling_thread() -> None:
    spread = Spread(4)
    threads: set[str] = set()

    def work(worker: int, part: Sequence[int]) -> list[int]:
        threads.add(threading.current_thread().name)
        return list(part)

    assert spread.map(work, [1] * (MIN_ITEMS - 1)) == list(range(MIN_ITEMS - 1))
    assert threads == {threading.current_thread().name}


def test_a_worker_failure_reaches_the_caller() -> None:
    spread = Spread(2)

    def work(worker: int, part: Sequence[int]) -> list[int]:
        if 3 in part:
            raise ValueError("client 3 has no rows")
        return list(part)

    try:
        with pytest.raises(ValueError, match="client 3 has no rows"):
            spread.map(work, [1] * 8)
    finally:
        spread.close()


def test_a_worker_that_drops_results_is_an_error() -> None:
    spread = Spread(2)
    try:
        with pytest.raises(RuntimeError, match="returned 1 results for"):
            spread.map(lambda worker, part: [0], [1] * 8)
    finally:
        spread.close()


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        Spread(0)
