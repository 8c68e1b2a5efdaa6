"""Class-probability bins and predicted classes of many rows, without a site's slow softmax
for every row, and with exactly a site's results.

A site bins ``torch.softmax(logits, dim=1)`` (float32, then float64) into
:data:`~fedops.core.monitoring.profile.OUTPUT_EDGES` and takes its ``argmax`` as the
predicted class. That softmax runs along a last axis of a few classes, which torch does
one row at a time: 53 ms for the 286k rows of 10 classes of ``fleet_1000`` on one core,
against 3 ms for the same softmax along the first axis of the transposed logits. The two
kernels round differently (about a fifth of the values differ, by up to 3e-8 here), and a
bin or an argmax only depends on a value's side of an edge or of another value, so:

* the fast probabilities (any float32 softmax of the same logits) give every value's bin
  and every row's leading class;
* a row where a fast value lies within :data:`MARGIN` of an inner bin edge, or its two
  largest values lie within :data:`MARGIN` of each other, or a value is not finite, is
  *unsettled*: the caller recomputes that row with the site's own softmax
  (per row, torch's last-axis kernel gives a row the same bits whatever rows come with it).

Any float32 softmax of 10 values is within about 1e-5 of the exact one (relative error of
a few units of 2^-24 for each exp, the sum of at most 10 positive terms, and the
division); two of them differ by at most twice that. :data:`MARGIN` is ten times more, so
a settled value's bin and a settled row's leading class are the site's. The property
tests (``tests/unit/core/monitoring/test_outputs.py``) check the equality with logits
crafted to put probabilities on the edges and to tie.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: a fast probability this close to an inner edge, or to its row's other leading value,
#: leaves its row to the exact softmax (about 10x the largest gap two float32 softmax
#: implementations can open; in fleet_1000's rounds about 1% of the rows)
MARGIN = 2.0**-13
#: up to this many classes the leading class is found by one pass per class
LOOPED_CLASSES = 64
#: the relative spread allowed between inner edges for them to count as evenly spaced
GRID_TOLERANCE = 1e-9

Bins = NDArray[np.int8]
Flags = NDArray[np.bool_]


def grid(edges: NDArray[np.float64]) -> tuple[float, float] | None:
    """``(first inner edge, spacing)`` when ``edges`` are ``-inf``, at least two evenly
    spaced finite inner edges and ``+inf`` (the class-probability bins); None otherwise."""
    inner = np.asarray(edges[1:-1], np.float64)
    if len(edges) < 4 or edges[0] != -np.inf or edges[-1] != np.inf or len(inner) < 2:
        return None
    if not np.all(np.isfinite(inner)):
        return None
    step = float(inner[1] - inner[0])
    even = inner[0] + step * np.arange(len(inner))
    if step <= 0 or np.max(np.abs(inner - even)) > GRID_TOLERANCE * step:
        return None
    return float(inner[0]), step


def settled_bins(cols: NDArray[np.floating], edges: NDArray[np.float64]) -> tuple[Bins, Flags]:
    """The bin of every value of ``cols`` (one class per row of the array, one data row per
    column) and, per data row, whether the row is unsettled (its bins must come from the
    exact probabilities; theirs here are meaningless).

    Only evenly spaced edges (:func:`grid`) are binned here; with any others every row is
    unsettled. A row with a value outside [-1, 2] (probabilities are in [0, 1]) or NaN is
    unsettled too, so the float32 arithmetic below stays far inside :data:`MARGIN`."""
    rows = cols.shape[1] if cols.ndim == 2 else 0
    spacing = grid(edges)
    if spacing is None or rows == 0:
        return np.zeros(cols.shape, np.int8), np.full(rows, spacing is None)
    first, step = spacing
    inner = len(edges) - 2
    dtype = cols.dtype.type
    # t: the position in edge units, inner edge j (0-based) at t = j + 1. Clipped to
    # [0.5, inner + 0.5], its floor is the bin, and a value below the first inner edge or
    # above the last is half a unit from the nearest integer: never near an edge.
    t = cols * dtype(1.0 / step)
    t += dtype(1.0 - first / step)
    np.clip(t, 0.5, inner + 0.5, out=t)
    gap = t - np.rint(t)
    np.abs(gap, out=gap)
    with np.errstate(invalid="ignore"):
        near = (gap < dtype(MARGIN / step)).any(axis=0)
        near |= ~((cols.min(axis=0) >= -1) & (cols.max(axis=0) <= 2))  # NaN: no comparison
    bins: Bins = np.nan_to_num(t, nan=0.5).astype(np.int8)  # truncation of t >= 0.5: floor
    return bins, near


def settled_leader(cols: NDArray[np.floating]) -> tuple[NDArray[np.int64], Flags]:
    """Per data row (column of ``cols``), the index of its largest value, and whether the
    row is unsettled: another value within :data:`MARGIN` of the largest (a tie the fast
    values may break otherwise than the site's), or no finite largest value.

    A settled row has exactly one value at or above ``largest - MARGIN``: its index is
    summed over the classes, a few passes over small integers (numpy's ``argmax`` across
    rows of a C-ordered array is several times slower)."""
    if cols.ndim != 2 or cols.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.bool_)
    top = cols.max(axis=0)
    if len(cols) > LOOPED_CLASSES:
        with np.errstate(invalid="ignore"):
            close = (cols >= top - cols.dtype.type(MARGIN)).sum(axis=0) > 1
        leader: NDArray[np.int64] = cols.argmax(axis=0).astype(np.int64)
        return leader, close | ~np.isfinite(top)
    with np.errstate(invalid="ignore"):
        floor = top - cols.dtype.type(MARGIN)
    hits = np.zeros(len(top), np.int16)
    index = np.zeros(len(top), np.int16)
    for k, row in enumerate(cols):
        hit = (row >= floor).view(np.int8)
        hits += hit
        if k:
            index += hit * np.int16(k)
    return index.astype(np.int64), (hits != 1) | ~np.isfinite(top)


def owner_counts(
    bins: NDArray[np.integer], owner: NDArray[np.int64], owners: int, num_bins: int
) -> NDArray[np.int64]:
    """``(len(bins), owners, num_bins)`` counts: for each row ``k`` of ``bins``, how many
    values of each owner (``owner[j]`` for value ``j``, in ``0 … owners-1``) fall in each bin
    (one ``bincount`` per row: faster than one over a broadcast index)."""
    base = owner * num_bins
    size = owners * num_bins
    out = np.empty((len(bins), owners, num_bins), np.int64)
    for k, row in enumerate(bins):
        out[k] = np.bincount(base + row, minlength=size).reshape(owners, num_bins)
    return out
