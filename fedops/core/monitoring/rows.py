"""Drift statistics and small-bin merging for many histograms at once, one per row.

A report holds one histogram per feature, and a simulated round one report per client:
thousands of small histograms. Each function here takes them stacked as the rows of an
``(N, bins)`` array and computes with a fixed number of array operations, not one Python
call per histogram. Every row's result is exactly (to the bit) what the per-histogram
definitions give it alone (:func:`fedops.core.monitoring.drift.psi`, ``js_distance``,
``ks`` and :meth:`fedops.core.monitoring.profile.ReportLimits.merge`): the same
element-wise operations, and each row summed as that histogram alone is summed (numpy
sums a row of a C-ordered array as it sums the same values in their own array). The
property tests in ``tests/unit/core/monitoring/test_rows.py`` hold that equality.

Sites, the coordinator's check of a report, pooled drift and the batched simulation all
compute through these functions, so a simulated and a deployed report carry the same
numbers from the same counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

#: added to empty bins' proportions so that PSI stays finite
SMOOTHING = 1e-6

Rows = NDArray[np.int64]
Floats = NDArray[np.float64]


class RowDrift(NamedTuple):
    """Per row: PSI, Jensen-Shannon distance, KS statistic and its asymptotic p-value."""

    psi: Floats
    js: Floats
    ks: Floats
    ks_pvalue: Floats


def as_rows(counts: object) -> Rows:
    """``counts`` as an ``(N, bins)`` int64 array (C-ordered)."""
    rows = np.ascontiguousarray(counts, dtype=np.int64)
    if rows.ndim != 2:
        raise ValueError(f"expected histograms as rows of a 2-d array, got shape {rows.shape}")
    return rows


def drift_rows(reference: object, current: object) -> RowDrift:
    """Drift of each row of ``current`` against the same row of ``reference``.

    A row whose counts did not change (and count something) is (0, 0, 0, 1) without
    computing: exactly the statistics' values for equal counts. A row that changed and
    counts nothing in either window raises ValueError, as the per-histogram functions do.
    """
    ref, cur = as_rows(reference), as_rows(current)
    if ref.shape != cur.shape:
        raise ValueError(f"histograms on different bins: {ref.shape} vs {cur.shape}")
    n = len(ref)
    out = RowDrift(np.zeros(n), np.zeros(n), np.zeros(n), np.ones(n))
    moved = np.flatnonzero(~np.all(ref == cur, axis=1) | (ref.sum(axis=1) <= 0))
    if not len(moved):
        return out
    r, c = ref[moved], cur[moved]
    p, q = _proportions(r), _proportions(c)
    e, a = p + SMOOTHING, q + SMOOTHING
    out.psi[moved] = np.sum((a - e) * np.log(a / e), axis=1)
    out.js[moved] = _js(p, q)
    out.ks[moved], out.ks_pvalue[moved] = _ks(r, c)
    return out


def _proportions(counts: Rows) -> Floats:
    c = counts.astype(np.float64)
    total = c.sum(axis=1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("a histogram with no observations has no distribution")
    out: Floats = c / total
    return out


def _js(p: Floats, q: Floats) -> Floats:
    """Jensen-Shannon distance (base 2) per row."""
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = _kept_sums(p * np.log2(p / m), p > 0)
        kl_q = _kept_sums(q * np.log2(q / m), q > 0)
    out: Floats = np.sqrt(np.maximum(0.0, (kl_p + kl_q) / 2))
    return out


def _kept_sums(terms: Floats, kept: NDArray[np.bool_]) -> Floats:
    """Per row, the sum of ``terms`` where ``kept``: summed as that row's kept terms
    alone, in their own array (rows grouped by how many terms they keep)."""
    sizes = kept.sum(axis=1)
    out = np.zeros(len(terms))
    for k in np.unique(sizes[sizes > 0]).tolist():
        rows = np.flatnonzero(sizes == k)
        out[rows] = terms[rows][kept[rows]].reshape(len(rows), k).sum(axis=1)
    return out


def _ks(reference: Rows, current: Rows) -> tuple[Floats, Floats]:
    """Two-sample KS statistic from histograms, and scipy's asymptotic p-value."""
    n, m = reference.sum(axis=1), current.sum(axis=1)
    cdf_r = np.cumsum(reference, axis=1) / np.maximum(n, 1)[:, None]
    cdf_c = np.cumsum(current, axis=1) / np.maximum(m, 1)[:, None]
    d = np.max(np.abs(cdf_r - cdf_c), axis=1)
    pvalue = np.ones(len(d))
    tested = np.flatnonzero((n > 0) & (m > 0) & (d != 0.0))
    if len(tested):
        # Imported here: scipy.stats costs ~60 MB, paid only by runs that see drift.
        from scipy.stats import kstwo

        # as scipy's ks_2samp(method="asymp"): Kolmogorov's distribution at the effective
        # size, computed in Python integers (n·m may exceed int64 for implausible counts)
        sizes = [
            max(1, round(a * b / (a + b)))
            for a, b in zip(n[tested].tolist(), m[tested].tolist(), strict=True)
        ]
        p = kstwo.sf(d[tested], np.asarray(sizes, dtype=np.float64))
        pvalue[tested] = np.clip(p, 0.0, 1.0)
    return d, pvalue


