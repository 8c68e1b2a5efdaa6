"""``fedops simulate`` imports none of the deployed coordinator's Prometheus exporter.

Every module a simulation imports stays resident for the whole run, and the issue's memory
goal (peak RSS of a 1000-client round) counts it: prometheus_client and the HTTP server
modules it pulls in (~1.2 MB) serve only ``fedops coordinator --metrics-port``.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_simulation_engine_imports_no_prometheus_client():
    code = (
        "import sys\n"
        "import fedops.simulation.engine\n"
        "import fedops.runtime.records\n"
        "loaded = sorted(m for m in ('prometheus_client', 'fedops.runtime.metrics', "
        "'wsgiref', 'http.server') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
