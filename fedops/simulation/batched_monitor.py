"""Drift and fairness reports for every client of a round, on the batched backend.

A deployed site (and the sequential backend) reports on its own windows through
:meth:`fedops.tasks.site.Site.report`: its first training window is the drift
reference, this round's training window the current one, its test split (with group
ids) the fairness window. Here the same windows are slices of the flat arrays the
vectorized backend already holds, so the model predicts every selected client's rows
in slices spread over the round's worker threads and the histograms are counted for all
clients together (:mod:`fedops.simulation.monitor_outputs`); what the model does not
change (the reference window's input and label counts) is counted once per run
(:func:`fedops.core.monitoring.batched.fixed_histograms`). The reports are then
finished and checked for all clients together too
(:func:`fedops.core.monitoring.batched.batch_reports`: the functions a site computes its
report with, and the coordinator's checks of a report, on every client's histograms at
once), so they reach the driver without a protobuf round trip each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedops.core.monitoring.batched import (
    batch_reports,
    fixed_histograms,
    window_histograms,
)
from fedops.core.monitoring.checks import Faults
from fedops.core.monitoring.profile import (
    MonitorSpec,
    ReportLimits,
    SiteReport,
    Window,
    site_fairness,
)
from fedops.core.monitoring.rows import Rows
from fedops.data import FederatedData
from fedops.simulation.monitor_outputs import SLICE_ROWS, Counting, window_outputs
from fedops.simulation.spread import Spread

GroupsOf = Callable[[Any], Any]


def select_rows(offsets: np.ndarray, clients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of ``clients`` (in that order) and the offsets of their rows there."""
    starts, sizes = offsets[clients], np.diff(offsets)[clients]
    sub = np.zeros(len(clients) + 1, dtype=np.int64)
    np.cumsum(sizes, out=sub[1:])
    rows = np.arange(sub[-1], dtype=np.int64) + np.repeat(starts - sub[:-1], sizes)
    return rows, sub


