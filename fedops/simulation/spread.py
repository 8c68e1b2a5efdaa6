"""Spread one round's batched work over a few Python threads, one per core.

With one torch intra-op thread (fedops' default, :func:`fedops.simulation.federation.use_threads`)
each torch op runs on the thread that calls it and releases the GIL inside its kernel, so two
Python threads each training half of a round's clients with the batched trainers keep two cores
busy. Measured here (2 cores, 100 clients of the two-conv CNN, one epoch): 0.68-0.86 s for the
round's training on one thread, 0.33-0.49 s on two, the same updates (a client's chunk-mates
change with the split, so its numbers may differ in the last float bit). torch's own intra-op
threads did not get there (2 threads were slower than 1, and 4.5x slower under load).

Every thread owns its work items and writes only its own results; a model that a trainer may
modify (``functional_call`` swaps a module's parameters while it runs) is copied per thread by
the caller.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

#: below this many items a round's work stays on the calling thread: a thread's hand-over
#: (~0.1 ms) and a second model copy's first use cost more than half of a tiny round saves
MIN_ITEMS = 4


def balanced(weights: Sequence[int], parts: int) -> list[list[int]]:
    """Item positions in ``parts`` groups of about equal total weight (largest first, each to
    the lightest group), each group in ascending position order; empty groups dropped."""
    groups: list[list[int]] = [[] for _ in range(max(1, parts))]
    heap = [(0, g) for g in range(len(groups))]
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, g = heapq.heappop(heap)
        groups[g].append(i)
        heapq.heappush(heap, (load + max(1, int(weights[i])), g))
    return [sorted(g) for g in groups if g]


class Spread:
    """Runs ``work(worker, positions)`` for each group of :func:`balanced` positions on its
    own thread (worker ``0..workers-1``, stable per group so a caller can keep per-worker
    state) and puts the results back in item order."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None

    def map(
        self, work: Callable[[int, Sequence[int]], Sequence[T]], weights: Sequence[int]
    ) -> list[T]:
        """``work`` must return one result per position it was given, in that order."""
        if self.workers == 1 or len(weights) < MIN_ITEMS:
            return list(_checked(work(0, range(len(weights))), len(weights)))
        groups = balanced(weights, self.workers)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fedops-spread")
        futures = [self._pool.submit(work, w, g) for w, g in enumerate(groups)]
        out: list[T | None] = [None] * len(weights)
        for group, future in zip(groups, futures, strict=True):
            for i, result in zip(group, _checked(future.result(), len(group)), strict=True):
                out[i] = result
        return out  # type: ignore[return-value]  # every position was filled above

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _checked(results: Sequence[T], n: int) -> Sequence[T]:
    if len(results) != n:
        raise RuntimeError(f"a spread worker returned {len(results)} results for {n} items")
    return results
