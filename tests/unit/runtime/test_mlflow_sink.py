"""MLflow logging against a real (SQLite-backed) MLflow tracking store."""

from __future__ import annotations

import math

import pytest

from fedops.runtime.driver import RoundRecord
from fedops.runtime.mlflow_sink import MlflowSink, round_values

mlflow = pytest.importorskip("mlflow")  # in the dev extra: CI runs this test


def _record(r: int, accuracy: float) -> RoundRecord:
    return RoundRecord(
        server_round=r,
        metrics={
            "eval_accuracy": accuracy,
            "eval_loss": math.nan,  # not a number worth a chart: left out
            "drift": {"site-0": {"psi": 0.3}},
            "drift_pooled": {"psi": 0.05, "js": 0.01, "ks": 0.02, "psi_feature": "x1"},
            "drift_alerts": [{"site": "site-0"}],
            "fairness": {"demographic_parity_difference": 0.2, "group_accuracy_gap": math.nan},
            "fairness_alerts": [],
        },
    )


def test_round_values_flattens_the_numbers_and_skips_the_rest():
    values = round_values(_record(1, 0.5))
    assert values == {
        "eval_accuracy": 0.5,
        "fairness.demographic_parity_difference": 0.2,
        "drift_pooled.psi": 0.05,
        "drift_pooled.js": 0.01,
        "drift_pooled.ks": 0.02,
        "drift_alerts": 1.0,
        "fairness_alerts": 0.0,
    }


def test_rounds_are_logged_and_a_resumed_run_continues_the_same_mlflow_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = MlflowSink(uri, "exp", "run-abc", {"rounds": 3, "client": "x" * 600})
    first.observe_round(_record(1, 0.5))
    first.observe_round(_record(2, 0.6))
    first.finish("interrupted")
    again = MlflowSink(uri, "exp", "run-abc", {"rounds": 3})
    assert again.run_id == first.run_id
    again.observe_round(_record(3, 0.7))
    again.finish("completed")
    client = mlflow.tracking.MlflowClient(uri)
    history = client.get_metric_history(first.run_id, "eval_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6), (3, 0.7)]
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["rounds"] == "3" and len(run.data.params["client"]) == 500
    other = MlflowSink(uri, "exp", "run-def", {})
    assert other.run_id != first.run_id
