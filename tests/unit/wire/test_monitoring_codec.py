"""fedops.wire.monitoring: monitoring requests and site reports on the wire, and their checks.

A report is decoded against the request it answers: histograms must have the
requested bins, counts must be plausible, fairness cells must add up, and
the drift statistics a site sends must be the ones its own histograms give.
Every refusal is an :class:`InvalidUpdate` whose message says why.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedops.core.monitoring.drift import drift_report
from fedops.core.monitoring.fairness import confusion_counts
from fedops.core.monitoring.profile import (
    LABEL,
    OUTPUT_EDGES,
    PREDICTION,
    MonitorSpec,
    SiteReport,
    Window,
    input_edges,
    site_report,
)
from fedops.core.monitoring.summary import MonitorThresholds, summarize
from fedops.core.params import InvalidUpdate
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import monitoring
from fedops.wire.monitoring import (
    MAX_BINS,
    MAX_COUNT,
    MAX_FEATURES,
    MAX_GROUPS,
    expected_bins,
    report_from_proto,
    report_to_proto,
    spec_from_proto,
    spec_to_proto,
)


def _probs(x: np.ndarray) -> np.ndarray:
    logits = np.stack([np.zeros(len(x)), x[:, 0] - 0.5 * x[:, 1]], axis=1).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _window(seed: int, n: int, shift: float = 0.0, groups: bool = False) -> Window:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 3)) + np.array([0.0, 0.0, shift])).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0]))).astype(np.int64)
    return Window(x=x, y=y, groups=rng.integers(0, 3, n) if groups else None)


SPEC = MonitorSpec(
    edges=input_edges(np.random.default_rng(99).normal(size=(500, 3)), bins=8),
    num_classes=2,
    positive_label=1,
)


def _report(spec: MonitorSpec = SPEC) -> SiteReport:
    """A real report: drift on x2 (shifted), fairness counts of three groups."""
    return site_report(
        spec,
        _probs,
        reference=_window(1, 400),
        current=_window(2, 300, shift=1.5),
        test=_window(3, 200, groups=True),
    )


def _msg(spec: MonitorSpec = SPEC) -> pb.SiteReport:
    msg = report_to_proto(_report(spec))
    # what actually crosses the wire
    wire = pb.SiteReport()
    wire.ParseFromString(msg.SerializeToString())
    return wire


def _refused(msg: pb.SiteReport, match: str, spec: MonitorSpec = SPEC) -> str:
    with pytest.raises(InvalidUpdate, match=match) as info:
        report_from_proto(msg, spec)
    return str(info.value)


def _hist(msg: pb.SiteReport, name: str) -> pb.Histogram:
    (h,) = [h for h in msg.histograms if h.name == name]
    return h


def _stat(msg: pb.SiteReport, feature: str) -> pb.DriftStatistic:
    (d,) = [d for d in msg.drift if d.feature == feature]
    return d


# -- round trips ---------------------------------------------------------------------------------


def _assert_same_report(a: SiteReport, b: SiteReport) -> None:
    assert a.drift == b.drift
    assert list(a.reference) == list(b.reference) and list(a.current) == list(b.current)
    for name in a.reference:
        np.testing.assert_array_equal(a.reference[name], b.reference[name])
        np.testing.assert_array_equal(a.current[name], b.current[name])
        assert b.reference[name].dtype == np.int64
    assert a.fairness == b.fairness


def test_a_real_report_survives_the_round_trip():
    report = _report()
    assert report.fairness and any(d.alert for d in report.drift)  # not a trivial report
    decoded = report_from_proto(_msg(), SPEC)
    _assert_same_report(report, decoded)
    assert decoded.fairness == confusion_counts(
        _window(3, 200, groups=True).y,
        _probs(_window(3, 200).x).argmax(axis=1),
        _window(3, 200, groups=True).groups,
    )


def test_an_output_monitoring_report_survives_the_round_trip():
    spec = MonitorSpec(num_classes=2)  # no held-out data: class-probability bins
    report = _report(spec)
    assert [d.feature for d in report.drift] == ["output0", "output1", LABEL, PREDICTION]
    _assert_same_report(report, report_from_proto(_msg(spec), spec))


def test_a_report_without_fairness_counts_decodes_with_none():
    w = _window(5, 50)
    report = site_report(SPEC, _probs, reference=w, current=w)
    decoded = report_from_proto(report_to_proto(report), SPEC)
    assert decoded.fairness == {}
    assert all(d.psi == 0.0 for d in decoded.drift)


def test_the_spec_survives_the_round_trip():
    for spec in (SPEC, MonitorSpec(num_classes=5, positive_label=3)):
        msg = pb.MonitorRequest()
        msg.ParseFromString(spec_to_proto(spec).SerializeToString())
        back = spec_from_proto(msg)
        assert (back.num_classes, back.positive_label) == (spec.num_classes, spec.positive_label)
        assert list(back.edges) == list(spec.edges)
        for name, edges in spec.edges.items():
            np.testing.assert_array_equal(back.edges[name], edges)  # ±inf included
        assert expected_bins(back) == expected_bins(spec)


def test_expected_bins():
    assert expected_bins(SPEC) == {"x0": 8, "x1": 8, "x2": 8, LABEL: 2, PREDICTION: 2}
    out = expected_bins(MonitorSpec(num_classes=3))
    assert out == {
        "output0": len(OUTPUT_EDGES) - 1,
        "output1": len(OUTPUT_EDGES) - 1,
        "output2": len(OUTPUT_EDGES) - 1,
        LABEL: 3,
        PREDICTION: 3,
    }


# -- histograms ----------------------------------------------------------------------------------


def test_a_histogram_with_the_wrong_number_of_bins_is_refused():
    msg = _msg()
    _hist(msg, "x1").reference.append(3)
    _refused(msg, r"histogram 'x1' has 9 bins, the request defines 8")
    msg = _msg()
    del _hist(msg, LABEL).current[-1]
    _refused(msg, r"histogram 'label' has 1 bins, the request defines 2")


def test_a_missing_histogram_is_refused():
    msg = _msg()
    del msg.histograms[1]
    _refused(msg, r"the report's histograms \(4\) are not the 5 requested")


def test_an_extra_or_renamed_histogram_is_refused():
    msg = _msg()
    msg.histograms.add(name="x3", reference=[1] * 8, current=[1] * 8)
    _refused(msg, r"the report's histograms \(6\) are not the 5 requested")
    msg = _msg()
    _hist(msg, "x2").name = "x0"  # x0 twice, x2 missing
    _refused(msg, r"the report's histograms \(5\) are not the 5 requested")


def test_negative_counts_are_refused():
    msg = _msg()
    h = _hist(msg, "x0")
    h.current[0], h.current[1] = -1, h.current[1] + h.current[0] + 1  # same total
    _refused(msg, r"histogram 'x0' has negative, empty or implausible counts")


def test_an_all_zero_histogram_is_refused():
    msg = _msg()
    h = _hist(msg, PREDICTION)
    del h.reference[:]
    h.reference.extend([0, 0])
    _refused(msg, r"histogram 'prediction' has negative, empty or implausible counts")


def test_an_implausibly_large_histogram_is_refused():
    msg = _msg()
    h = _hist(msg, "x1")
    h.reference[0] = MAX_COUNT + 1
    _refused(msg, r"histogram 'x1' has negative, empty or implausible counts")


def test_counts_whose_sum_overflows_int64_are_refused():
    msg = _msg()
    h = _hist(msg, "x1")
    del h.reference[:]
    h.reference.extend([2**62, 2**62] + [0] * 6)
    _fix_statistics(msg)  # consistent statistics: only the counts are wrong
    _refused(msg, r"histogram 'x1' has negative, empty or implausible counts")


def test_an_overflowing_report_cannot_break_the_coordinators_summary():
    msg = _msg()
    h = _hist(msg, "x1")
    del h.reference[:]
    h.reference.extend([2**63 - 1, 1] + [0] * 6)  # the int64 sum wraps to -2**63
    _fix_statistics(msg)
    try:
        liar = report_from_proto(msg, SPEC)
    except InvalidUpdate:
        return  # refused at the door: the fix
    honest = report_from_proto(_msg(), SPEC)
    summarize({"site-0": honest, "site-1": liar}, {}, MonitorThresholds())


def _fix_statistics(msg: pb.SiteReport) -> None:
    """Replace the message's drift statistics by those of its (edited) histograms."""
    names = [h.name for h in msg.histograms]
    ref = [np.asarray(h.reference, np.int64) for h in msg.histograms]
    cur = [np.asarray(h.current, np.int64) for h in msg.histograms]
    del msg.drift[:]
    for d in drift_report(names, ref, cur):
        msg.drift.add(feature=d.feature, psi=d.psi, js=d.js, ks=d.ks, ks_pvalue=d.ks_pvalue)


