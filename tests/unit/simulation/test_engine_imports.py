"""``fedops simulate`` imports none of the deployed coordinator's Prometheus exporter.

Every module a simulation imports stays resident for the whole run, and the issue's memory
goal (peak RSS of a 1000-client round) counts it: prometheus_client and the HTTP server
modules it pulls in (~1.2 MB) serve only ``fedops coordinator --metrics-port``.
"""

from __future__ import annotations

from fresh_imports import loaded_after


def test_the_simulation_engine_imports_no_prometheus_client():
    code = "import fedops.simulation.engine\nimport fedops.runtime.records"
    modules = ("prometheus_client", "fedops.runtime.metrics", "wsgiref", "http.server")
    assert loaded_after(code, modules) == []
