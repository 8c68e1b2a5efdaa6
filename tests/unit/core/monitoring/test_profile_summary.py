"""A site's monitoring counts (profile) and the coordinator's round summary (summary).

The site side turns data windows into histograms on shared bins; the
coordinator pools them. Drift of the pooled histograms must be the drift of
the federation's raw data binned on the same edges, and pooled fairness must
be :func:`fairness_metrics` of the summed per-group counts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.monitoring.drift import drift_report, histogram
from fedops.core.monitoring.fairness import (
    FairnessThresholds,
    confusion_counts,
    fairness_alerts,
    fairness_metrics,
    pool,
    site_accuracy_gap,
)
from fedops.core.monitoring.profile import (
    LABEL,
    MAX_INPUT_FEATURES,
    OUTPUT_EDGES,
    PREDICTION,
    MonitorSpec,
    ReportLimits,
    SiteReport,
    Window,
    class_edges,
    feature_names,
    histograms,
    input_edges,
    site_report,
)
from fedops.core.monitoring.summary import (
    MonitorThresholds,
    drift_alerts,
    drift_summary,
    pooled_drift,
    summarize,
)

NUM_FEATURES = 3
NUM_CLASSES = 2


def _probs_from_x0(x: np.ndarray) -> np.ndarray:
    """A fixed 'model': class 1's probability is a logistic function of the first column."""
    p1 = 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)[:, 0]))
    return np.stack([1.0 - p1, p1], axis=1)


def _window(
    seed: int, n: int = 2000, *, shift: dict[int, float] | None = None, groups: bool = False
) -> Window:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32)
    for column, delta in (shift or {}).items():
        x[:, column] += np.float32(delta)
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0]))).astype(np.int64)
    g = (rng.random(n) < 0.4).astype(np.int64) if groups else None
    return Window(x=x, y=y, groups=g)


def _spec(seed: int = 100, **kwargs) -> MonitorSpec:
    return MonitorSpec(edges=input_edges(_window(seed).x, bins=10), **kwargs)


# -- MonitorSpec, input_edges, histograms --------------------------------------------------------


def test_monitor_spec_validates_classes_and_positive_label():
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        MonitorSpec(num_classes=1)
    with pytest.raises(ValueError, match="positive_label 2 is not a class of a 2-class task"):
        MonitorSpec(num_classes=2, positive_label=2)
    with pytest.raises(ValueError, match="positive_label -1"):
        MonitorSpec(num_classes=3, positive_label=-1)
    assert MonitorSpec(num_classes=3, positive_label=2).positive_label == 2


def test_input_edges_one_feature_per_column_and_none_for_wide_inputs():
    rng = np.random.default_rng(0)
    edges = input_edges(rng.normal(size=(500, 4)), bins=5)
    assert list(edges) == feature_names(4) == ["x0", "x1", "x2", "x3"]
    for e in edges.values():
        assert e[0] == -np.inf and e[-1] == np.inf and len(e) == 6
        assert np.all(np.diff(e) > 0)
    images = rng.random(size=(50, 2, 3))  # flattened to 6 columns
    assert list(input_edges(images, bins=3)) == feature_names(6)
    wide = rng.random(size=(10, MAX_INPUT_FEATURES + 1))
    assert input_edges(wide) == {}


def test_input_histograms_use_the_spec_edges_and_class_bins():
    spec = _spec(num_classes=NUM_CLASSES)
    w = _window(1)
    probs = _probs_from_x0(w.x)
    h = histograms(spec, w.x, w.y, probs)
    assert list(h) == [*feature_names(NUM_FEATURES), LABEL, PREDICTION]
    for j, name in enumerate(feature_names(NUM_FEATURES)):
        assert len(h[name]) == len(spec.edges[name]) - 1 == 10
        np.testing.assert_array_equal(h[name], histogram(w.x[:, j], spec.edges[name]))
    assert len(h[LABEL]) == len(h[PREDICTION]) == NUM_CLASSES
    np.testing.assert_array_equal(h[LABEL], np.bincount(w.y, minlength=NUM_CLASSES))
    np.testing.assert_array_equal(
        h[PREDICTION], np.bincount(probs.argmax(axis=1), minlength=NUM_CLASSES)
    )
    assert all(int(c.sum()) == len(w.y) for c in h.values())
    assert all(c.dtype == np.int64 for c in h.values())


