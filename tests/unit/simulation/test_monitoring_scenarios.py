"""The monitoring scenario presets, run in-process: drift alerts, pooled fairness, exclusion.

``+scenario=hospital_drift`` (20 hospitals; hospitals 3 and 11 change scanner
at round 4) and ``+scenario=bank_fairness`` (5 banks, group ids on the test
split) are composed as ``fedops simulate`` composes them and run through
:func:`fedops.simulation.engine.run_simulation`, with fewer rounds and local
epochs than the presets to stay fast.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
)
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score

from fedops.config.hydra_app import SCENARIO_DIR, compose_settings
from fedops.core.monitoring.fairness import FAIRNESS_METRICS
from fedops.runtime.settings import ConfigError
from fedops.runtime.simulate_settings import SimulateConfig, validate
from fedops.runtime.store import RunStore
from fedops.simulation.engine import run_simulation

HOSPITAL_TASK = SCENARIO_DIR / "tasks" / "hospital_shift.py"
BANK_TASK = SCENARIO_DIR / "tasks" / "bank_credit.py"


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hospital = _module(HOSPITAL_TASK, "_test_hospital_shift")
bank = _module(BANK_TASK, "_test_bank_credit")
SHIFTED = {f"site-{i}" for i in hospital.SHIFTED_SITES}
SHIFT_ROUND = hospital.SHIFT_ROUND


@pytest.fixture(autouse=True)
def _from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # the presets name their task files relative to the repository root
    monkeypatch.chdir(SCENARIO_DIR.parent)


def _compose(scenario: str, *overrides: str) -> SimulateConfig:
    return compose_settings(f"+scenario={scenario}", *overrides)


def _run(cfg: SimulateConfig, run_dir: Path) -> list[dict[str, Any]]:
    summary = run_simulation(validate(cfg), run_dir)
    assert summary["status"] == "completed", summary
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _alerted_sites(line: dict[str, Any]) -> set[str]:
    return {a["site"] for a in line["drift_alerts"]}


# -- (a) hospital drift --------------------------------------------------------------------------


def test_hospital_drift_alerts_fire_for_the_shifted_sites_from_the_shift_round(tmp_path: Path):
    assert SHIFT_ROUND == 4 and {"site-3", "site-11"} == SHIFTED
    cfg = _compose("hospital_drift", "rounds=5", "client.epochs=1")
    assert cfg.monitoring.name == "default" and cfg.simulation.backend == "sequential"
    assert cfg.simulation.num_clients == 20
    assert cfg.task == str(SCENARIO_DIR / "tasks" / "hospital_shift.py")  # beside the preset
    metrics = _run(cfg, tmp_path / "run")
    assert [m["round"] for m in metrics] == [1, 2, 3, 4, 5]
    for m in metrics:
        assert set(m["sites"]) == {f"site-{i}" for i in range(20)}, m["round"]
        assert set(m["drift"]) == set(m["sites"])
        assert "drift_pooled" in m and "fairness" in m  # site_accuracy_gap at least
        if m["round"] < SHIFT_ROUND:
            assert m["drift_alerts"] == [], (m["round"], m["drift_alerts"])
            assert all(d["psi"] < 0.25 and d["js"] <= 0.1 for d in m["drift"].values())
        else:
            assert _alerted_sites(m) == SHIFTED, (m["round"], _alerted_sites(m))
            for site in SHIFTED:
                assert m["drift"][site]["psi"] > 0.25
            for a in m["drift_alerts"]:
                assert a["statistic"] in ("psi", "js") and a["level"] == "significant", a
            quiet = set(m["drift"]) - SHIFTED
            assert all(m["drift"][s]["psi"] < 0.25 for s in quiet)
    assert metrics[-1]["drift_pooled"]["psi"] > 0


# -- (b) bank fairness ---------------------------------------------------------------------------


def _pooled_test_split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, gs = [], [], []
    for site in range(5):
        _, test = bank.load_data(site, 5)
        x, y, g = (t.numpy() for t in test.tensors)
        xs.append(x)
        ys.append(y)
        gs.append(g)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def test_bank_fairness_equals_fairlearn_on_the_pooled_test_data(tmp_path: Path):
    # min_count=1: no small cell left out, so the pooled counts are the raw data's exactly
    cfg = _compose("bank_fairness", "rounds=3", "client.epochs=1", "monitoring.min_count=1")
    assert cfg.simulation.num_clients == 5 and cfg.monitoring.positive_label == 1
    run_dir = tmp_path / "run"
    metrics = _run(cfg, run_dir)
    assert [m["round"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert set(m["fairness"]) == {*FAIRNESS_METRICS, "site_accuracy_gap"}, m["round"]
        assert isinstance(m["fairness_alerts"], list)
        assert m["drift_alerts"] == []  # the banks' data does not change
        accuracies = [s["accuracy"] for s in m["sites"].values()]
        assert m["fairness"]["site_accuracy_gap"] == pytest.approx(
            max(accuracies) - min(accuracies), abs=1e-12
        )

    # the final model, through the model file contract: build_model()'s own parameter names
    model = bank.build_model()
    state = load_file(str(run_dir / "model.safetensors"))
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    x, y, groups = _pooled_test_split()
    assert len(y) == sum(n - int(0.8 * n) for n in bank.BANK_SIZES)
    with torch.no_grad():
        y_pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    sensitive = groups.tolist()
    theirs = {
        "demographic_parity_difference": demographic_parity_difference(
            y, y_pred, sensitive_features=sensitive
        ),
        "demographic_parity_ratio": demographic_parity_ratio(
            y, y_pred, sensitive_features=sensitive
        ),
        "equalized_odds_difference": equalized_odds_difference(
            y, y_pred, sensitive_features=sensitive
        ),
        "equal_opportunity_difference": equal_opportunity_difference(
            y, y_pred, sensitive_features=sensitive
        ),
        "group_accuracy_gap": MetricFrame(
            metrics=accuracy_score, y_true=y, y_pred=y_pred, sensitive_features=sensitive
        ).difference(),
    }
    ours = metrics[-1]["fairness"]
    assert 0 < y_pred.mean() < 1  # a model that separates: the comparison means something
    for name, value in theirs.items():
        assert not math.isnan(value), name
        assert ours[name] == pytest.approx(float(value), abs=1e-9), name


# -- (c) every backend monitors -----------------------------------------------------------------


def test_monitoring_on_the_batched_backend_is_accepted():
    """Reports are counted for all clients together there (test_batched_workloads.py)."""
    cfg = validate(_compose("hospital_drift", "simulation=vectorized"))
    assert cfg.simulation.backend == "vectorized" and cfg.monitoring.name == "default"


# -- (d) action=exclude --------------------------------------------------------------------------


def test_exclude_stops_flagged_sites_from_training(tmp_path: Path):
    cfg = _compose("hospital_drift", "rounds=6", "client.epochs=1", "monitoring.action=exclude")
    run_dir = tmp_path / "run"
    metrics = _run(cfg, run_dir)
    by_round = {m["round"]: m for m in metrics}
    assert _alerted_sites(by_round[SHIFT_ROUND]) == SHIFTED
    everyone = {f"site-{i}" for i in range(20)}
    store = RunStore(run_dir)
    try:
        for r in range(1, 7):
            rows = store.participants(r)
            fit = {p.site for p in rows if p.phase == "fit" and p.outcome == "ok"}
            evaluated = {p.site for p in rows if p.phase == "evaluate"}
            if r <= SHIFT_ROUND:  # flagged at round 4's evaluation, after its fit
                assert fit == everyone, r
            else:
                assert fit == everyone - SHIFTED, (r, sorted(fit))
                assert not SHIFTED & evaluated
                assert by_round[r]["num_clients"] == 18
                assert by_round[r]["drift_alerts"] == []
    finally:
        store.close()


def test_a_positive_label_that_is_no_class_of_the_task_is_a_config_error(tmp_path: Path):
    cfg = _compose("bank_fairness", "rounds=1", "monitoring.positive_label=5")
    with pytest.raises(ConfigError) as caught:
        run_simulation(validate(cfg), tmp_path / "run")
    assert caught.value.key == "monitoring.positive_label"
    assert "not a class of a 2-class task" in caught.value.message
