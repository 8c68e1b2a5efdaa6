"""Who shares secrets with whom: a random Harary graph (Bell et al. 2020, §3).

Clients sit on a ring in a random order and each is joined to the ``k/2``
nearest on either side, so every client has ``k`` neighbours (``k`` is
rounded up to even) and the graph stays connected when neighbours drop.
``k >= n - 1`` gives the complete graph, i.e. classic SecAgg.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np


def default_degree(num_clients: int) -> int:
    """``2·⌈log2 n⌉``, at most ``n - 1``: the paper's logarithmic neighbourhood."""
    if num_clients < 2:
        return 0
    return min(num_clients - 1, 2 * math.ceil(math.log2(num_clients)))


def effective_degree(num_clients: int, degree: int | None) -> int:
    """Neighbours each of ``num_clients`` gets for a requested ``degree`` (``None``: default)."""
    k = default_degree(num_clients) if degree is None else min(int(degree), num_clients - 1)
    half = math.ceil(k / 2)
    return num_clients - 1 if 2 * half >= num_clients - 1 else 2 * half


def default_threshold(degree: int) -> int:
    """The smallest honest majority of a neighbourhood: ``⌊k/2⌋ + 1``."""
    return degree // 2 + 1


def neighbours(clients: Sequence[int], degree: int, seed: int) -> dict[int, tuple[int, ...]]:
    """Each client's neighbours (sorted), symmetric, reproducible from ``seed``."""
    ordered = sorted(clients)
    n = len(ordered)
    if len(set(ordered)) != n:
        raise ValueError("client indices must be distinct")
    half = math.ceil(degree / 2)
    if 2 * half >= n - 1:
        return {c: tuple(x for x in ordered if x != c) for c in ordered}
    order = [ordered[i] for i in np.random.default_rng(seed).permutation(n)]
    graph: dict[int, set[int]] = {c: set() for c in ordered}
    for pos, client in enumerate(order):
        for offset in range(1, half + 1):
            other = order[(pos + offset) % n]
            graph[client].add(other)
            graph[other].add(client)
    return {c: tuple(sorted(v)) for c, v in graph.items()}


def graph_seed(context: bytes) -> int:
    """The graph's seed: a hash of the round's bound context, so no party picks it."""
    return int.from_bytes(hashlib.sha256(b"fedops-secagg-graph\x00" + context).digest()[:8]) >> 1


def neighbourhood(index: int, size: int, degree: int, seed: int) -> tuple[int, ...]:
    """Client ``index``'s neighbours among ``1 … size``: ``neighbours(...)[index]``, cheaply.

    A site computes its own neighbourhood with this (O(n) numpy, O(k) Python)
    instead of trusting the one the coordinator names.
    """
    if not 1 <= index <= size:
        raise ValueError(f"client index {index} is not in 1..{size}")
    half = math.ceil(degree / 2)
    if 2 * half >= size - 1:
        return tuple(x for x in range(1, size + 1) if x != index)
    order = np.random.default_rng(seed).permutation(size) + 1
    pos = int(np.flatnonzero(order == index)[0])
    near = {int(order[(pos + o) % size]) for o in range(-half, half + 1) if o != 0}
    return tuple(sorted(near))
