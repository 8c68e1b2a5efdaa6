"""The model's side of every client's monitoring report on the batched backend: the
class-probability histograms and predicted classes of a window's rows, in slices spread
over the round's worker threads (:class:`fedops.simulation.spread.Spread`, one model copy
each).

Per slice: the forward pass in a site's slices of 4096 rows, a fast softmax along the
first axis of the transposed logits, the bins and leading classes it settles
(:mod:`fedops.core.monitoring.outputs`), the site's own ``torch.softmax(dim=1)`` for the
few rows it leaves unsettled, and the slice's counts per (client, bin). Summing the slices'
integer counts gives exactly the counts of a site that bins its own rows' probabilities.
On the ``fleet_1000`` run (286k rows of 10 classes, one core) this took the monitoring's
model work from ~125 ms a round (one softmax of 53 ms and float64 binning of every value)
to ~60 ms, halved again by two worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedops.core.monitoring.outputs import owner_counts, settled_bins, settled_leader
from fedops.core.monitoring.profile import OUTPUT_EDGES
from fedops.core.monitoring.rows import bin_index
from fedops.simulation.spread import Spread

#: rows a site predicts at once (:meth:`fedops.tasks.monitor.SiteMonitor.report`)
SITE_CHUNK = 4096
#: rows of one work item: a few site chunks, so that each item's dozen numpy passes run
#: over arrays that stay in cache, and a round has enough items to balance two threads
SLICE_ROWS = 4 * SITE_CHUNK


@dataclass(frozen=True, slots=True)
class Outputs:
    """A window's model outputs, as a site's report uses them.

    Attributes:
        classes: the predicted class of every row.
        counts: ``(outputs, clients, bins)`` class-probability counts per client (None
            unless asked for: a report on input bins does not bin the probabilities).
        predicted: ``(clients, num_classes)`` counts of the predicted classes per client,
            as the prediction histogram bins them (None without clients).
        num_outputs: the model's output columns (1 without rows, as a site's).
    """

    classes: NDArray[np.int64]
    counts: NDArray[np.int64] | None
    predicted: NDArray[np.int64] | None
    num_outputs: int


@dataclass(frozen=True, slots=True)
class Counting:
    """How a window's rows are counted: ``owner[j]`` is row ``j``'s client (None: only the
    rows' classes are wanted), ``probabilities``: bin the class probabilities too."""

    owner: NDArray[np.int64] | None = None
    clients: int = 0
    num_classes: int = 2
    probabilities: bool = False

    @classmethod
    def of(cls, offsets: NDArray[np.int64], num_classes: int, probabilities: bool) -> Counting:
        """Client ``i``'s rows are ``offsets[i]:offsets[i + 1]``."""
        clients = len(offsets) - 1
        owner = np.repeat(np.arange(clients, dtype=np.int64), np.diff(offsets))
        return cls(owner, clients, num_classes, probabilities)


@dataclass(frozen=True, slots=True)
class _Slice:
    classes: NDArray[np.int64]
    counts: NDArray[np.int64] | None
    predicted: NDArray[np.int64] | None
    first_owner: int
    num_outputs: int


def window_outputs(
    models: Sequence[nn.Module],
    spread: Spread,
    x: np.ndarray,
    counting: Counting,
    *,
    device: torch.device,
    slice_rows: int = SLICE_ROWS,
) -> Outputs:
    """Predicted classes of ``x``'s rows and their counts per client (``counting``), the
    slices of ``slice_rows`` rows spread over ``spread``'s threads (worker ``w`` runs
    ``models[w]``); integer counts, summed over the slices."""
    n = len(x)
    starts = list(range(0, n, slice_rows))

    def work(worker: int, positions: Sequence[int]) -> list[_Slice]:
        with torch.no_grad():  # grad mode is per thread
            return [
                _one_slice(models[worker], device, x, (lo, min(n, lo + slice_rows)), counting)
                for lo in (starts[i] for i in positions)
            ]

    parts = spread.map(work, [min(slice_rows, n - lo) for lo in starts])
    classes = np.concatenate([p.classes for p in parts]) if parts else np.zeros(0, np.int64)
    outputs = parts[0].num_outputs if parts else 1
    if counting.owner is None:
        return Outputs(classes, None, None, outputs)
    clients = counting.clients
    predicted = np.zeros((clients, counting.num_classes), np.int64)
    counts = None
    if counting.probabilities:
        counts = np.zeros((outputs, clients, len(OUTPUT_EDGES) - 1), np.int64)
    for part in parts:
        lo = part.first_owner
        assert part.predicted is not None
        predicted[lo : lo + len(part.predicted)] += part.predicted
        if counts is not None and part.counts is not None:
            counts[:, lo : lo + part.counts.shape[1]] += part.counts
    return Outputs(classes, counts, predicted, outputs)


def _one_slice(
    model: nn.Module,
    device: torch.device,
    x: np.ndarray,
    rows: tuple[int, int],
    counting: Counting,
) -> _Slice:
    """Rows ``[lo, hi)``: their classes and counts, for the slice's clients from its first
    row's. The probabilities are computed on the CPU, as a site does."""
    lo, hi = rows
    chunks = [
        model(torch.from_numpy(x[i : min(hi, i + SITE_CHUNK)]).to(device)).cpu()
        for i in range(lo, hi, SITE_CHUNK)
    ]
    logits = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
    # the fast softmax, along the first axis of the transposed logits: settles most rows
    cols = torch.softmax(torch.from_numpy(np.ascontiguousarray(logits.numpy().T)), dim=0).numpy()
    classes, unsettled = settled_leader(cols)
    bins = None
    if counting.probabilities:
        bins, far = settled_bins(cols, OUTPUT_EDGES)
        unsettled |= far
    redo = np.flatnonzero(unsettled)
    if len(redo):  # the site's own softmax (float32, then float64) for those rows
        exact = torch.softmax(logits[torch.from_numpy(redo)], dim=1).numpy()
        classes[redo] = exact.argmax(axis=1)
        if bins is not None:
            bins[:, redo] = bin_index(exact.T.astype(np.float64), OUTPUT_EDGES)
    if counting.owner is None:
        return _Slice(classes, None, None, 0, logits.shape[1])
    first = int(counting.owner[lo])
    owner = counting.owner[lo:hi] - first
    span = int(owner[-1]) + 1
    # the prediction histogram's bins (class_edges): class c, the last bin for c beyond it
    top = np.minimum(classes, counting.num_classes - 1)[None]
    predicted = owner_counts(top, owner, span, counting.num_classes)[0]
    counts = None if bins is None else owner_counts(bins, owner, span, len(OUTPUT_EDGES) - 1)
    return _Slice(classes, counts, predicted, first, logits.shape[1])