def test_output_histograms_when_the_spec_has_no_edges():
    num_classes = 4
    spec = MonitorSpec(num_classes=num_classes)
    rng = np.random.default_rng(2)
    x = rng.random(size=(300, 8, 8)).astype(np.float32)  # image-like: inputs are not binned
    y = rng.integers(0, num_classes, 300)
    probs = rng.dirichlet(np.ones(num_classes), size=300)
    h = histograms(spec, x, y, probs)
    outputs = [f"output{k}" for k in range(num_classes)]
    assert list(h) == [*outputs, LABEL, PREDICTION]
    for k, name in enumerate(outputs):
        assert len(h[name]) == len(OUTPUT_EDGES) - 1 == 10
        np.testing.assert_array_equal(h[name], histogram(probs[:, k], OUTPUT_EDGES))
    assert len(h[LABEL]) == len(h[PREDICTION]) == num_classes
    np.testing.assert_array_equal(h[LABEL], np.bincount(y, minlength=num_classes))
    assert all(int(c.sum()) == 300 for c in h.values())


def test_class_edges_give_one_bin_per_class():
    for k in (2, 3, 10):
        e = class_edges(k)
        assert len(e) == k + 1
        np.testing.assert_array_equal(histogram(np.arange(k), e), np.ones(k, np.int64))


def test_histograms_refuse_data_with_another_number_of_features():
    spec = _spec()
    x = np.zeros((5, NUM_FEATURES + 1), np.float32)
    with pytest.raises(ValueError, match="4 features, the monitoring spec 3"):
        histograms(spec, x, np.zeros(5, np.int64), np.full((5, 2), 0.5))


# -- site_report ---------------------------------------------------------------------------------


def test_identical_windows_have_no_drift_on_any_feature():
    spec = _spec()
    w = _window(3)
    report = site_report(spec, _probs_from_x0, reference=w, current=w)
    names = [d.feature for d in report.drift]
    assert names == [*feature_names(NUM_FEATURES), LABEL, PREDICTION]
    for d in report.drift:
        assert (d.psi, d.js, d.ks) == (0.0, 0.0, 0.0), d
        assert d.ks_pvalue == pytest.approx(1.0)
        assert d.level == "none" and not d.alert
    assert report.fairness == {}  # no test window: drift only
    for name in names:
        np.testing.assert_array_equal(report.reference[name], report.current[name])
    assert drift_alerts("site-0", report.drift, MonitorThresholds()) == []


def test_a_shifted_column_drifts_significantly_on_exactly_that_feature():
    spec = _spec()
    reference = _window(4)
    current = _window(5, shift={2: 2.0})  # a new draw; only x2 moves (the model ignores it)
    report = site_report(spec, _probs_from_x0, reference=reference, current=current)
    by_name = {d.feature: d for d in report.drift}
    assert by_name["x2"].level == "significant" and by_name["x2"].psi > 1.0
    assert by_name["x2"].alert and by_name["x2"].ks > 0.5
    assert by_name["x2"].ks_pvalue < 1e-6
    for name, d in by_name.items():
        if name != "x2":
            assert d.level == "none" and d.psi < 0.05 and not d.alert, d
    alerts = drift_alerts("site-7", report.drift, MonitorThresholds())
    assert {(a["site"], a["feature"]) for a in alerts} == {("site-7", "x2")}
    assert {a["statistic"] for a in alerts} == {"psi", "js"}
    summary = drift_summary(report.drift)
    assert summary["psi_feature"] == summary["js_feature"] == summary["ks_feature"] == "x2"
    assert summary["psi"] == by_name["x2"].psi
    assert summary["by_feature"] == {d.feature: d.psi for d in report.drift}


def test_site_report_counts_fairness_on_the_test_window_only_with_groups():
    spec = _spec(positive_label=1)
    w = _window(6)
    test = _window(7, n=400, groups=True)
    report = site_report(spec, _probs_from_x0, reference=w, current=w, test=test)
    predicted = _probs_from_x0(test.x).argmax(axis=1)
    assert report.fairness == confusion_counts(test.y, predicted, test.groups, positive_label=1)
    assert sum(c.n for c in report.fairness.values()) == 400
    no_groups = Window(x=test.x, y=test.y)
    assert site_report(spec, _probs_from_x0, reference=w, current=w, test=no_groups).fairness == {}
    # the favourable class decides which cell is a "positive"
    flipped = site_report(
        MonitorSpec(edges=spec.edges, positive_label=0),
        _probs_from_x0,
        reference=w,
        current=w,
        test=test,
    )
    for g, c in flipped.fairness.items():
        theirs = report.fairness[g]
        assert (c.tp, c.fp, c.tn, c.fn) == (theirs.tn, theirs.fn, theirs.tp, theirs.fp)


