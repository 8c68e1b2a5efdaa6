"""Optional MLflow tracking of a run (``--mlflow-uri``; ``pip install 'fedops[mlflow]'``).

Uses MLflow's client API, never its process-global "active run", so a
coordinator or simulation never interferes with other MLflow use in the same
process. A resumed fedops run continues the MLflow run tagged with its run
id instead of starting a second one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from fedops.runtime.driver import RoundRecord

RUN_TAG = "fedops.run_id"
STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "budget_exhausted": "FINISHED"}


class MlflowUnavailable(RuntimeError):
    """``--mlflow-uri`` was given but MLflow is not installed."""


def round_values(record: RoundRecord) -> dict[str, float]:
    """The numbers of a round worth a chart: top-level metrics, fairness, pooled drift, alerts."""
    m = record.metrics
    out = {k: float(v) for k, v in m.items() if _number(v)}
    out |= {f"fairness.{k}": float(v) for k, v in m.get("fairness", {}).items() if _number(v)}
    pooled = m.get("drift_pooled", {})
    out |= {f"drift_pooled.{k}": float(pooled[k]) for k in ("psi", "js", "ks") if k in pooled}
    if "drift_alerts" in m:
        out["drift_alerts"] = float(len(m["drift_alerts"]))
    if "fairness_alerts" in m:
        out["fairness_alerts"] = float(len(m["fairness_alerts"]))
    return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class MlflowSink:
    """Logs every committed round's numbers as MLflow metrics (step = round)."""

    def __init__(self, uri: str, experiment: str, run_id: str, params: Mapping[str, Any]) -> None:
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise MlflowUnavailable(
                "--mlflow-uri needs MLflow: pip install 'fedops[mlflow]'"
            ) from exc
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
        previous = self.client.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'")
        if previous:
            self.run_id = previous[0].info.run_id
        else:
            run = self.client.create_run(
                exp_id, run_name=f"fedops-{run_id}", tags={RUN_TAG: run_id}
            )
            self.run_id = run.info.run_id
            self.client.log_batch(
                self.run_id,
                params=[Param(k, str(v)[:500]) for k, v in sorted(params.items())][:100],
            )

    def observe_round(self, record: RoundRecord) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, record.server_round)
            for key, value in round_values(record).items()
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))
