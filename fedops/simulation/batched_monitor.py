"""Drift and fairness reports for every client of a round, on the batched backend.

A deployed site (and the sequential backend) reports on its own windows through
:meth:`fedops.tasks.site.Site.report`: its first training window is the drift
reference, this round's training window the current one, its test split (with group
ids) the fairness window. Here the same windows are slices of the flat arrays the
vectorized backend already holds, so the model predicts every selected client's rows
in one pass and the histograms are counted for all clients together
(:func:`fedops.core.monitoring.batched.client_histograms`); the reports are then
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

from fedops.core.monitoring.batched import batch_reports, client_histograms
from fedops.core.monitoring.checks import Faults
from fedops.core.monitoring.profile import (
    MonitorSpec,
    ReportLimits,
    SiteReport,
    Window,
    site_fairness,
)
from fedops.data import FederatedData

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
    a round's monitoring request for the clients evaluated."""

    def __init__(
        self,
        reference: FederatedData,
        *,
        groups_of: GroupsOf | None = None,
        limits: ReportLimits | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.reference = reference
        self.groups_of = groups_of
        self.limits = limits if limits is not None else ReportLimits()
        self.device = device or torch.device("cpu")

    @torch.no_grad()
    def reports(
        self,
        model: nn.Module,
        spec: MonitorSpec,
        current: FederatedData,
        clients: Sequence[int],
    ) -> tuple[dict[int, SiteReport | None], dict[int, str]]:
        """Each client's report (None, as a site's, when it has no rows to report on), and
        the reason for each report the coordinator's checks refuse."""
        model.eval()
        picked = np.sort(np.asarray(clients, dtype=np.int64))  # keyed by client: any order
        ref_x, ref_y, ref_off = train_windows(self.reference, picked)
        ref_probs, ref_classes = self._predict(model, ref_x)
        if len(ref_x):  # what a site checks before counting (the same for every client)
            self.limits.check(spec, ref_probs.shape[1])
        ref = client_histograms(spec, ref_x, ref_y, ref_probs, ref_off, ref_classes)
        cur_off = ref_off
        if current is self.reference:  # data that never changes: the windows are one
            cur = ref
        else:
            cur_x, cur_y, cur_off = train_windows(current, picked)
            cur_probs, cur_classes = self._predict(model, cur_x)
            cur = client_histograms(spec, cur_x, cur_y, cur_probs, cur_off, cur_classes)
        has_rows = (np.diff(ref_off) > 0) & (np.diff(cur_off) > 0)
        kept = np.flatnonzero(has_rows)
        fairness = [
            site_fairness(spec, self.limits, test, predicted)
            for test, predicted in self._test_windows(model, current, picked[kept])
        ]
        built, faults = batch_reports(
            self.limits,
            {n: c[kept] for n, c in ref.items()},
            {n: c[kept] for n, c in cur.items()},
            fairness,
        )
        out: dict[int, SiteReport | None] = {client: None for client in clients}
        out.update(zip(picked[kept].tolist(), built, strict=True))
        return out, _refused(picked[kept].tolist(), faults)

    def _test_windows(
        self, model: nn.Module, data: FederatedData, clients: np.ndarray
    ) -> list[tuple[Window | None, np.ndarray | None]]:
        """Each client's test window with its group ids, and the model's predicted classes
        on it (one forward pass over all clients); (None, None) without group ids."""
        if data.test_groups is None and self.groups_of is None:
            return [(None, None)] * len(clients)
        rows, off = select_rows(data.test_offsets, clients)
        x, y = data.test_x[rows], data.test_y[rows]
        predicted = self._predict(model, x)[1] if len(rows) else None
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

    def _predict(self, model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities as a site computes them (softmax in float32, then float64),
        stored column by column (each class's column contiguous, as the histograms read
        them), and the predicted class of each row."""
        if not len(x):
            return np.zeros((0, 1)), np.zeros(0, np.int64)
        columns, classes = torch.empty(0, dtype=torch.float64), np.empty(len(x), np.int64)
        for i in range(0, len(x), 4096):
            chunk = torch.softmax(model(torch.from_numpy(x[i : i + 4096]).to(self.device)), dim=1)
            chunk = chunk.cpu()
            if i == 0:
                columns = torch.empty((chunk.shape[1], len(x)), dtype=torch.float64)
            columns[:, i : i + len(chunk)] = chunk.T  # float32 -> float64: exact
            # float32 or float64, the same largest value first (the conversion keeps order)
            classes[i : i + len(chunk)] = chunk.numpy().argmax(axis=1)
        probs: np.ndarray = columns.numpy().T
        return probs, classes


def _refused(clients: Sequence[int], faults: Faults) -> dict[int, str]:
    return {c: f for c, f in zip(clients, faults, strict=True) if f is not None}
