"""Run reports: plots of a run directory's metrics (later: HTML report, Prometheus)."""
