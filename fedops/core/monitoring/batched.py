"""Monitoring histograms of many clients at once, from rows stored client by client.

A batched simulation holds every client's rows in one array with offsets
(``rows[offsets[i]:offsets[i + 1]]`` are client ``i``'s). Binning each client apart
would repeat a ``searchsorted`` per client and feature; here every value is binned
once and counted per (client, bin) with one ``np.bincount`` over ``client · bins +
bin``. The counts are exactly those :func:`~fedops.core.monitoring.profile.histograms`
gives each client's rows alone (same bins, same order of names), so the reports built
from them are a site's.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedops.core.monitoring.drift import Counts
from fedops.core.monitoring.profile import (
    LABEL,
    PREDICTION,
    Array,
    MonitorSpec,
    binned_columns,
    class_edges,
)


def client_histograms(
    spec: MonitorSpec,
    x: Array,
    y: Array,
    probs: NDArray[np.float64],
    offsets: NDArray[np.int64],
) -> list[dict[str, Counts]]:
    """Per client ``i``: the histograms of ``x/y/probs[offsets[i]:offsets[i + 1]]``."""
    clients = len(offsets) - 1
    owner = np.repeat(np.arange(clients, dtype=np.int64), np.diff(offsets))
    out: list[dict[str, Counts]] = [{} for _ in range(clients)]

    def count(name: str, values: NDArray[np.float64], edges: NDArray[np.float64]) -> None:
        bins = len(edges) - 1
        idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
        flat = np.bincount(owner * bins + idx, minlength=clients * bins)
        counts = flat.astype(np.int64).reshape(clients, bins)
        for i in range(clients):
            out[i][name] = counts[i]

    for name, values, edges in binned_columns(spec, x, probs):
        count(name, values, edges)
    classes = class_edges(spec.num_classes)
    count(LABEL, np.asarray(y, np.float64).ravel(), classes)
    count(PREDICTION, probs.argmax(axis=1).astype(np.float64), classes)
    return out
