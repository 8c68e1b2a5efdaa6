"""The array forms of the monitoring statistics equal the per-histogram definitions, bit for bit.

Sites, the coordinator's report check, pooled drift and the batched simulation compute
through :mod:`fedops.core.monitoring.rows` (many histograms as the rows of one array);
each row's result must be exactly what ``psi``/``js_distance``/``ks``,
``ReportLimits.merge`` and ``searchsorted`` give that histogram alone, so that no number a
report carries depends on how many histograms were computed together.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.monitoring.batched import batch_reports
from fedops.core.monitoring.drift import (
    drift_report,
    feature_drift,
    js_distance,
    ks,
    pooled,
    pooled_many,
    psi,
)
from fedops.core.monitoring.fairness import GroupCounts
from fedops.core.monitoring.profile import ReportLimits, report_from_counts
from fedops.core.monitoring.rows import (
    bin_index,
    drift_rows,
    merge_named,
    merge_rows,
)


@st.composite
def histogram_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (reference, current) histograms on one number of bins: some equal, some
    sparse, some with large counts (the KS p-value's effective size)."""
    bins = draw(st.integers(2, 24))
    rows = draw(st.integers(1, 12))
    cell = st.integers(0, 9) | st.integers(0, 5000)
    ref = np.array(
        draw(st.lists(st.lists(cell, min_size=bins, max_size=bins), min_size=rows, max_size=rows))
    )
    cur = np.array(
        draw(st.lists(st.lists(cell, min_size=bins, max_size=bins), min_size=rows, max_size=rows))
    )
    same = np.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
    cur[same] = ref[same]
    ref[:, 0] += ref.sum(axis=1) == 0  # every window counts some row
    cur[:, -1] += cur.sum(axis=1) == 0
    return ref.astype(np.int64), cur.astype(np.int64)


@settings(max_examples=300, deadline=None)
@given(pair=histogram_pairs())
def test_drift_rows_equal_the_per_histogram_statistics_exactly(pair):
    ref, cur = pair
    got = drift_rows(ref, cur)
    for i in range(len(ref)):
        statistic, pvalue = ks(ref[i], cur[i])
        want = (psi(ref[i], cur[i]), js_distance(ref[i], cur[i]), statistic, pvalue)
        assert (got.psi[i], got.js[i], got.ks[i], got.ks_pvalue[i]) == want, (ref[i], cur[i])


@settings(max_examples=100, deadline=None)
@given(pair=histogram_pairs())
def test_drift_report_equals_feature_drift_of_each_feature(pair):
    ref, cur = pair
    # mixed numbers of bins: features are computed in groups, returned in their order
    refs = [ref[i, : 2 + i % 3] for i in range(len(ref))]
    curs = [cur[i, : 2 + i % 3] for i in range(len(cur))]
    refs = [r + (r.sum() == 0) for r in refs]
    curs = [c + (c.sum() == 0) for c in curs]
    names = [f"x{i}" for i in range(len(refs))]
    want = [feature_drift(n, r, c) for n, r, c in zip(names, refs, curs, strict=True)]
    assert drift_report(names, refs, curs) == want


def test_a_changed_histogram_that_counts_nothing_is_refused_as_before():
    with pytest.raises(ValueError, match="no observations"):
        drift_rows([[0, 0]], [[0, 1]])
    with pytest.raises(ValueError, match="different bins"):
        drift_rows([[1, 2]], [[1, 2, 3]])


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 12), min_size=7, max_size=7), min_size=1, max_size=20),
    k=st.integers(1, 25),
)
def test_merge_rows_equals_report_limits_merge_of_each_row(rows, k):
    raw = np.array(rows, np.int64)
    limits = ReportLimits(min_count=k)
    got = merge_rows(raw, k)
    for i in range(len(raw)):
        np.testing.assert_array_equal(got[i], limits.merge(raw[i]), err_msg=str(raw[i]))


def test_merge_named_merges_each_histogram_alone():
    counts = {"a": np.array([1, 0, 6, 2]), "b": np.array([3, 3]), "c": np.array([0, 4, 1, 9])}
    limits = ReportLimits(min_count=4)
    merged = merge_named(counts, 4)
    assert list(merged) == ["a", "b", "c"]
    for name, c in counts.items():
        np.testing.assert_array_equal(merged[name], limits.merge(c))


@settings(max_examples=200, deadline=None)
@given(
    edges=st.lists(st.floats(-5, 5), min_size=1, max_size=80, unique=True),
    open_ends=st.booleans(),
    values=st.lists(
        st.floats(-6, 6) | st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0]), max_size=50
    ),
)
def test_bin_index_is_the_binary_search(edges, open_ends, values):
    e = np.array(sorted(edges), np.float64)
    if open_ends:
        e = np.concatenate([[-np.inf], e, [np.inf]])
    if len(e) < 2:
        e = np.array([e[0], e[0] + 1.0])
    v = np.array(values + list(e), np.float64)  # every edge itself too
    want = np.clip(np.searchsorted(e, v, side="right") - 1, 0, len(e) - 2)
    np.testing.assert_array_equal(bin_index(v, e), want)


