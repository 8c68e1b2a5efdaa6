"""Every workload on the batched (default) backend, with the numbers of the sequential one.

Monitoring: the batched backend's reports (bins, counts, drift, fairness groups) equal
the sites' for the same model, on digits, on a task with a sensitive-group column, with
a ``sensitive_groups()`` function, and for a task whose data changes per round; whole
scenario runs raise the same alerts. Data: TensorDatasets and map-style Datasets train
the model the same (X, y) arrays train. A user ``train()`` falls back, in one log line.
"""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from grouped_tasks import grouped_digits
from procs import final_model

from fedops.config.hydra_app import SCENARIO_DIR, compose_settings
from fedops.core.monitoring.profile import ReportLimits, SiteReport
from fedops.core.params import Params
from fedops.core.rounds import Phase, ResultArrived
from fedops.core.training import TrainConfig
from fedops.data.build import from_task
from fedops.runtime.round_monitor import MonitorSettings, monitor_spec
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.transport import Instruction
from fedops.simulation.engine import initial_model, run_simulation
from fedops.simulation.federation import round_loader
from fedops.simulation.inmemory import InMemoryTransport
from fedops.simulation.vectorized_backend import VectorizedTransport
from fedops.simulation.worker import ClientWorker, WorkerSpec, encode
from fedops.tasks import Task, load_task
from fedops.tasks.site import Site, initial_params

HOSPITAL = str(SCENARIO_DIR / "tasks" / "hospital_shift.py")
BANK = str(SCENARIO_DIR / "tasks" / "bank_credit.py")
TRAIN = TrainConfig(epochs=1, batch_size=16, lr=0.1)


def _reports(transport: Any, server_round: int, params: Params, spec: Any) -> dict[str, Any]:
    nodes = transport.available_nodes()
    transport.dispatch(
        server_round, nodes, Instruction(phase=Phase.EVALUATE, params=params, monitor=spec)
    )
    out: dict[str, Any] = {}
    while (event := transport.next_event(0.0)) is not None:
        assert isinstance(event, ResultArrived), event
        out[event.node_id] = event.result.report
    return out


def _same_report(got: SiteReport | None, want: SiteReport | None, where: str) -> None:
    if want is None:
        assert got is None, where
        return
    assert got is not None, where
    for window in ("reference", "current"):
        g, w = getattr(got, window), getattr(want, window)
        assert list(g) == list(w), where  # the same bins, in the same order
        for name in w:
            np.testing.assert_array_equal(g[name], w[name], err_msg=f"{where} {window} {name}")
    assert got.drift == want.drift, where  # statistics and alerts
    assert got.fairness == want.fairness, where


@pytest.mark.parametrize(
    ("task_name", "server_round"),
    [("digits", 1), ("bank", 1), ("grouped", 1), ("hospital", 5)],
)
def test_batched_reports_equal_the_sites(task_name: str, server_round: int):
    task = {
        "digits": lambda: load_task("digits"),
        "bank": lambda: load_task(BANK),
        "grouped": grouped_digits,
        "hospital": lambda: load_task(HOSPITAL),
    }[task_name]()
    n = 20 if task_name == "hospital" else 5
    params = initial_params(task, 0)
    spec = monitor_spec(MonitorSettings(bins=10), task, params)
    limits = ReportLimits(min_count=2)
    sites = [
        Site(task, site=i, num_sites=n, train_config=TRAIN, report_limits=limits) for i in range(n)
    ]
    first = 0 if round_loader(task, n) is not None else None
    batched = VectorizedTransport(
        from_task(task, n, first),
        initial_model(task, 0),
        TRAIN,
        reload=round_loader(task, n),
        groups_of=task.sensitive_groups,
        report_limits=limits,
    )
    want = _reports(InMemoryTransport(sites), server_round, params, spec)
    got = _reports(batched, server_round, params, spec)
    assert set(got) == set(want) and len(want) == n
    for node in want:
        _same_report(got[node], want[node], f"{task_name} {node}")
    if task_name in ("bank", "grouped"):
        assert any(r.fairness for r in want.values()), "a group column to compare"
    if task_name == "hospital":  # round 5: the shifted hospitals drift from their round 0
        assert any(d.alert for d in want["site-3"].drift)
        assert not any(d.alert for d in want["site-0"].drift)


def test_a_process_worker_reports_as_a_site():
    """The process and Ray backends' workers compute the report beside the site's data."""
    cfg = SimulateConfig(task=BANK, simulation=SimulationConfig(backend="process", num_clients=5))
    worker = ClientWorker(WorkerSpec.of(cfg).to_json())
    task = load_task(BANK)
    params = initial_params(task, 0)
    spec = monitor_spec(MonitorSettings(), task, params)
    *_, report = worker.run(("evaluate", 2, 1, encode(params), {}, None, spec))
    site = Site(task, site=2, num_sites=5, train_config=TrainConfig())
    _same_report(report, site.report(params, spec), "worker")


