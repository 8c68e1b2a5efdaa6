"""The coordinator's Prometheus metrics (:mod:`fedops.runtime.metrics`).

Under test: what a scrape shows after rounds and rejections are observed
(counters, the last round's gauges, the round-duration histogram's buckets,
labelled alert counters), that non-finite values never reach a gauge, that
each :class:`RunMetrics` has its own registry, and that ``serve`` binds the
asked address, reports the port it got and serves the same text over HTTP.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedops.runtime.driver import RoundRecord
from fedops.runtime.metrics import ROUND_BUCKETS, RunMetrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``(name, sorted labels) -> value`` for every sample of a text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(metrics: RunMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return _samples(generate_latest(metrics.registry).decode())


def _round(server_round: int, **metrics: Any) -> RoundRecord:
    return RoundRecord(server_round=server_round, metrics=metrics)


@pytest.fixture
def metrics() -> Iterator[RunMetrics]:
    m = RunMetrics(connected=lambda: 3)
    yield m
    m.close()


def test_before_any_round_the_counters_are_zero(metrics: RunMetrics) -> None:
    got = _scrape(metrics)
    assert got[("fedops_rounds_total", ())] == 0
    assert got[("fedops_round", ())] == 0
    assert got[("fedops_round_duration_seconds_count", ())] == 0
    assert got[("fedops_connected_nodes", ())] == 3  # read from the callable at scrape time


def test_observed_rounds_count_and_the_gauges_hold_the_last_round(metrics: RunMetrics) -> None:
    metrics.observe_round(_round(1, duration_s=3.0, num_clients=4, eval_accuracy=0.5, epsilon=0.75))
    metrics.observe_round(
        _round(2, duration_s=0.2, num_clients=6, eval_accuracy=0.8125, epsilon=1.5)
    )
    got = _scrape(metrics)
    assert got[("fedops_rounds_total", ())] == 2
    assert got[("fedops_round", ())] == 2
    assert got[("fedops_round_participants", ())] == 6
    assert got[("fedops_eval_accuracy", ())] == 0.8125
    assert got[("fedops_privacy_epsilon", ())] == 1.5
    assert got[("fedops_round_duration_seconds_count", ())] == 2
    assert got[("fedops_round_duration_seconds_sum", ())] == pytest.approx(3.2)


def test_round_durations_fall_into_their_buckets(metrics: RunMetrics) -> None:
    for seconds in (0.05, 0.5, 3.0, 3.0, 4000.0):
        metrics.observe_round(_round(1, duration_s=seconds))
    got = _scrape(metrics)

    def bucket(le: str) -> float:
        return got[("fedops_round_duration_seconds_bucket", (("le", le),))]

    assert bucket("0.1") == 1
    assert bucket("0.5") == 2  # upper bounds are inclusive
    assert bucket("2.0") == 2
    assert bucket("5.0") == 4
    assert bucket("1800.0") == 4
    assert bucket("+Inf") == 5
    buckets = sorted(
        float(labels[0][1])
        for (name, labels) in got
        if name == "fedops_round_duration_seconds_bucket" and labels[0][1] != "+Inf"
    )
    assert buckets == [float(b) for b in ROUND_BUCKETS]


def test_a_round_without_numbers_counts_and_the_value_gauges_keep_theirs(
    metrics: RunMetrics,
) -> None:
    metrics.observe_round(_round(1, eval_accuracy=0.7, epsilon=2.0, num_clients=5))
    metrics.observe_round(_round(2))
    got = _scrape(metrics)
    assert got[("fedops_rounds_total", ())] == 2
    assert got[("fedops_round", ())] == 2
    assert got[("fedops_round_participants", ())] == 0  # a round that counted nobody
    assert got[("fedops_eval_accuracy", ())] == 0.7  # kept from round 1
    assert got[("fedops_privacy_epsilon", ())] == 2.0
    # without a duration a round is observed at 0 s (both rounds here)
    assert got[("fedops_round_duration_seconds_bucket", (("le", "0.1"),))] == 2
    assert got[("fedops_round_duration_seconds_sum", ())] == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "0.9", None])
def test_a_non_finite_or_non_numeric_value_leaves_the_gauge_as_it_was(
    metrics: RunMetrics, bad: object
) -> None:
    """ε is infinite without noise, accuracy NaN without evaluation: a gauge keeps the last
    finite value rather than show them."""
    metrics.observe_round(_round(1, eval_accuracy=0.6, epsilon=3.0, drift={"a": {"psi": 0.2}}))
    metrics.observe_round(_round(2, eval_accuracy=bad, epsilon=bad, drift={"a": {"psi": bad}}))
    got = _scrape(metrics)
    assert got[("fedops_eval_accuracy", ())] == 0.6
    assert got[("fedops_privacy_epsilon", ())] == 3.0
    assert got[("fedops_drift_max_psi", (("site", "a"),))] == 0.2


def test_drift_and_fairness_alerts_count_by_site_and_by_metric(metrics: RunMetrics) -> None:
    metrics.observe_round(
        _round(
            1,
            drift={"bank-a": {"psi": 0.31}, "bank-b": {"psi": 0.02}},
            drift_alerts=[
                {"site": "bank-a", "feature": "x0", "statistic": "psi", "value": 0.31},
                {"site": "bank-a", "feature": "x1", "statistic": "js", "value": 0.2},
            ],
            fairness_alerts=[{"metric": "demographic_parity_difference", "value": 0.3}],
        )
    )
    metrics.observe_round(
        _round(
            2,
            drift={"bank-a": {"psi": 0.05}},
            drift_alerts=[{"site": "bank-b", "feature": "x0", "statistic": "psi", "value": 0.4}],
            fairness_alerts=[
                {"metric": "demographic_parity_difference", "value": 0.2},
                {"metric": "site_accuracy_gap", "value": 0.2},
            ],
        )
    )
    got = _scrape(metrics)
    assert got[("fedops_drift_alerts_total", (("site", "bank-a"),))] == 2
    assert got[("fedops_drift_alerts_total", (("site", "bank-b"),))] == 1
    assert (
        got[("fedops_fairness_alerts_total", (("metric", "demographic_parity_difference"),))] == 2
    )
    assert got[("fedops_fairness_alerts_total", (("metric", "site_accuracy_gap"),))] == 1
    assert got[("fedops_drift_max_psi", (("site", "bank-a"),))] == 0.05  # the last round's
    assert got[("fedops_drift_max_psi", (("site", "bank-b"),))] == 0.02  # not in round 2


def test_rejections_count_by_status_code(metrics: RunMetrics) -> None:
    for code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "INVALID_ARGUMENT"):
        metrics.observe_rejection(3, "node-1", code, "a reason that is not a label")
    got = _scrape(metrics)
    assert got[("fedops_rejected_updates_total", (("code", "INVALID_ARGUMENT"),))] == 2
    assert got[("fedops_rejected_updates_total", (("code", "FAILED_PRECONDITION"),))] == 1
    labels = {labels for (name, labels) in got if name == "fedops_rejected_updates_total"}
    assert all(key == "code" for label in labels for key, _ in label)  # no node, no reason


def test_two_runs_in_one_process_never_share_counters() -> None:
    a, b = RunMetrics(), RunMetrics()
    a.observe_round(_round(1))
    a.observe_rejection(1, "n", "INVALID_ARGUMENT", "")
    assert _scrape(a)[("fedops_rounds_total", ())] == 1
    got_b = _scrape(b)
    assert got_b[("fedops_rounds_total", ())] == 0
    assert got_b[("fedops_connected_nodes", ())] == 0  # the default: nobody connected
    assert not any(name == "fedops_rejected_updates_total" for name, _ in got_b)


def test_serve_on_port_zero_binds_loopback_and_serves_the_registry(metrics: RunMetrics) -> None:
    metrics.observe_round(_round(7, num_clients=2))
    metrics.observe_rejection(7, "n", "RESOURCE_EXHAUSTED", "")
    port = metrics.serve(0)
    assert port > 0
    assert metrics._server.server_address[0] == "127.0.0.1"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        got = _samples(response.read().decode())
    assert got[("fedops_rounds_total", ())] == 1
    assert got[("fedops_round", ())] == 7
    assert got[("fedops_connected_nodes", ())] == 3
    assert got[("fedops_rejected_updates_total", (("code", "RESOURCE_EXHAUSTED"),))] == 1
    assert not any(name.startswith("python_") or name.startswith("process_") for name, _ in got)


def test_close_stops_serving_and_may_be_called_twice(metrics: RunMetrics) -> None:
    port = metrics.serve(0)
    metrics.close()
    assert metrics._server is None
    metrics.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