def test_pooled_many_equals_pooled_per_name():
    rng = np.random.default_rng(3)
    windows = [{"a": rng.integers(0, 9, 4), "b": rng.integers(0, 9, 2)} for _ in range(30)]
    got = pooled_many(windows, ["a", "b"])
    for name, total in zip(["a", "b"], got, strict=True):
        np.testing.assert_array_equal(total, pooled([w[name] for w in windows]))
    windows[7]["a"] = np.zeros(5, np.int64)
    with pytest.raises(ValueError, match="different bins"):
        pooled_many(windows, ["a", "b"])


def _clients(rng: np.random.Generator, n: int) -> tuple[dict, dict]:
    x0 = rng.integers(1, 7, (n, 5))
    positive = rng.integers(0, 5, n)
    label = np.stack([x0.sum(axis=1) - positive, positive], axis=1)  # the same rows counted
    ref = {"x0": x0, "label": label}
    cur = {"x0": x0.copy(), "label": label.copy()}
    cur["x0"][::2] = np.roll(x0[::2], 1, axis=1)  # every other client drifts
    return ref, cur


def test_batch_reports_equal_each_clients_report_from_counts():
    rng = np.random.default_rng(5)
    ref, cur = _clients(rng, 9)
    limits = ReportLimits(min_count=3)
    fairness = [
        {0: GroupCounts(n=4, tp=1, fp=1, tn=1, fn=1, correct=2)} if i % 3 else {} for i in range(9)
    ]
    reports, faults = batch_reports(limits, ref, cur, fairness)
    assert faults == [None] * 9
    for i, got in enumerate(reports):
        want = report_from_counts(
            _spec(), limits, {n: c[i] for n, c in ref.items()}, {n: c[i] for n, c in cur.items()}
        )
        assert got.drift == want.drift
        for window in ("reference", "current"):
            for name in ref:
                np.testing.assert_array_equal(
                    getattr(got, window)[name], getattr(want, window)[name]
                )
        assert got.fairness == fairness[i]
    assert any(d.psi > 0 for d in reports[0].drift) and not any(d.psi for d in reports[1].drift)


def test_batch_reports_refuse_what_the_coordinator_refuses_client_by_client():
    rng = np.random.default_rng(6)
    ref, cur = _clients(rng, 4)
    cur["label"][1, 0] += 5  # the current window's histograms count different numbers of rows
    big = 1 << 41  # more rows than any report may count (MAX_COUNT)
    fairness = [{}, {}, {3: GroupCounts(n=big, tp=big, fp=0, tn=0, fn=0, correct=1)}, {}]
    _, faults = batch_reports(ReportLimits(min_count=1), ref, cur, fairness)
    assert faults[0] is None and faults[3] is None
    assert faults[1] is not None and "current histograms count different numbers" in faults[1]
    assert faults[2] == "fairness counts of group 3 are inconsistent"


def _spec():  # type: ignore[no-untyped-def]
    from fedops.core.monitoring.profile import MonitorSpec

    return MonitorSpec(edges={}, num_classes=2)


def test_summarize_of_sites_sharing_one_drift_value_equals_each_site_alone():
    from fedops.core.monitoring.profile import SiteReport
    from fedops.core.monitoring.summary import (
        MonitorThresholds,
        drift_alerts,
        drift_summary,
        summarize,
    )

    quiet = tuple(drift_report(["a", "b"], [np.array([3, 4])] * 2, [np.array([3, 4])] * 2))
    loud = tuple(drift_report(["a", "b"], [np.array([3, 4])] * 2, [np.array([9, 1])] * 2))
    drifts = {"s0": quiet, "s1": loud, "s2": quiet, "s3": loud, "s4": quiet}
    reports = {s: SiteReport(drift=d) for s, d in drifts.items()}
    out = summarize(reports, {}, MonitorThresholds())
    thresholds = MonitorThresholds()
    assert out["drift"] == {s: drift_summary(d) for s, d in drifts.items()}
    assert out["drift"]["s0"] is not out["drift"]["s2"]  # each site its own dicts
    assert out["drift"]["s0"]["by_feature"] is not out["drift"]["s2"]["by_feature"]
    want = [a for s, d in sorted(drifts.items()) for a in drift_alerts(s, d, thresholds)]
    assert out["drift_alerts"] == want and {a["site"] for a in want} == {"s1", "s3"}