def test_edited_histograms_with_recomputed_statistics_are_accepted():
    msg = _msg()
    h = _hist(msg, "x0")
    donor = max(range(len(h.current)), key=lambda i: h.current[i])
    target = (donor + 1) % len(h.current)
    h.current[donor] -= 5  # move rows between bins: the window keeps its size
    h.current[target] += 5
    _fix_statistics(msg)
    decoded = report_from_proto(msg, SPEC)
    assert int(decoded.current["x0"][target]) == int(h.current[target])


# -- drift statistics ----------------------------------------------------------------------------


def test_a_site_hiding_its_drift_is_refused():
    """The histograms show drift on x2; the site claims there is none."""
    msg = _msg()
    d = _stat(msg, "x2")
    assert d.psi > 0.25
    d.psi, d.js, d.ks, d.ks_pvalue = 0.0, 0.0, 0.0, 1.0
    reason = _refused(msg, r"drift statistic psi of 'x2' is 0\.0, but the site's own histograms")
    assert "give" in reason


def test_histograms_doctored_to_hide_drift_no_longer_match_the_statistics():
    msg = _msg()
    h = _hist(msg, "x2")
    del h.current[:]
    h.current.extend(h.reference)
    _refused(
        msg,
        r"drift statistic \w+ of 'x2' is .*, but the site's own histograms give"
        r"|the (reference|current) histograms count different numbers of rows",
    )


