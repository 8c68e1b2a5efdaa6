"""A site's fairness counts are capped at the examples it evaluated (red team B4).

Three honest sites show a real disparity (selection rates 0.2 and 0.8: DPD 0.6, two
alerts). A fourth claims ``n = 2**39`` rows per group, consistent and under every
bound, selected at 0.5 in both: summed as they are, its counts set the pooled DPD to
0.0 and the alerts vanish. Capped at the examples it evaluated, it weighs like the
others and the disparity stays visible.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.monitoring.fairness import GroupCounts, fairness_metrics, pool
from fedops.core.monitoring.profile import SiteReport
from fedops.core.monitoring.summary import MonitorThresholds, capped, summarize


def _group(tp: int, fp: int, tn: int, fn: int, correct: int) -> GroupCounts:
    return GroupCounts(n=tp + fp + tn + fn, tp=tp, fp=fp, tn=tn, fn=fn, correct=correct)


HONEST = {0: _group(20, 0, 80, 0, 100), 1: _group(80, 0, 20, 0, 100)}
N = 1 << 39
LIAR = {0: _group(N // 2, 0, N // 2, 0, N), 1: _group(N // 2, 0, N // 2, 0, N)}


def _reports(liar: bool) -> dict[str, SiteReport]:
    reports = {f"site{i}": SiteReport(fairness=HONEST) for i in range(3)}
    if liar:
        reports["mallory"] = SiteReport(fairness=LIAR)
    return reports


def test_a_site_claiming_huge_counts_no_longer_hides_the_disparity():
    accuracy = dict.fromkeys(("site0", "site1", "site2", "mallory"), 0.9)
    honest = summarize(_reports(False), accuracy, MonitorThresholds(), {"site0": 200})
    assert honest["fairness"]["demographic_parity_difference"] == pytest.approx(0.6)
    assert len(honest["fairness_alerts"]) == 2
    examples = {"site0": 200, "site1": 200, "site2": 200, "mallory": 200}
    out = summarize(_reports(True), accuracy, MonitorThresholds(), examples)
    assert out["fairness"]["demographic_parity_difference"] == pytest.approx(0.45)
    assert {a["metric"] for a in out["fairness_alerts"]} == {
        a["metric"] for a in honest["fairness_alerts"]
    }


def test_honest_counts_are_pooled_exactly_as_before():
    reports = _reports(False)
    examples = dict.fromkeys(reports, 200)
    out = summarize(reports, {}, MonitorThresholds(), examples)
    assert out["fairness"] == fairness_metrics(pool([r.fairness for r in reports.values()]))
    assert out == summarize(reports, {}, MonitorThresholds())


def test_a_site_without_an_evaluated_count_adds_no_rows():
    out = summarize(_reports(True), {}, MonitorThresholds(), dict.fromkeys(_reports(False), 200))
    assert out["fairness"]["demographic_parity_difference"] == pytest.approx(0.6)


_cells = st.integers(0, 1 << 40)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_cells, _cells, _cells, _cells), min_size=1, max_size=4), _cells)
def test_capped_counts_stay_consistent_and_within_the_limit(cells, limit):
    groups = {g: _group(*c, correct=sum(c) // 2) for g, c in enumerate(cells)}
    out = capped(groups, limit)  # GroupCounts checks tp + fp + tn + fn == n itself
    assert sum(c.n for c in out.values()) <= limit
    assert all(out[g].n <= groups[g].n for g in groups)
    if sum(c.n for c in groups.values()) <= limit:
        assert out == groups