# -- pooled drift --------------------------------------------------------------------------------


@st.composite
def _federations(draw):
    num_sites = draw(st.integers(1, 4))
    sizes = st.integers(1, 40)
    values = st.floats(-3, 3, allow_nan=False, width=32)
    sites = []
    for _ in range(num_sites):
        n_ref, n_cur = draw(sizes), draw(sizes)
        ref = np.array(draw(st.lists(values, min_size=2 * n_ref, max_size=2 * n_ref)), np.float32)
        cur = np.array(draw(st.lists(values, min_size=2 * n_cur, max_size=2 * n_cur)), np.float32)
        y_ref = np.array(draw(st.lists(st.integers(0, 2), min_size=n_ref, max_size=n_ref)))
        y_cur = np.array(draw(st.lists(st.integers(0, 2), min_size=n_cur, max_size=n_cur)))
        sites.append(
            (Window(x=ref.reshape(n_ref, 2), y=y_ref), Window(x=cur.reshape(n_cur, 2), y=y_cur))
        )
    bins = draw(st.integers(2, 8))
    return sites, bins


def _three_class_probs(x: np.ndarray) -> np.ndarray:
    logits = np.stack([x[:, 0], x[:, 1], x[:, 0] * x[:, 1]], axis=1).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@settings(max_examples=40, deadline=None)
@given(_federations())
def test_pooled_drift_is_drift_of_the_concatenated_raw_data(federation):
    sites, bins = federation
    held_out = np.random.default_rng(bins).normal(size=(200, 2))
    spec = MonitorSpec(edges=input_edges(held_out, bins=bins), num_classes=3)
    exact = ReportLimits(min_count=1)  # no bin merged: the pooling alone is under test
    reports = [
        site_report(spec, _three_class_probs, reference=ref, current=cur, limits=exact)
        for ref, cur in sites
    ]
    ours = pooled_drift(reports)
    # nobody holds this: every site's rows in one place, binned on the same edges
    all_ref = Window(
        x=np.concatenate([r.x for r, _ in sites]), y=np.concatenate([r.y for r, _ in sites])
    )
    all_cur = Window(
        x=np.concatenate([c.x for _, c in sites]), y=np.concatenate([c.y for _, c in sites])
    )
    h_ref = histograms(spec, all_ref.x, all_ref.y, _three_class_probs(all_ref.x))
    h_cur = histograms(spec, all_cur.x, all_cur.y, _three_class_probs(all_cur.x))
    names = list(h_ref)
    theirs = drift_report(names, [h_ref[n] for n in names], [h_cur[n] for n in names])
    assert [d.feature for d in ours] == names
    for a, b in zip(ours, theirs, strict=True):
        assert a.level == b.level
        for stat in ("psi", "js", "ks", "ks_pvalue"):
            assert getattr(a, stat) == pytest.approx(getattr(b, stat), rel=1e-12, abs=1e-12)


def test_pooled_drift_equals_drift_report_on_the_summed_histograms():
    spec = _spec()
    reports = [
        site_report(
            spec, _probs_from_x0, reference=_window(10 + i, 300), current=_window(20 + i, 200)
        )
        for i in range(3)
    ]
    names = list(reports[0].reference)
    summed_ref = [sum(r.reference[n] for r in reports) for n in names]
    summed_cur = [sum(r.current[n] for r in reports) for n in names]
    assert pooled_drift(reports) == drift_report(names, summed_ref, summed_cur)


def test_pooled_drift_skips_reports_without_counts():
    spec = _spec()
    real = site_report(spec, _probs_from_x0, reference=_window(30), current=_window(31))
    assert pooled_drift([]) == []
    assert pooled_drift([SiteReport()]) == []
    assert pooled_drift([SiteReport(), real]) == list(real.drift)


# -- summarize -----------------------------------------------------------------------------------


def _federation_reports() -> dict[str, SiteReport]:
    spec = _spec(positive_label=1)
    reports = {}
    for i, site in enumerate(("site-0", "site-1", "site-2")):
        shift = {1: 3.0} if site == "site-1" else None
        reports[site] = site_report(
            spec,
            _probs_from_x0,
            reference=_window(40 + i, 1500),
            current=_window(50 + i, 1500, shift=shift),
            test=_window(60 + i, 300 + 100 * i, groups=True),
        )
    return reports