@pytest.mark.parametrize("stat", ["psi", "js", "ks", "ks_pvalue"])
def test_each_statistic_is_recomputed(stat):
    msg = _msg()
    d = _stat(msg, "x1")
    setattr(d, stat, getattr(d, stat) + 1e-3)
    _refused(msg, rf"drift statistic {stat} of 'x1' is ")


def test_rounding_differences_are_tolerated():
    msg = _msg()
    d = _stat(msg, "x2")
    d.psi = d.psi * (1 + 1e-12)
    report_from_proto(msg, SPEC)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("stat", ["psi", "js", "ks_pvalue"])
def test_a_non_finite_statistic_is_refused(stat, value):
    msg = _msg()
    setattr(_stat(msg, LABEL), stat, value)
    _refused(msg, rf"drift statistic {stat} of 'label' is {value!r}")


def test_drift_statistics_must_cover_the_histograms_exactly():
    msg = _msg()
    del msg.drift[0]
    _refused(msg, "the report's drift statistics do not cover its histograms")
    msg = _msg()
    msg.drift.add(feature="x9")
    _refused(msg, "the report's drift statistics do not cover its histograms")
    msg = _msg()
    msg.drift[1].CopyFrom(msg.drift[0])  # x0 twice, x1 missing
    _refused(msg, "the report's drift statistics do not cover its histograms")


# -- fairness counts -----------------------------------------------------------------------------


def test_cells_that_do_not_add_up_to_n_are_refused():
    msg = _msg()
    g = msg.fairness[0]
    g.n += 1
    _refused(msg, rf"fairness counts of group {g.group} are inconsistent")
    msg = _msg()
    msg.fairness[1].tp += 1
    _refused(msg, rf"fairness counts of group {msg.fairness[1].group} are inconsistent")