#: up to this many edges, values are binned by comparing them with every edge (vectorized,
#: branch-free); above it, by binary search
COMPARED_EDGES = 64


def bin_index(values: NDArray[np.floating], edges: NDArray[np.float64]) -> NDArray[np.intp]:
    """The bin of each value: ``clip(searchsorted(edges, values, "right") - 1, 0, bins - 1)``.

    Bin ``i`` is ``[edges[i], edges[i+1])``, the last one closed, and values outside the
    edges (or NaN) fall into the first or last bin. Few edges (every report's: quantile,
    class and probability bins) are counted by comparison, which gives exactly what the
    binary search gives (NaN, which never compares, is placed last as numpy sorts it)."""
    x = np.asarray(values, np.float64)
    bins = len(edges) - 1
    if len(edges) > COMPARED_EDGES:
        found = np.searchsorted(edges, x, side="right") - 1
    else:
        found = np.zeros(x.shape, np.int8)
        for edge in edges.tolist():
            np.add(found, x >= edge, out=found, casting="unsafe")
        found[np.isnan(x)] = len(edges)
        found = found.astype(np.intp) - 1
    out: NDArray[np.intp] = np.clip(found, 0, bins - 1)
    return out


def merge_rows(counts: object, min_count: int) -> Rows:
    """Each row merged as :meth:`~fedops.core.monitoring.profile.ReportLimits.merge`
    merges one histogram: every bin 0 or at least ``min_count``, the row's total kept.

    Left to right, bins join a run until it holds ``min_count``; the run's rows go to its
    largest bin (the first of equals). A last run short of the floor joins the run before
    it, or alone is the whole row. One pass over the bins, every row at once.
    """
    raw = as_rows(counts)
    out = np.zeros_like(raw)
    if min_count <= 1 or raw.size == 0:  # every run closes at its first non-empty bin
        out[...] = raw
        return out
    n = len(raw)
    held = np.zeros(n, np.int64)
    best, best_val = np.zeros(n, np.int64), np.full(n, -1, np.int64)  # the open run's largest
    prev, prev_val = np.full(n, -1, np.int64), np.full(n, -1, np.int64)  # the last closed run's
    prev_sum = np.zeros(n, np.int64)
    for i in range(raw.shape[1]):
        col = raw[:, i]
        held += col
        larger = col > best_val
        best[larger], best_val[larger] = i, col[larger]
        closed = np.flatnonzero(held >= min_count)
        if len(closed):
            out[closed, best[closed]] = held[closed]
            prev[closed], prev_val[closed] = best[closed], best_val[closed]
            prev_sum[closed] = held[closed]
            held[closed], best_val[closed] = 0, -1
    # an open run holding rows after a closed run joins it; alone, it is the whole row
    join = np.flatnonzero((best_val >= 0) & (held > 0) & (prev >= 0))
    alone = np.flatnonzero((best_val >= 0) & (held > 0) & (prev < 0))
    out[join, prev[join]] = 0
    target = np.where(prev_val[join] >= best_val[join], prev[join], best[join])
    out[join, target] = prev_sum[join] + held[join]
    out[alone, best[alone]] = held[alone]
    return out


def merge_named(counts: Mapping[str, NDArray[np.int64]], min_count: int) -> dict[str, Rows]:
    """:func:`merge_rows` of every histogram in ``counts`` (name -> one histogram, or one
    per row), the histograms with the same number of bins merged in one pass."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, c in counts.items():
        by_shape.setdefault(np.shape(c), []).append(name)
    merged: dict[str, Rows] = {}
    for shape, names in by_shape.items():
        stacked = np.stack([np.asarray(counts[n], np.int64) for n in names])
        rows = merge_rows(stacked.reshape(-1, shape[-1]), min_count).reshape(stacked.shape)
        merged.update(zip(names, rows, strict=True))
    return {name: merged[name] for name in counts}


def drift_named(reference: Mapping[str, Rows], current: Mapping[str, Rows]) -> dict[str, RowDrift]:
    """Name -> :func:`drift_rows` of that name's rows (one report per row), the names with
    the same number of bins computed in one call."""
    by_bins: dict[int, list[str]] = {}
    for n, rows in reference.items():
        by_bins.setdefault(rows.shape[1], []).append(n)
    out: dict[str, RowDrift] = {}
    for group in by_bins.values():
        stats = drift_rows(
            np.concatenate([reference[n] for n in group]),
            np.concatenate([current[n] for n in group]),
        )
        parts = [np.split(column, len(group)) for column in stats]
        for j, n in enumerate(group):
            out[n] = RowDrift(*(part[j] for part in parts))
    return {n: out[n] for n in reference}
