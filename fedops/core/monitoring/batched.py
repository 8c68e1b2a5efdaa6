"""Monitoring histograms of many clients at once, from rows stored client by client.

A batched simulation holds every client's rows in one array with offsets
(``rows[offsets[i]:offsets[i + 1]]`` are client ``i``'s). Binning each client apart
would repeat a ``searchsorted`` per client and feature; here every value is binned
once and counted per (client, bin) with one ``np.bincount`` over ``client · bins +
bin``. The counts are exactly those :func:`~fedops.core.monitoring.profile.histograms`
gives each client's rows alone (same bins, same order of names), so the reports built
from them are a site's.

:func:`batch_reports` then finishes every client's report together: small bins merged
and drift computed for all (client, feature) histograms at once by the functions a site
uses (:mod:`fedops.core.monitoring.rows`), and the coordinator's checks of a report
(:mod:`fedops.core.monitoring.checks`) applied to all of them, in place of one protobuf
round trip per report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from fedops.core.monitoring.checks import (
    STATISTICS,
    Faults,
    count_faults,
    drift_faults,
    fairness_fault,
)
from fedops.core.monitoring.drift import FeatureDrift, psi_level
from fedops.core.monitoring.fairness import GroupCounts
from fedops.core.monitoring.profile import (
    LABEL,
    PREDICTION,
    Array,
    MonitorSpec,
    ReportLimits,
    SiteReport,
    binned_columns,
    class_edges,
)
from fedops.core.monitoring.rows import RowDrift, Rows, bin_index, drift_named, merge_named


def client_histograms(
    spec: MonitorSpec,
    x: Array,
    y: Array,
    probs: NDArray[np.float64],
    offsets: NDArray[np.int64],
    predicted: NDArray[np.integer] | None = None,
) -> dict[str, Rows]:
    """Name -> counts with row ``i`` the histogram of ``x/y/probs[offsets[i]:offsets[i + 1]]``.

    ``predicted``: ``probs.argmax(axis=1)``, when the caller has it. Columns are binned
    one at a time, so ``probs`` (and ``x``, with input bins) in column order
    (``order="F"``) are read contiguously: several times faster than across rows."""
    fixed = fixed_histograms(spec, x, y, offsets)
    outputs: dict[str, Rows] = {}
    if not spec.edges:
        owner = _owner(offsets)
        for name, values, edges in binned_columns(spec, x, probs):
            outputs[name] = _count(owner, len(offsets) - 1, values, edges)
    if predicted is None:
        predicted = probs.argmax(axis=1)
    return window_histograms(spec, fixed, outputs, prediction_histogram(spec, predicted, offsets))


def fixed_histograms(
    spec: MonitorSpec, x: Array, y: Array, offsets: NDArray[np.int64]
) -> dict[str, Rows]:
    """The counts the model does not change: each input feature (with input bins) and the
    labels, per client. A window that keeps its rows (every drift reference) keeps them."""
    owner, clients = _owner(offsets), len(offsets) - 1
    out: dict[str, Rows] = {}
    if spec.edges:
        x = np.asfortranarray(np.asarray(x, np.float64).reshape(len(x), -1))
        for name, values, edges in binned_columns(spec, x, np.zeros((len(x), 0))):
            out[name] = _count(owner, clients, values, edges)
    out[LABEL] = _count(
        owner, clients, np.asarray(y, np.float64).ravel(), class_edges(spec.num_classes)
    )
    return out


def prediction_histogram(
    spec: MonitorSpec, predicted: NDArray[np.integer], offsets: NDArray[np.int64]
) -> Rows:
    """Per client, the counts of its rows' predicted classes."""
    classes = class_edges(spec.num_classes)
    return _count(_owner(offsets), len(offsets) - 1, predicted.astype(np.float64), classes)


