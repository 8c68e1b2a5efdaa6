"""What a site measures for monitoring, and how it turns its data into shareable counts.

A site keeps its first data window as its reference and, each time the
coordinator asks, counts the reference and its current window into the same
bins: per input feature (tabular data, on edges the coordinator distributes)
or per model output (images and embeddings: class probabilities on fixed
edges in [0, 1]), plus the label and prediction distributions. Only these
counts and the statistics computed from them leave the site. Predictions on
both windows come from the current model, so prediction drift shows a change
in the data, not the model's training progress.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedops.core.monitoring.drift import Counts, FeatureDrift, drift_report, histogram
from fedops.core.monitoring.fairness import GroupCounts, confusion_counts
from fedops.core.monitoring.rows import merge_named

#: input-feature drift only for tabular inputs up to this many columns; wider
#: inputs (images, embeddings) are monitored through the model's outputs
MAX_INPUT_FEATURES = 512
#: bins of a class probability: ten deciles, open at both ends
OUTPUT_EDGES: NDArray[np.float64] = np.concatenate([[-np.inf], np.linspace(0.1, 0.9, 9), [np.inf]])
LABEL = "label"
PREDICTION = "prediction"

#: a site's defaults for :class:`ReportLimits`
DEFAULT_MIN_COUNT = 5
DEFAULT_MAX_CELLS = 20_000

Array = NDArray[np.floating] | NDArray[np.integer]
Predict = Callable[[NDArray[np.float32]], NDArray[np.float64]]  # inputs -> class probabilities


def feature_names(num_features: int) -> list[str]:
    return [f"x{i}" for i in range(num_features)]


def class_edges(num_classes: int) -> NDArray[np.float64]:
    """Edges with one bin per class id ``0 … num_classes-1``."""
    inner = np.arange(num_classes - 1, dtype=np.float64) + 0.5
    return np.concatenate([[-np.inf], inner, [np.inf]])


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorSpec:
    """What the coordinator asks every site to report with its evaluation.

    Attributes:
        edges: input feature name -> bin edges (all sites count into the same
            bins); empty: monitor the model's outputs instead.
        num_classes: classes of the task (label and prediction bins).
        positive_label: the class that counts as the favourable outcome in
            fairness statistics (one-vs-rest for multiclass tasks).
    """

    edges: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    num_classes: int = 2
    positive_label: int = 1

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 0 <= self.positive_label < self.num_classes:
            raise ValueError(
                f"positive_label {self.positive_label} is not a class of a "
                f"{self.num_classes}-class task"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportLimits:
    """What a site's monitoring report may show, whatever the coordinator asks (site policy).

    The coordinator chooses the bins; fine bins over a site's rows are marginals exact to
    the row (issue 17: up to 1024 bins x 4096 features, a bin of one row). So no reported
    bin counts between 1 and ``min_count - 1`` rows: runs of small adjacent bins are merged
    into the largest bin of the run (:meth:`merge`; reports merge all their histograms at
    once with :func:`~fedops.core.monitoring.rows.merge_rows`, equal to it), which keeps
    every histogram's total (the window's row count, the same for every feature); a
    fairness group of fewer rows, or with a confusion cell of 1..K-1 rows, is left out. The
    statistics are computed from what is reported, and a request for more than
    ``max_cells`` bins in all is refused before any row is counted.
    """

    min_count: int = DEFAULT_MIN_COUNT
    max_cells: int = DEFAULT_MAX_CELLS

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError(f"monitoring_min_count must be >= 1, got {self.min_count}")
        if self.max_cells < 1:
            raise ValueError(f"monitoring_max_cells must be >= 1, got {self.max_cells}")

    def check(self, spec: MonitorSpec, num_outputs: int) -> None:
        """ValueError naming the rule when ``spec`` asks for more bins than allowed."""
        asked = cells(spec, num_outputs)
        if asked > self.max_cells:
            raise ValueError(
                f"the monitoring request asks for {asked} bins over this site's rows; its "
                f"policy allows at most {self.max_cells} (monitoring_max_cells)"
            )

    def allows(self, group: GroupCounts) -> bool:
        """A fairness group may be reported: no cell holds 1..min_count-1 of its rows."""
        cells = (group.n, group.tp, group.fp, group.tn, group.fn, group.correct)
        return group.n >= self.min_count and all(c == 0 or c >= self.min_count for c in cells)

    def merge(self, counts: Counts) -> Counts:
        """``counts`` with every bin 0 or at least ``min_count``, the total unchanged.

        Left to right, bins join a run until it holds ``min_count`` rows; the run's rows
        are reported in its largest bin, the rest of the run as 0. A last run still short
        of the floor joins the run before it (or, alone, is the whole histogram).
        """
        raw = np.asarray(counts, np.int64)
        out = np.zeros_like(raw)
        runs: list[tuple[int, int]] = []  # [start, end) of each closed run
        start, held = 0, 0
        for i, c in enumerate(raw):
            held += int(c)
            if held >= self.min_count:
                runs.append((start, i + 1))
                start, held = i + 1, 0
        if start < len(raw):
            if held and runs:
                runs[-1] = (runs[-1][0], len(raw))
            else:
                runs.append((start, len(raw)))
        for lo, hi in runs:
            out[lo + int(np.argmax(raw[lo:hi]))] = raw[lo:hi].sum()
        return out


def cells(spec: MonitorSpec, num_outputs: int) -> int:
    """Bins a report over ``spec`` fills: features (or outputs), labels, predictions."""
    if spec.edges:
        inputs = sum(len(e) - 1 for e in spec.edges.values())
    else:
        inputs = num_outputs * (len(OUTPUT_EDGES) - 1)
    return inputs + 2 * spec.num_classes


def input_edges(x: Array, bins: int = 10) -> dict[str, NDArray[np.float64]]:
    """Quantile bin edges per column of held-out data (the coordinator's reference)."""
    from fedops.core.monitoring.drift import bin_edges

    rows = np.asarray(x, np.float64)
    rows = rows.reshape(len(rows), -1)
    if rows.shape[1] > MAX_INPUT_FEATURES:
        return {}
    return {
        name: bin_edges(rows[:, j], bins) for j, name in enumerate(feature_names(rows.shape[1]))
    }


def binned_columns(
    spec: MonitorSpec, x: Array, probs: NDArray[np.float64]
) -> list[tuple[str, NDArray[np.float64], NDArray[np.float64]]]:
    """What a report bins, with its edges: each input feature (on the spec's shared
    quantile edges), or each output probability when the spec has no input edges."""
    if not spec.edges:
        return [(f"output{k}", probs[:, k], OUTPUT_EDGES) for k in range(probs.shape[1])]
    rows = np.asarray(x, np.float64).reshape(len(x), -1)
    if rows.shape[1] != len(spec.edges):
        raise ValueError(
            f"the data has {rows.shape[1]} features, the monitoring spec {len(spec.edges)}"
        )
    return [(name, rows[:, j], edges) for j, (name, edges) in enumerate(spec.edges.items())]


def histograms(
    spec: MonitorSpec, x: Array, y: Array, probs: NDArray[np.float64]
) -> dict[str, Counts]:
    """One window's counts: inputs (or outputs), labels and predicted classes."""
    out: dict[str, Counts] = {
        name: histogram(values, edges) for name, values, edges in binned_columns(spec, x, probs)
    }
    classes = class_edges(spec.num_classes)
    out[LABEL] = histogram(np.asarray(y), classes)
    out[PREDICTION] = histogram(probs.argmax(axis=1), classes)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteReport:
    """One site's monitoring answer for one round: counts and the statistics on them."""

    drift: tuple[FeatureDrift, ...] = ()
    reference: Mapping[str, Counts] = field(default_factory=dict)
    current: Mapping[str, Counts] = field(default_factory=dict)
    fairness: Mapping[int, GroupCounts] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """Rows of one data window: inputs and labels (optionally sensitive-group ids)."""

    x: NDArray[np.float32]
    y: NDArray[np.int64]
    groups: NDArray[np.int64] | None = None


def site_report(
    spec: MonitorSpec,
    predict: Predict,
    *,
    reference: Window,
    current: Window,
    test: Window | None = None,
    limits: ReportLimits | None = None,
) -> SiteReport:
    """Drift of ``current`` against ``reference``, and fairness counts on ``test``.

    Fairness needs the test window's sensitive-group ids; without them the
    report has drift only. ``limits`` (default :class:`ReportLimits`) suppresses
    small bins and groups, before any statistic is computed from them.
    """
    limits = limits if limits is not None else ReportLimits()
    probs = predict(reference.x)
    limits.check(spec, probs.shape[1] if probs.ndim == 2 else 1)
    ref = histograms(spec, reference.x, reference.y, probs)
    cur = histograms(spec, current.x, current.y, predict(current.x))
    predicted = None
    if test is not None and test.groups is not None and len(test.y):
        predicted = predict(test.x).argmax(axis=1)
    return report_from_counts(spec, limits, ref, cur, test=test, predicted=predicted)


def report_from_counts(
    spec: MonitorSpec,
    limits: ReportLimits,
    reference: Mapping[str, Counts],
    current: Mapping[str, Counts],
    *,
    test: Window | None = None,
    predicted: NDArray[np.integer] | None = None,
) -> SiteReport:
    """A site's report from its raw window histograms and its test predictions: small
    bins merged and small groups left out (``limits``) before any statistic. Shared by a
    site and by the batched simulation (which counts every client's windows at once), so
    both report the same numbers from the same counts."""
    ref = merge_named(reference, limits.min_count)
    cur = merge_named(current, limits.min_count)
    names = list(ref)
    drift = tuple(drift_report(names, [ref[n] for n in names], [cur[n] for n in names]))
    fairness = site_fairness(spec, limits, test, predicted)
    return SiteReport(drift=drift, reference=ref, current=cur, fairness=fairness)


def site_fairness(
    spec: MonitorSpec,
    limits: ReportLimits,
    test: Window | None,
    predicted: NDArray[np.integer] | None,
) -> dict[int, GroupCounts]:
    """Per-group confusion counts on the test window, small groups left out (``limits``)."""
    if test is None or test.groups is None or predicted is None or not len(test.y):
        return {}
    groups = confusion_counts(test.y, predicted, test.groups, positive_label=spec.positive_label)
    # a group, or any of its confusion cells, of 1..K-1 rows: a crafted model turns a
    # small cell into a per-row query (red team, issue 17): the group is left out
    return {g: c for g, c in groups.items() if limits.allows(c)}
