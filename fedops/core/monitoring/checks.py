"""What the coordinator checks in a site's monitoring report before using it.

A report is hostile input on the deployed path: every histogram must have the bins the
request defined, counts must be plausible, both windows' histograms must count one number
of rows, the drift statistics must be the ones the report's own counts give (recomputed
here, so a site cannot report drift its histograms do not show), and fairness counts must
be consistent. The checks take histograms stacked one report per row, so the wire decoder
(:mod:`fedops.wire.monitoring`, one report) and the batched simulation (every simulated
site's report of a round at once, without a protobuf round trip) apply the same rules.
Each returns, per report, the first rule it breaks (None: it passes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedops.core.monitoring.profile import LABEL, OUTPUT_EDGES, PREDICTION, MonitorSpec
from fedops.core.monitoring.rows import RowDrift, Rows, drift_named

MAX_GROUPS = 1024
MAX_COUNT = 1 << 40
#: recomputed statistics may differ from a site's by float rounding only
TOLERANCE = 1e-9
STATISTICS = ("psi", "js", "ks", "ks_pvalue")

Faults = list[str | None]


class Cells(Protocol):
    """One group's confusion counts, as received (a wire message) or counted."""

    @property
    def n(self) -> int: ...
    @property
    def tp(self) -> int: ...
    @property
    def fp(self) -> int: ...
    @property
    def tn(self) -> int: ...
    @property
    def fn(self) -> int: ...
    @property
    def correct(self) -> int: ...


def expected_bins(spec: MonitorSpec) -> dict[str, int]:
    """Histogram name -> number of bins, for every histogram a report must carry."""
    if spec.edges:
        bins = {name: len(e) - 1 for name, e in spec.edges.items()}
    else:
        bins = {f"output{k}": len(OUTPUT_EDGES) - 1 for k in range(spec.num_classes)}
    return {**bins, LABEL: spec.num_classes, PREDICTION: spec.num_classes}


def implausible(counts: Rows) -> NDArray[np.bool_]:
    """Per row: a negative count, no rows, or more than ``MAX_COUNT`` in all.

    Each count is bounded before the sum, so an int64 sum cannot wrap around."""
    bad = np.any(counts < 0, axis=1) | np.any(counts > MAX_COUNT, axis=1)
    total = np.where(bad[:, None], 0, counts).sum(axis=1)
    out: NDArray[np.bool_] = bad | (total <= 0) | (total > MAX_COUNT)
    return out


def count_faults(names: Sequence[str], windows: Mapping[str, Mapping[str, Rows]]) -> Faults:
    """Per report (row): implausible counts, or a window whose histograms count different
    numbers of rows. ``windows``: ``reference``/``current`` -> name -> counts."""
    faults: Faults = [None] * _rows(windows)
    bad = {n: np.zeros(len(faults), np.bool_) for n in names}
    checked: list[Mapping[str, Rows]] = []
    for counts in windows.values():  # the histograms with the same bins checked together
        if any(counts is c for c in checked):  # one window twice (data that never changes)
            continue
        checked.append(counts)
        by_bins: dict[int, list[str]] = {}
        for n in names:
            by_bins.setdefault(counts[n].shape[1], []).append(n)
        for group in by_bins.values():
            stacked = np.concatenate([counts[n] for n in group])
            for n, flags in zip(group, np.split(implausible(stacked), len(group)), strict=True):
                bad[n] |= flags
    for name in names:
        for i in np.flatnonzero(bad[name]).tolist():
            _first(faults, i, f"histogram {name!r} has negative, empty or implausible counts")
    for position, (window, by_name) in enumerate(windows.items()):
        if any(by_name is earlier for earlier in list(windows.values())[:position]):
            continue  # the same rows as an earlier window: flagged first under its name
        totals = np.stack([by_name[n].sum(axis=1) for n in names], axis=1)
        for i in np.flatnonzero(np.any(totals != totals[:, :1], axis=1)).tolist():
            rows = sorted(set(totals[i].tolist()))
            _first(
                faults, i, f"the {window} histograms count different numbers of rows ({rows[:4]})"
            )
    return faults


def drift_faults(
    names: Sequence[str],
    reference: Mapping[str, Rows],
    current: Mapping[str, Rows],
    claimed: Mapping[str, RowDrift],
) -> tuple[Faults, dict[str, RowDrift]]:
    """Per report: a claimed statistic that is not finite or not what the report's own
    histograms give; and the recomputed statistics (what the coordinator uses)."""
    ours = drift_named({n: reference[n] for n in names}, {n: current[n] for n in names})
    faults: Faults = [None] * _rows({"reference": reference})
    for name in names:
        for stat in STATISTICS:
            theirs, expected = getattr(claimed[name], stat), getattr(ours[name], stat)
            with np.errstate(invalid="ignore"):
                off = ~np.isfinite(theirs) | ~(
                    np.abs(theirs - expected) <= TOLERANCE * np.maximum(1.0, np.abs(expected))
                )
            for i in np.flatnonzero(off).tolist():
                _first(
                    faults,
                    i,
                    f"drift statistic {stat} of {name!r} is {float(theirs[i])!r}, but the "
                    f"site's own histograms give {float(expected[i])!r}",
                )
    return faults, ours


def fairness_fault(groups: Sequence[tuple[int, Cells]]) -> str | None:
    """Too many groups, a group twice, or confusion counts that do not add up."""
    if len(groups) > MAX_GROUPS:
        return f"fairness counts for {len(groups)} groups"
    seen: set[int] = set()
    for group, c in groups:
        cells = (c.tp, c.fp, c.tn, c.fn)
        if (
            group in seen
            or min(*cells, c.correct) < 0
            or sum(cells) != c.n
            or c.correct > c.n
            or c.n > MAX_COUNT
        ):
            return f"fairness counts of group {group} are inconsistent"
        seen.add(group)
    return None


def _rows(windows: Mapping[str, Mapping[str, Rows]]) -> int:
    for counts in windows.values():
        for rows in counts.values():
            return len(rows)
    return 0


def _first(faults: Faults, i: int, reason: str) -> None:
    if faults[i] is None:
        faults[i] = reason
