"""Prometheus metrics of a running coordinator (``--metrics-port``).

Each coordinator owns its own registry (not the process-global one), so
several runs in one process (tests, notebooks) never share counters. The
values come from the same places as ``metrics.jsonl``: committed rounds,
rejections and alerts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from fedops.runtime.driver import RoundRecord

log = logging.getLogger("fedops.metrics")

ROUND_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class RunMetrics:
    """The counters, gauges and histograms a coordinator exposes."""

    def __init__(self, connected: Callable[[], int] = lambda: 0) -> None:
        r = self.registry = CollectorRegistry()
        self.rounds = Counter("fedops_rounds", "Rounds committed", registry=r)
        self.round = Gauge("fedops_round", "The last committed round", registry=r)
        self.round_seconds = Histogram(
            "fedops_round_duration_seconds",
            "Wall time per round",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.participants = Gauge(
            "fedops_round_participants",
            "Clients whose update counted in the last round",
            registry=r,
        )
        self.connected = Gauge("fedops_connected_nodes", "Agents currently connected", registry=r)
        self.connected.set_function(connected)
        self.accuracy = Gauge(
            "fedops_eval_accuracy", "Federated evaluation accuracy of the last round", registry=r
        )
        self.rejected = Counter(
            "fedops_rejected_updates",
            "Calls or results refused, by status code",
            ["code"],
            registry=r,
        )
        self.epsilon = Gauge("fedops_privacy_epsilon", "Differential privacy ε spent", registry=r)
        self.drift_alerts = Counter(
            "fedops_drift_alerts", "Drift alerts, by site", ["site"], registry=r
        )
        self.fairness_alerts = Counter(
            "fedops_fairness_alerts", "Fairness alerts, by metric", ["metric"], registry=r
        )
        self.max_psi = Gauge(
            "fedops_drift_max_psi", "Largest PSI of a site in the last round", ["site"], registry=r
        )
        self._server: Any = None

    def observe_round(self, record: RoundRecord) -> None:
        m = record.metrics
        self.rounds.inc()
        self.round.set(record.server_round)
        self.round_seconds.observe(float(m.get("duration_s", 0.0)))
        self.participants.set(int(m.get("num_clients", 0)))
        _set_finite(self.accuracy, m.get("eval_accuracy"))
        _set_finite(self.epsilon, m.get("epsilon"))
        for site, drift in m.get("drift", {}).items():
            _set_finite(self.max_psi.labels(site=site), drift.get("psi"))
        for alert in m.get("drift_alerts", []):
            self.drift_alerts.labels(site=alert["site"]).inc()
        for alert in m.get("fairness_alerts", []):
            self.fairness_alerts.labels(metric=alert["metric"]).inc()

    def observe_rejection(self, server_round: int, node: str, code: str, reason: str) -> None:
        self.rejected.labels(code=code).inc()

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` over HTTP in a daemon thread; return the bound port."""
        server, _ = start_http_server(port, addr=address, registry=self.registry)
        self._server = server
        bound = int(server.server_address[1])
        log.info("Prometheus metrics on http://%s:%d/metrics", address, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _set_finite(gauge: Gauge, value: object) -> None:
    if isinstance(value, int | float) and math.isfinite(value):
        gauge.set(float(value))