def window_histograms(
    spec: MonitorSpec, fixed: Mapping[str, Rows], outputs: Mapping[str, Rows], prediction: Rows
) -> dict[str, Rows]:
    """One window's histograms in a site's order (inputs or outputs, label, prediction)."""
    first = {n: c for n, c in fixed.items() if n != LABEL} if spec.edges else dict(outputs)
    return {**first, LABEL: fixed[LABEL], PREDICTION: prediction}


def _owner(offsets: NDArray[np.int64]) -> NDArray[np.int64]:
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


def _count(
    owner: NDArray[np.int64], clients: int, values: NDArray[np.float64], edges: NDArray[np.float64]
) -> Rows:
    bins = len(edges) - 1
    flat = np.bincount(owner * bins + bin_index(values, edges), minlength=clients * bins)
    out: Rows = flat.astype(np.int64).reshape(clients, bins)
    return out


def batch_reports(
    limits: ReportLimits,
    reference: Mapping[str, Rows],
    current: Mapping[str, Rows],
    fairness: Sequence[Mapping[int, GroupCounts]],
) -> tuple[list[SiteReport], Faults]:
    """Every client's report from its raw window counts (row ``i`` of each histogram) and
    its fairness groups (already limited, :func:`~fedops.core.monitoring.profile.site_fairness`),
    each equal to :func:`~fedops.core.monitoring.profile.report_from_counts` of that client
    alone; and per client the first rule of the coordinator's checks it breaks (None)."""
    names = list(reference)
    ref = merge_named(reference, limits.min_count)
    cur = ref if current is reference else merge_named(current, limits.min_count)
    claimed = drift_named(ref, cur)
    faults = count_faults(names, {"reference": ref, "current": cur})
    checked, ours = drift_faults(names, ref, cur, claimed)
    for i, fault in enumerate(checked):
        faults[i] = faults[i] or fault or fairness_fault(sorted(fairness[i].items()))
    drift = _per_client(names, ours)
    # per client, its row of every histogram (row views, listed by numpy in one call each);
    # windows that are one (data that never changes) share one read-only mapping
    ref_maps = _client_maps(names, ref, len(fairness))
    cur_maps = ref_maps if cur is ref else _client_maps(names, cur, len(fairness))
    reports = [
        SiteReport(drift=d, reference=r, current=c, fairness=dict(groups))
        for d, r, c, groups in zip(drift, ref_maps, cur_maps, fairness, strict=True)
    ]
    return reports, faults


def _client_maps(
    names: Sequence[str], counts: Mapping[str, Rows], clients: int
) -> list[dict[str, Rows]]:
    """Per client (row), its histogram of each name."""
    rows = list(zip(*(list(counts[n]) for n in names), strict=True)) or [()] * clients
    return [dict(zip(names, r, strict=True)) for r in rows]


def _per_client(
    names: Sequence[str], stats: Mapping[str, RowDrift]
) -> list[tuple[FeatureDrift, ...]]:
    """Each client's :class:`FeatureDrift` values, in the order of ``names``.

    A feature that did not drift is one shared (immutable) value per name: most of a
    round's thousands of (client, feature) pairs, built once instead of once each."""
    still = {
        n: FeatureDrift(feature=n, psi=0.0, level="none", js=0.0, ks=0.0, ks_pvalue=1.0)
        for n in names
    }
    quiet = tuple(still[n] for n in names)
    table = [np.stack([getattr(stats[n], s) for n in names], axis=1) for s in STATISTICS]
    moved = (table[0] != 0) | (table[1] != 0) | (table[2] != 0) | (table[3] != 1)
    out: list[tuple[FeatureDrift, ...]] = [quiet] * len(moved)
    for i in np.flatnonzero(moved.any(axis=1)).tolist():
        psi, js, ks, pvalue = (column[i].tolist() for column in table)
        out[i] = tuple(
            FeatureDrift(feature=n, psi=v, level=psi_level(v), js=j, ks=k, ks_pvalue=p)
            if changed
            else still[n]
            for n, v, j, k, p, changed in zip(names, psi, js, ks, pvalue, moved[i], strict=True)
        )
    return out