def _scenario(scenario: str, backend: str, run_dir: Path) -> list[dict[str, Any]]:
    cfg = compose_settings(f"+scenario={scenario}", f"simulation={backend}", "rounds=5")
    cfg.client.epochs = 1
    summary = run_simulation(validate(cfg), run_dir)
    assert summary["status"] == "completed" and summary["backend"] == backend
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("scenario", ["hospital_drift", "bank_fairness"])
def test_scenarios_raise_the_same_alerts_on_both_backends(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(SCENARIO_DIR.parent)
    seq = _scenario(scenario, "sequential", tmp_path / "seq")
    vec = _scenario(scenario, "vectorized", tmp_path / "vec")
    for s, v in zip(seq, vec, strict=True):
        assert v["drift_alerts"] == s["drift_alerts"], s["round"]
        assert [a["metric"] for a in v["fairness_alerts"]] == [
            a["metric"] for a in s["fairness_alerts"]
        ], s["round"]
        for name, value in s["fairness"].items():
            assert v["fairness"][name] == pytest.approx(value, abs=1e-6), (s["round"], name)
        for site, drift in s["drift"].items():
            ours = v["drift"][site]
            assert ours["by_feature"] == pytest.approx(drift["by_feature"], abs=1e-9), site
            for stat in ("psi", "js", "ks"):
                assert ours[stat] == pytest.approx(drift[stat], abs=1e-9), (s["round"], site)
    if scenario == "hospital_drift":  # the data changed at round 4, on the default backend too
        assert not vec[2]["drift_alerts"] and vec[3]["drift_alerts"]


TASK_FILE = """
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

FORM = "{form}"


def build_model():
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def _arrays(site, n):
    rng = np.random.default_rng([11, site])
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)


class Rows(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), torch.tensor(self.y[i])


def _form(x, y):
    if FORM == "tensors":
        return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    if FORM == "items":
        return Rows(x, y)
    return x, y


def load_data(site, num_sites):
    x, y = _arrays(site, 30 + 7 * site)
    return _form(x[:-8], y[:-8]), _form(x[-8:], y[-8:])
"""


def _run_task(tmp_path: Path, name: str, body: str, backend: str = "vectorized") -> dict[str, Any]:
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    cfg = SimulateConfig(rounds=2, seed=4, task=str(path))
    cfg.simulation = SimulationConfig(backend=backend, num_clients=4)
    cfg.client.epochs, cfg.client.batch_size = 2, 8
    return run_simulation(validate(cfg), tmp_path / f"run-{name}-{backend}")


def test_datasets_train_the_same_model_as_arrays_on_the_default_backend(tmp_path: Path):
    models = {}
    for form in ("arrays", "tensors", "items"):
        summary = _run_task(tmp_path, form, TASK_FILE.format(form=form))
        assert summary["status"] == "completed" and summary["backend"] == "vectorized"
        models[form] = final_model(tmp_path / f"run-{form}-vectorized")
    _run_task(tmp_path, "arrays", TASK_FILE.format(form="arrays"), backend="sequential")
    reference = final_model(tmp_path / "run-arrays-sequential")
    for form, params in models.items():
        for name, value in params.items():
            np.testing.assert_array_equal(value, models["arrays"][name], err_msg=form)
            np.testing.assert_allclose(value, reference[name], rtol=1e-4, atol=1e-5)


def test_a_site_trains_a_dataset_as_the_same_arrays():
    """Deployment too: a Dataset shuffles in the order the (X, y) arrays do."""
    ns: dict[str, Any] = {}
    exec(compile(TASK_FILE.format(form="tensors"), "task", "exec"), ns)
    results = []
    for form in ("arrays", "tensors", "items"):
        ns["FORM"] = form
        task = Task(name=form, build_model=ns["build_model"], load_data=ns["load_data"])
        site = Site(task, site=1, num_sites=4, train_config=TrainConfig(batch_size=8, lr=0.1))
        results.append(site.fit(initial_params(task, 0), 1, {"seed": 3})[0])
    for other in results[1:]:
        for name, value in results[0].items():
            np.testing.assert_array_equal(other[name], value)


ROUND_TASK = TASK_FILE.format(form="arrays").replace(
    "def load_data(site, num_sites):\n    x, y = _arrays(site, 30 + 7 * site)",
    "SEEN = []\n\n\ndef load_data(site, num_sites, round):\n"
    "    SEEN.append(round)\n    x, y = _arrays(site + 100 * round, 30 + 7 * site)",
)


def test_per_round_data_runs_on_the_default_backend_and_changes(tmp_path: Path):
    summary = _run_task(tmp_path, "rounds", ROUND_TASK)
    assert summary["status"] == "completed" and summary["backend"] == "vectorized"
    _run_task(tmp_path, "rounds", ROUND_TASK, backend="sequential")
    vec = final_model(tmp_path / "run-rounds-vectorized")
    seq = final_model(tmp_path / "run-rounds-sequential")
    for name in seq:
        np.testing.assert_allclose(vec[name], seq[name], rtol=1e-4, atol=1e-5)
    task = load_task(str(tmp_path / "rounds.py"))
    reload = round_loader(task, 4)
    assert reload is not None
    np.testing.assert_raises(
        AssertionError, np.testing.assert_array_equal, reload(1).train_x, reload(2).train_x
    )


def test_a_user_train_falls_back_and_says_so_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    body = TASK_FILE.format(form="arrays") + textwrap.dedent(
        """
        def train(model, data, cfg):
            from fedops.core import training

            return training.train(model, data, cfg)
        """
    )
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        summary = _run_task(tmp_path, "own_train", body)
    assert summary["status"] == "completed" and summary["backend"] == "sequential"
    said = [r for r in caplog.records if "not the batched one" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert said[0].levelno == logging.WARNING
    assert "sequential" in said[0].getMessage() and "train()" in said[0].getMessage()