def test_summarize_alerts_only_for_the_drifting_site_and_pools_fairness():
    reports = _federation_reports()
    accuracy = {"site-0": 0.9, "site-1": 0.6, "site-2": 0.8}
    thresholds = MonitorThresholds()
    out = summarize(reports, accuracy, thresholds)
    assert set(out) == {"drift", "drift_alerts", "drift_pooled", "fairness", "fairness_alerts"}
    assert list(out["drift"]) == ["site-0", "site-1", "site-2"]
    for site, r in reports.items():
        assert out["drift"][site] == drift_summary(r.drift)
    assert out["drift_alerts"]
    assert {a["site"] for a in out["drift_alerts"]} == {"site-1"}
    assert {a["feature"] for a in out["drift_alerts"]} == {"x1"}
    assert out["drift_alerts"] == drift_alerts("site-1", reports["site-1"].drift, thresholds)
    assert out["drift_pooled"] == drift_summary(pooled_drift(list(reports.values())))
    expected = fairness_metrics(pool([r.fairness for r in reports.values()]))
    expected["site_accuracy_gap"] = site_accuracy_gap(accuracy)
    assert out["fairness"] == expected
    assert out["fairness"]["site_accuracy_gap"] == pytest.approx(0.3)
    assert out["fairness_alerts"] == fairness_alerts(expected, thresholds.fairness)
    assert {"metric": "site_accuracy_gap", "value": pytest.approx(0.3), "threshold": 0.15} in out[
        "fairness_alerts"
    ]


def test_summarize_without_fairness_counts_or_accuracy_has_no_fairness_field():
    spec = _spec()
    w = _window(70)
    reports = {"site-0": site_report(spec, _probs_from_x0, reference=w, current=w)}
    out = summarize(reports, {"site-0": math.nan}, MonitorThresholds())
    assert "fairness" not in out and "fairness_alerts" not in out
    assert out["drift_alerts"] == []
    # only the site accuracy gap, from accuracies alone (NaN ignored)
    out = summarize(
        reports, {"site-0": 0.5, "site-1": math.nan, "site-2": 0.75}, MonitorThresholds()
    )
    assert out["fairness"] == {"site_accuracy_gap": 0.25}
    assert summarize({}, {}, MonitorThresholds()) == {"drift": {}, "drift_alerts": []}


def test_thresholds_decide_which_statistics_alert():
    reports = _federation_reports()
    drifting = reports["site-1"].drift
    lax = MonitorThresholds(psi=1e9, js=1.0)
    assert drift_alerts("site-1", drifting, lax) == []
    ks_on = MonitorThresholds(psi=1e9, js=1.0, ks_pvalue=0.01)
    alerts = drift_alerts("site-1", drifting, ks_on)
    assert [(a["feature"], a["statistic"]) for a in alerts] == [("x1", "ks_pvalue")]
    assert alerts[0]["value"] < 0.01 and alerts[0]["level"] == "significant"
    quiet = MonitorThresholds(fairness=FairnessThresholds(**dict.fromkeys(_FAIRNESS_FIELDS)))
    assert summarize(reports, {"site-0": 0.1, "site-1": 0.9}, quiet)["fairness_alerts"] == []


_FAIRNESS_FIELDS = tuple(FairnessThresholds.__dataclass_fields__)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"psi": 0.0}, "psi alert threshold must be > 0"),
        ({"psi": -1.0}, "psi alert threshold must be > 0"),
        ({"psi": math.nan}, "psi alert threshold must be > 0"),
        ({"js": 0.0}, "js alert threshold must be > 0"),
        ({"js": math.nan}, "js alert threshold must be > 0"),
        ({"ks_pvalue": -0.1}, "ks_pvalue must be in"),
        ({"ks_pvalue": 1.0}, "ks_pvalue must be in"),
        ({"ks_pvalue": math.nan}, "ks_pvalue must be in"),
    ],
)
def test_monitor_thresholds_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MonitorThresholds(**kwargs)


def test_monitor_thresholds_defaults():
    t = MonitorThresholds()
    assert (t.psi, t.js, t.ks_pvalue) == (0.25, 0.1, 0.0)
    assert t.fairness == FairnessThresholds()
    MonitorThresholds(psi=0.1, js=0.5, ks_pvalue=0.999)  # in range
