"""Drift and fairness reports for every client of a round, on the batched backend.

A deployed site (and the sequential backend) reports on its own windows through
:meth:`fedops.tasks.site.Site.report`: its first training window is the drift
reference, this round's training window the current one, its test split (with group
ids) the fairness window. Here the same windows are slices of the flat arrays the
vectorized backend already holds, so the model predicts every selected client's rows
in one pass and the histograms are counted for all clients together
(:func:`fedops.core.monitoring.batched.client_histograms`); each client's report is
then finished by the same code a site runs (``report_from_counts``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedops.core.monitoring.batched import client_histograms
from fedops.core.monitoring.profile import (
    MonitorSpec,
    ReportLimits,
    SiteReport,
    Window,
    report_from_counts,
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
    ) -> dict[int, SiteReport | None]:
        """Each client's report (None, as a site's, when it has no rows to report on)."""
        model.eval()
        picked = np.asarray(clients, dtype=np.int64)
        ref_rows, ref_off = select_rows(self.reference.train_offsets, picked)
        ref_x, ref_y = self.reference.train_x[ref_rows], self.reference.train_y[ref_rows]
        ref_probs = self._predict(model, ref_x)
        if len(ref_rows):  # what a site checks before counting (the same for every client)
            self.limits.check(spec, ref_probs.shape[1])
        ref = client_histograms(spec, ref_x, ref_y, ref_probs, ref_off)
        cur_off = ref_off
        if current is self.reference:  # data that never changes: the windows are one
            cur = ref
        else:
            cur_rows, cur_off = select_rows(current.train_offsets, picked)
            cur_x = current.train_x[cur_rows]
            cur = client_histograms(
                spec, cur_x, current.train_y[cur_rows], self._predict(model, cur_x), cur_off
            )
        tests = self._test_windows(model, current, picked)
        out: dict[int, SiteReport | None] = {}
        for i, client in enumerate(clients):
            if ref_off[i + 1] == ref_off[i] or cur_off[i + 1] == cur_off[i]:
                out[client] = None
                continue
            test, predicted = tests[i]
            out[client] = report_from_counts(
                spec, self.limits, ref[i], cur[i], test=test, predicted=predicted
            )
        return out

    def _test_windows(
        self, model: nn.Module, data: FederatedData, clients: np.ndarray
    ) -> list[tuple[Window | None, np.ndarray | None]]:
        """Each client's test window with its group ids, and the model's predicted classes
        on it (one forward pass over all clients); (None, None) without group ids."""
        if data.test_groups is None and self.groups_of is None:
            return [(None, None)] * len(clients)
        rows, off = select_rows(data.test_offsets, clients)
        x, y = data.test_x[rows], data.test_y[rows]
        predicted = self._predict(model, x).argmax(axis=1) if len(rows) else None
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

    def _predict(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        """Class probabilities as a site computes them (softmax in float32, then float64)."""
        out = [
            torch.softmax(model(torch.from_numpy(x[i : i + 4096]).to(self.device)), dim=1)
            for i in range(0, len(x), 4096)
        ]
        probs: np.ndarray = torch.cat(out).double().cpu().numpy() if out else np.zeros((0, 1))
        return probs