def train_windows(
    data: FederatedData, clients: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training rows of ``clients`` (inputs, labels, offsets). Every client in order
    (every round of a run that picks them all) is the arrays themselves, not a copy."""
    if np.array_equal(clients, np.arange(data.num_clients)):
        return data.train_x, data.train_y, data.train_offsets
    rows, offsets = select_rows(data.train_offsets, clients)
    return data.train_x[rows], data.train_y[rows], offsets


class BatchedMonitor:
    """Holds the drift reference (every client's first training window) and answers
    a round's monitoring request for the clients evaluated.

    The model's work (forward pass, probabilities, their counts) is spread over ``spread``'s
    threads, worker ``w`` on the ``w``-th model :meth:`reports` is given. What the model
    does not change (the reference window's input and label counts) is counted once per
    run, as long as the request and the clients asked stay the same."""

    def __init__(
        self,
        reference: FederatedData,
        *,
        groups_of: GroupsOf | None = None,
        limits: ReportLimits | None = None,
        device: torch.device | None = None,
        spread: Spread | None = None,
    ) -> None:
        self.reference = reference
        self.groups_of = groups_of
        self.limits = limits if limits is not None else ReportLimits()
        self.device = device or torch.device("cpu")
        self.spread = spread if spread is not None else Spread(1)
        #: rows of one work item (tests make it small to spread a small federation)
        self.slice_rows = SLICE_ROWS
        self._fixed: tuple[MonitorSpec, np.ndarray, dict[str, Rows], FederatedData] | None = None

    @torch.no_grad()
    def reports(
        self,
        model: nn.Module | Sequence[nn.Module],
        spec: MonitorSpec,
        current: FederatedData,
        clients: Sequence[int],
    ) -> tuple[dict[int, SiteReport | None], dict[int, str]]:
        """Each client's report (None, as a site's, when it has no rows to report on), and
        the reason for each report the coordinator's checks refuse. ``model``: the global
        model, or one copy of it per worker thread (all with the same parameters)."""
        models = [model] if isinstance(model, nn.Module) else list(model)
        for m in models:
            m.eval()
        spread = self.spread if len(models) >= self.spread.workers else Spread(1)
        picked = np.sort(np.asarray(clients, dtype=np.int64))  # keyed by client: any order
        ref, ref_off = self._window(models, spread, spec, self.reference, picked)
        cur, cur_off = ref, ref_off
        if current is not self.reference:  # data that never changes: the windows are one
            cur, cur_off = self._window(models, spread, spec, current, picked)
        has_rows = (np.diff(ref_off) > 0) & (np.diff(cur_off) > 0)
        kept = np.flatnonzero(has_rows)
        fairness = [
            site_fairness(spec, self.limits, test, predicted)
            for test, predicted in self._test_windows(models, spread, current, picked[kept])
        ]
        ref_kept = {n: c[kept] for n, c in ref.items()}
        cur_kept = ref_kept if cur is ref else {n: c[kept] for n, c in cur.items()}
        built, faults = batch_reports(self.limits, ref_kept, cur_kept, fairness)
        out: dict[int, SiteReport | None] = {client: None for client in clients}
        out.update(zip(picked[kept].tolist(), built, strict=True))
        return out, _refused(picked[kept].tolist(), faults)

    def _window(
        self,
        models: Sequence[nn.Module],
        spread: Spread,
        spec: MonitorSpec,
        data: FederatedData,
        picked: np.ndarray,
    ) -> tuple[dict[str, Rows], np.ndarray]:
        """One training window's histograms per picked client, and its row offsets."""
        x, y, offsets = train_windows(data, picked)
        # the probabilities are binned only without input bins
        counting = Counting.of(offsets, spec.num_classes, probabilities=not spec.edges)
        found = window_outputs(
            models, spread, x, counting, device=self.device, slice_rows=self.slice_rows
        )
        if len(x):  # what a site checks before counting (the same for every client)
            self.limits.check(spec, found.num_outputs)
        if data is self.reference:
            fixed = self._reference_counts(spec, picked, x, y, offsets)
        else:  # a window of this round's data (a task whose data changes per round)
            fixed = fixed_histograms(spec, x, y, offsets)
        outputs: dict[str, Rows] = {}
        if found.counts is not None:
            outputs = {f"output{k}": c for k, c in enumerate(found.counts)}
        assert found.predicted is not None
        return window_histograms(spec, fixed, outputs, found.predicted), offsets

    def _reference_counts(
        self,
        spec: MonitorSpec,
        picked: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        offsets: np.ndarray,
    ) -> dict[str, Rows]:
        """:func:`fixed_histograms` of the reference window, which keeps its rows: counted
        again only when the request or the clients asked changed since the last round."""
        held = self._fixed
        if (
            held is not None
            and held[0] is spec
            and held[3] is self.reference  # a lazily loaded federation swaps it
            and np.array_equal(held[1], picked)
        ):
            return held[2]
        counts = fixed_histograms(spec, x, y, offsets)
        for c in counts.values():
            c.flags.writeable = False  # shared by every later round's reports
        self._fixed = (spec, picked.copy(), counts, self.reference)
        return counts

    def _test_windows(
        self, models: Sequence[nn.Module], spread: Spread, data: FederatedData, clients: np.ndarray
    ) -> list[tuple[Window | None, np.ndarray | None]]:
        """Each client's test window with its group ids, and the model's predicted classes
        on it (one forward pass over all clients); (None, None) without group ids."""
        if data.test_groups is None and self.groups_of is None:
            return [(None, None)] * len(clients)
        rows, off = select_rows(data.test_offsets, clients)
        x, y = data.test_x[rows], data.test_y[rows]
        predicted = None
        if len(rows):
            found = window_outputs(
                models, spread, x, Counting(), device=self.device, slice_rows=self.slice_rows
            )
            predicted = found.classes
        out: list[tuple[Window | None, np.ndarray | None]] = []
        for i in range(len(clients)):
            a, b = int(off[i]), int(off[i + 1])
            if data.test_groups is not None:
                groups = data.test_groups[rows[a:b]]
            else:
                groups = self._groups(x[a:b])
            window = Window(x=x[a:b], y=y[a:b], groups=groups)
            out.append((window, None if predicted is None else predicted[a:b]))
        return out

    def _groups(self, x: np.ndarray) -> np.ndarray:
        """``sensitive_groups(X)`` on one client's test rows, checked as a site checks it."""
        assert self.groups_of is not None
        ids = np.asarray(self.groups_of(torch.from_numpy(x))).astype(np.int64).ravel()
        if len(ids) != len(x):
            raise ValueError(f"sensitive_groups() returned {len(ids)} ids for {len(x)} rows")
        return ids


def _refused(clients: Sequence[int], faults: Faults) -> dict[int, str]:
    return {c: f for c, f in zip(clients, faults, strict=True) if f is not None}
