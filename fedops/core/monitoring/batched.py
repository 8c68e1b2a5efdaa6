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
    clients = len(offsets) - 1
    if spec.edges:
        x = np.asfortranarray(np.asarray(x, np.float64).reshape(len(x), -1))
    owner = np.repeat(np.arange(clients, dtype=np.int64), np.diff(offsets))
    out: dict[str, Rows] = {}

    def count(name: str, values: NDArray[np.float64], edges: NDArray[np.float64]) -> None:
        bins = len(edges) - 1
        idx = bin_index(values, edges)
        flat = np.bincount(owner * bins + idx, minlength=clients * bins)
        out[name] = flat.astype(np.int64).reshape(clients, bins)

    for name, values, edges in binned_columns(spec, x, probs):
        count(name, values, edges)
    classes = class_edges(spec.num_classes)
    count(LABEL, np.asarray(y, np.float64).ravel(), classes)
    if predicted is None:
        predicted = probs.argmax(axis=1)
    count(PREDICTION, predicted.astype(np.float64), classes)
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
    cur = merge_named(current, limits.min_count)
    claimed = drift_named(ref, cur)
    faults = count_faults(names, {"reference": ref, "current": cur})
    checked, ours = drift_faults(names, ref, cur, claimed)
    for i, fault in enumerate(checked):
        faults[i] = faults[i] or fault or fairness_fault(sorted(fairness[i].items()))
    drift = _per_client(names, ours)
    # per client, its row of every histogram (row views, listed by numpy in one call each)
    ref_rows = list(zip(*(list(ref[n]) for n in names), strict=True)) or [()] * len(fairness)
    cur_rows = list(zip(*(list(cur[n]) for n in names), strict=True)) or [()] * len(fairness)
    reports = [
        SiteReport(
            drift=d,
            reference=dict(zip(names, r, strict=True)),
            current=dict(zip(names, c, strict=True)),
            fairness=dict(groups),
        )
        for d, r, c, groups in zip(drift, ref_rows, cur_rows, fairness, strict=True)
    ]
    return reports, faults


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
