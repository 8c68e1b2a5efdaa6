"""Bound each client's influence: clip its model update to an L2 norm."""

from __future__ import annotations

import math

import numpy as np

from fedops.core.params import Params


def l2_norm(update: Params) -> float:
    """The L2 norm of all arrays of ``update`` taken together."""
    total = 0.0
    for a in update.values():
        x = np.asarray(a, np.float64).ravel()  # float32 sums lose digits: measure in float64
        total += float(np.sum(x * x))  # not BLAS: its threads stall on a busy machine
    return math.sqrt(total)


def clip(update: Params, max_norm: float) -> tuple[Params, float]:
    """``(update scaled to norm <= max_norm, its norm before clipping)``."""
    if not max_norm > 0:
        raise ValueError(f"clip norm must be > 0, got {max_norm}")
    norm = l2_norm(update)
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return {k: np.asarray(v, np.float64) * scale for k, v in update.items()}, norm


def delta(start: Params, trained: Params) -> Params:
    """``trained - start`` in float64 (what DP clips and noises, never the raw model)."""
    return {k: np.asarray(trained[k], np.float64) - np.asarray(start[k], np.float64) for k in start}