def test_negative_or_excess_cells_are_refused():
    msg = _msg()
    g = msg.fairness[0]
    g.tp, g.fp = g.tp - (g.tp + 1), g.fp + (g.tp + 1)  # tp = -1, same total
    assert g.tp == -1
    _refused(msg, r"fairness counts of group \d+ are inconsistent")
    msg = _msg()
    msg.fairness[0].correct = msg.fairness[0].n + 1
    _refused(msg, r"fairness counts of group \d+ are inconsistent")
    msg = _msg()
    msg.fairness[0].correct = -1
    _refused(msg, r"fairness counts of group \d+ are inconsistent")
    msg = _msg()
    big = msg.fairness[0]
    big.n, big.tp, big.fp, big.tn, big.fn, big.correct = MAX_COUNT + 1, 0, 0, MAX_COUNT + 1, 0, 0
    _refused(msg, r"fairness counts of group \d+ are inconsistent")


def test_a_duplicate_group_is_refused():
    msg = _msg()
    msg.fairness.add().CopyFrom(msg.fairness[0])
    _refused(msg, rf"fairness counts of group {msg.fairness[0].group} are inconsistent")


def test_too_many_groups_are_refused_and_the_limit_is_accepted():
    def with_groups(k: int) -> pb.SiteReport:
        msg = _msg()
        del msg.fairness[:]
        for g in range(k):
            msg.fairness.add(group=g, n=2, tp=1, tn=1, correct=2)
        return msg

    decoded = report_from_proto(with_groups(MAX_GROUPS), SPEC)
    assert len(decoded.fairness) == MAX_GROUPS
    _refused(with_groups(MAX_GROUPS + 1), rf"fairness counts for {MAX_GROUPS + 1} groups")


def test_refusals_are_value_errors_for_callers_that_catch_those():
    msg = _msg()
    msg.fairness[0].n += 1
    with pytest.raises(ValueError):
        monitoring.report_from_proto(msg, SPEC)


# -- monitoring requests -------------------------------------------------------------------------


def _request(*edges: list[float], num_classes: int = 2, positive_label: int = 1):
    return pb.MonitorRequest(
        edges=[pb.FeatureEdges(name=f"x{i}", edges=e) for i, e in enumerate(edges)],
        num_classes=num_classes,
        positive_label=positive_label,
    )


@pytest.mark.parametrize(
    "bad",
    [
        [-math.inf, 1.0, 1.0, math.inf],  # repeated edge
        [-math.inf, 2.0, 1.0, math.inf],  # decreasing
        [math.inf, -math.inf],
        [-math.inf, math.nan, math.inf],
        [0.0],  # one edge: no bin
        [],
        list(np.arange(MAX_BINS + 2, dtype=float)),  # one bin too many
    ],
)
def test_a_request_with_bad_edges_is_refused(bad):
    good = [-math.inf, 0.0, math.inf]
    with pytest.raises(InvalidUpdate, match=r"bin edges of feature 'x1' are not increasing"):
        spec_from_proto(_request(good, bad))


def test_edges_at_the_limits_are_accepted():
    spec = spec_from_proto(_request([0.0, 1.0], list(np.arange(MAX_BINS + 1, dtype=float))))
    assert expected_bins(spec)["x0"] == 1 and expected_bins(spec)["x1"] == MAX_BINS


def test_too_many_features_are_refused():
    edges = [[0.0, 1.0]] * (MAX_FEATURES + 1)
    with pytest.raises(InvalidUpdate, match=rf"a monitoring request with {MAX_FEATURES + 1}"):
        spec_from_proto(_request(*edges))


@pytest.mark.parametrize(
    ("num_classes", "positive_label", "match"),
    [
        (2, 2, "positive_label 2 is not a class of a 2-class task"),
        (3, -1, "positive_label -1 is not a class of a 3-class task"),
        (1, 0, "num_classes must be >= 2"),
        (0, 0, "num_classes must be >= 2"),
    ],
)
def test_a_request_with_bad_classes_is_refused(num_classes, positive_label, match):
    with pytest.raises(InvalidUpdate, match=rf"monitoring request: {match}"):
        spec_from_proto(
            _request(
                [-math.inf, 0.0, math.inf], num_classes=num_classes, positive_label=positive_label
            )
        )


def test_histograms_of_one_window_must_count_the_same_rows():
    msg = _msg()
    h = _hist(msg, "x0")
    h.current[0] += 5  # x0 now counts 5 rows more than every other feature
    _fix_statistics(msg)
    _refused(msg, r"the current histograms count different numbers of rows")
