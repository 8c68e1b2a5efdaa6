"""A site's monitoring report shows no bin of fewer than ``min_count`` rows, and no more bins
than its policy allows, whatever bins the coordinator asks for.

Threat model (issue 17, finding 7): the coordinator picks the bin edges; fine bins over a
site's rows are marginals exact to one row (up to 1024 bins x 4096 features were accepted).
The site must never report a bin holding 1 .. min_count - 1 of its rows, and must refuse a
request past its cap before counting anything.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.monitoring.fairness import GroupCounts
from fedops.core.monitoring.profile import MonitorSpec, ReportLimits, Window, cells, site_report

counts = st.lists(st.integers(0, 40), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(raw=counts, k=st.integers(1, 25))
def test_merged_bins_are_empty_or_at_the_floor_and_keep_the_total(raw, k):
    merged = ReportLimits(min_count=k).merge(np.array(raw))
    assert merged.sum() == sum(raw) and merged.shape == (len(raw),)
    nonzero = merged[merged > 0]
    if sum(raw) >= k:
        assert (nonzero >= k).all(), (raw, merged)
    else:  # fewer rows than the floor in all: one bin holds them (the window's size)
        assert len(nonzero) <= 1
    # a bin already at the floor on its own is never split; merging twice changes nothing
    assert np.array_equal(ReportLimits(min_count=k).merge(merged), merged)


def test_a_floor_of_one_reports_the_exact_counts():
    raw = np.array([0, 3, 1, 0, 7, 0])
    assert np.array_equal(ReportLimits(min_count=1).merge(raw), raw)


def _probs(x: np.ndarray) -> np.ndarray:
    p = np.full((len(x), 2), 0.5)
    return p


def test_a_crafted_fine_bin_around_one_row_shows_nothing_of_it():
    """The coordinator isolates one row's value with a narrow bin of its own."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1)).astype(np.float32)
    target = float(x[17, 0])
    edges = np.array([-np.inf, target - 1e-9, target + 1e-9, np.inf])
    spec = MonitorSpec(edges={"x0": edges}, num_classes=2)
    window = Window(x=x, y=np.zeros(200, np.int64))
    exact = site_report(
        spec, _probs, reference=window, current=window, limits=ReportLimits(min_count=1)
    )
    assert exact.reference["x0"][1] == 1  # the control: without a floor the row shows
    report = site_report(spec, _probs, reference=window, current=window)
    assert report.reference["x0"][1] == 0 and report.reference["x0"].sum() == 200


def test_small_fairness_groups_are_left_out():
    x = np.zeros((60, 1), np.float32)
    y = np.zeros(60, np.int64)
    groups = np.array([0] * 57 + [1] * 3)
    spec = MonitorSpec(edges={"x0": np.array([-np.inf, 0.5, np.inf])}, num_classes=2)
    window = Window(x=x, y=y)
    test = Window(x=x, y=y, groups=groups)
    report = site_report(spec, _probs, reference=window, current=window, test=test)
    assert set(report.fairness) == {0} and isinstance(report.fairness[0], GroupCounts)
    exact = ReportLimits(min_count=1)
    full = site_report(spec, _probs, reference=window, current=window, test=test, limits=exact)
    assert set(full.fairness) == {0, 1}


def test_a_request_past_the_cap_is_refused_before_counting():
    edges = {f"x{i}": np.linspace(-1, 1, 101) for i in range(300)}  # 300 x 100 bins
    spec = MonitorSpec(edges=edges, num_classes=2)
    assert cells(spec, 2) == 300 * 100 + 4
    called = []

    def predict(x: np.ndarray) -> np.ndarray:
        called.append(len(x))
        return _probs(x)

    window = Window(x=np.zeros((10, 300), np.float32), y=np.zeros(10, np.int64))
    with pytest.raises(ValueError, match=r"30004 bins.*at most 20000 \(monitoring_max_cells\)"):
        site_report(spec, predict, reference=window, current=window)
    assert len(called) <= 1  # refused before the current window was looked at
    roomy = ReportLimits(max_cells=40_000)
    assert site_report(spec, predict, reference=window, current=window, limits=roomy).drift


@pytest.mark.parametrize("field", ["min_count", "max_cells"])
def test_an_impossible_limit_is_refused_by_name(field):
    with pytest.raises(ValueError, match=f"monitoring_{field}"):
        ReportLimits(**{field: 0})


def test_a_group_with_a_small_confusion_cell_is_left_out():
    """Red team, issue 17: a group of 60 rows with 3 true positives; a crafted model moving
    one row across the threshold changes a small cell by one, a per-row query."""
    x = np.zeros((60, 1), np.float32)
    y = np.array([1] * 3 + [0] * 57)
    groups = np.zeros(60, np.int64)

    def predict_one(rows: np.ndarray) -> np.ndarray:
        return np.tile([0.0, 1.0], (len(rows), 1))  # everyone predicted positive: tp = 3

    spec = MonitorSpec(edges={"x0": np.array([-np.inf, 0.5, np.inf])}, num_classes=2)
    window = Window(x=x, y=y)
    test = Window(x=x, y=y, groups=groups)
    report = site_report(spec, predict_one, reference=window, current=window, test=test)
    assert report.fairness == {}
    exact = ReportLimits(min_count=1)
    full = site_report(spec, predict_one, reference=window, current=window, test=test, limits=exact)
    assert full.fairness[0].tp == 3


def test_the_cap_counts_the_models_real_outputs_before_fetching():
    """Red team, issue 17: the pre-check counted spec.num_classes outputs (2), the digits
    model has 10: the request passed, and failed only after every row was run."""
    from fedops.core.training import TrainConfig
    from fedops.tasks import load_task
    from fedops.tasks.site import PolicyRefusal, Site

    site = Site(
        load_task("digits"),
        site=0,
        num_sites=3,
        train_config=TrainConfig(epochs=1),
        report_limits=ReportLimits(max_cells=30),
    )
    with pytest.raises(PolicyRefusal, match=r"104 bins.*monitoring_max_cells"):
        site.check_report(MonitorSpec(num_classes=2))
