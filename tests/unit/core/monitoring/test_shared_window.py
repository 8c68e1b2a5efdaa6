"""Data that never changes makes the drift reference and the current window one: the batched
backend then hands :func:`batch_reports` (and the coordinator's count checks) one mapping
for both, merged and checked once. The reports and faults must be those of two equal copies.
"""

from __future__ import annotations

import numpy as np

from fedops.core.monitoring.batched import batch_reports
from fedops.core.monitoring.checks import count_faults
from fedops.core.monitoring.profile import ReportLimits


def _window(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 9, (40, 10))
    first[:, 0] += 1  # no empty histogram
    # the same rows in every histogram: equal totals, other bins
    counts = {f"output{k}": np.roll(first, k, axis=1) for k in range(3)}
    rows = first.sum(axis=1)
    label = np.zeros((40, 2), np.int64)
    label[:, 0] = rows  # every client's label counts total its rows
    counts["label"] = label
    counts["prediction"] = label[:, ::-1].copy()
    counts["output2"][5, 0] = 1 << 41  # an implausible report
    counts["output1"][7, 0] += 3  # a report whose histograms count different numbers of rows
    return counts


def test_one_window_for_both_gives_the_reports_and_faults_of_two_copies():
    window = _window(1)
    twin = {n: c.copy() for n, c in window.items()}
    limits = ReportLimits(min_count=3)
    fairness = [{} for _ in range(40)]
    shared, shared_faults = batch_reports(limits, window, window, fairness)
    apart, apart_faults = batch_reports(limits, window, twin, fairness)
    assert shared_faults == apart_faults
    assert sum(f is not None for f in shared_faults) == 2
    for a, b in zip(shared, apart, strict=True):
        assert a.drift == b.drift and a.fairness == b.fairness
        for name in window:
            np.testing.assert_array_equal(a.reference[name], b.reference[name])
            np.testing.assert_array_equal(a.current[name], b.current[name])


def test_count_checks_of_one_window_twice_name_it_as_the_reference():
    window = _window(2)
    names = list(window)
    twin = {n: c.copy() for n, c in window.items()}
    once = count_faults(names, {"reference": window, "current": window})
    assert once == count_faults(names, {"reference": window, "current": twin})
    assert any(f is not None and "reference" in f for f in once)
