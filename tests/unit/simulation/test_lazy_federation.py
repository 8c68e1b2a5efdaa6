"""``simulation.data=lazy``: the batched backend loads only the clients each round uses, and
the run is the in-memory run (the same model up to float summation order, the same
metrics, drift and fairness reports), with a static task and one whose data changes per
round, monitoring on and off, a sample of the clients per round."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from procs import final_model

from fedops.core.rounds import Phase, ResultArrived
from fedops.data import FederatedData
from fedops.runtime.rules import ConfigError
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.transport import Instruction
from fedops.simulation import lazy_federation
from fedops.simulation.engine import make_transport, run_simulation
from fedops.simulation.lazy_federation import (
    LazyFederation,
    LazyVectorizedTransport,
    open_federation,
)
from fedops.tasks.site import initial_params

MODEL = """
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

LOG = {log!r}


def build_model():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def load_server_data():  # input bins for drift monitoring
    x = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    return x, (x[:, :3].mean(1) > 0).astype(np.int64)


class Rows(Dataset):  # map-style, item by item
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), int(self.y[i])


def rows(site, shift):
    with open(LOG, "a") as log:  # every call, as "site,round"
        log.write(f"{{site}},{{shift}}\\n")
    x = np.random.default_rng([9, site]).normal(size=(10 + 3 * (site % 5), 6))
    x = (x + 0.4 * shift * (x > 0)).astype(np.float32)  # drifts with the round
    return x, (x[:, :3].mean(1) > 0.2 * shift).astype(np.int64)
"""

STATIC = """
def load_data(site, num_sites):
    x, y = rows(site, -1)
    return Rows(x[:-4], y[:-4]), (x[-4:], y[-4:])
"""

PER_ROUND = """
def load_data(site, num_sites, round):
    x, y = rows(site, round)
    return (x[:-4], y[:-4]), (x[-4:], y[-4:], (x[-4:, 5] > 0).astype(np.int64))
"""


def _task(tmp_path: Path, kind: str, name: str) -> tuple[Path, Path]:
    log = tmp_path / f"{name}.log"
    path = tmp_path / f"{name}.py"
    path.write_text(MODEL.format(log=str(log)) + (PER_ROUND if kind == "per_round" else STATIC))
    return path, log


def _cfg(task: Path, data: str, *, clients: int = 9, per_round: int = 4) -> SimulateConfig:
    cfg = SimulateConfig(rounds=3, seed=5, task=str(task))
    cfg.simulation = SimulationConfig(
        backend="vectorized", num_clients=clients, clients_per_round=per_round, data=data
    )
    cfg.client.epochs, cfg.client.batch_size, cfg.client.lr = 2, 4, 0.1
    return cfg


def _calls(log: Path) -> list[tuple[int, int]]:
    lines = log.read_text().split()
    return [(int(a), int(b)) for a, b in (line.split(",") for line in lines)]


def _same(lazy: Any, memory: Any, where: str = "") -> None:
    """Equal JSON, floats within summation-order rounding, timings aside."""
    if isinstance(memory, dict):
        assert lazy.keys() == memory.keys(), where
        for key in memory:
            if not key.endswith("_s"):
                _same(lazy[key], memory[key], f"{where}.{key}")
    elif isinstance(memory, list):
        assert len(lazy) == len(memory), where
        for i, (a, b) in enumerate(zip(lazy, memory, strict=True)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(memory, float):
        assert lazy == pytest.approx(memory, rel=1e-5, abs=1e-7), where
    else:
        assert lazy == memory, where


@pytest.mark.parametrize("monitoring", ["default", "none"])
@pytest.mark.parametrize("kind", ["static", "per_round"])
def test_a_lazy_run_is_the_in_memory_run(
    tmp_path: Path, kind: str, monitoring: str, caplog: pytest.LogCaptureFixture
) -> None:
    runs: dict[str, Path] = {}
    logs: dict[str, Path] = {}
    for data in ("memory", "lazy"):
        task, logs[data] = _task(tmp_path, kind, f"task_{data}")
        cfg = _cfg(task, data)
        cfg.monitoring.name = monitoring
        runs[data] = tmp_path / f"run-{data}"
        with caplog.at_level(logging.INFO, logger="fedops.simulate"):
            assert run_simulation(validate(cfg), runs[data])["status"] == "completed"
    assert "simulation.data=lazy: loading the 4 clients of each round" in caplog.text
    lazy, memory = final_model(runs["lazy"]), final_model(runs["memory"])
    assert lazy.keys() == memory.keys()
    for name in memory:
        np.testing.assert_allclose(lazy[name], memory[name], rtol=1e-5, atol=1e-6, err_msg=name)
    metrics = {
        data: [json.loads(line) for line in (runs[data] / "metrics.jsonl").read_text().split("\n")
               if line]
        for data in runs
    }  # fmt: skip
    assert len(metrics["lazy"]) == 3
    _same(metrics["lazy"], metrics["memory"])
    if monitoring == "default":  # the reports were there to compare (drift against round 0)
        assert all(row["drift"] for row in metrics["lazy"])
        if kind == "per_round":
            assert any(s["psi"] > 0 for row in metrics["lazy"] for s in row["drift"].values())
    cohorts = _cohorts(runs["lazy"])
    assert cohorts == _cohorts(runs["memory"])
    assert all(len(c) == 4 for c in cohorts) and len(set(map(frozenset, cohorts))) > 1
    _check_loads(_calls(logs["lazy"]), cohorts, kind, monitored=monitoring == "default")
    memory_loads = Counter(site for site, _ in _calls(logs["memory"]))
    assert set(memory_loads) == set(range(9))  # the in-memory run loads everyone


def test_a_federation_that_fits_reads_each_site_once(tmp_path: Path) -> None:
    """``auto`` reads site 0 to size the federation; the in-memory build reuses it."""
    task, log = _task(tmp_path, "static", "task_auto")
    assert run_simulation(validate(_cfg(task, "auto")), tmp_path / "run")["status"] == "completed"
    assert Counter(site for site, _ in _calls(log)) == Counter(range(9))


def _cohorts(run_dir: Path) -> list[set[int]]:
    """Each round's fitting clients, by index, from the run's store."""
    from fedops.runtime.store import RunStore

    store = RunStore(run_dir)
    try:
        return [
            {int(p.node_id.split("-")[1]) for p in store.participants(r) if p.phase == "fit"}
            for r in (1, 2, 3)
        ]
    finally:
        store.close()


def _check_loads(
    calls: list[tuple[int, int]], cohorts: list[set[int]], kind: str, *, monitored: bool
) -> None:
    """Site 0 at the start, then only each round's clients: a static task's when newly
    picked, a round-aware task's every round (and, monitored, their round-0 reference
    when not held from the round before)."""
    assert calls[0] == (0, -1 if kind == "static" else 0)
    if kind == "static":
        held, expected = {0}, [0]
        for cohort in cohorts:
            expected += sorted(cohort - held)
            held = cohort
        assert sorted(site for site, _ in calls) == sorted(expected)
        return
    for r, cohort in enumerate(cohorts, start=1):
        loaded = [site for site, got in calls if got == r]
        assert sorted(loaded) == sorted(cohort), r  # each once, nobody else
    referenced, reference_loads = {0}, [0]
    for cohort in cohorts if monitored else []:
        reference_loads += sorted(cohort - referenced)
        referenced = cohort
    assert sorted(site for site, got in calls if got == 0) == sorted(reference_loads)


def test_two_thousand_clients_hold_only_each_rounds_twenty(tmp_path: Path) -> None:
    """The transport's arrays hold the dispatched clients' rows and nobody else's; node
    ids stay global; each round loads its 20 clients once (evaluation reuses them)."""
    task_path, log = _task(tmp_path, "static", "big")
    cfg = validate(_cfg(task_path, "lazy", clients=2000, per_round=20))
    task, federation = open_federation(cfg)
    assert isinstance(federation, LazyFederation)
    transport = make_transport(cfg, task, federation)
    assert isinstance(transport, LazyVectorizedTransport)
    params = initial_params(task, cfg.seed)
    rng = np.random.default_rng(0)
    held, loads = {0}, 1  # site 0, read at the start to size the federation
    try:
        for server_round in (1, 2, 3):
            cohort = sorted(rng.choice(2000, size=20, replace=False).tolist())
            nodes = [f"site-{c}" for c in cohort]
            before = len(_calls(log))
            for phase in (Phase.FIT, Phase.EVALUATE):
                transport.dispatch(server_round, nodes, Instruction(phase=phase, params=params))
                events = [transport.next_event(0.0) for _ in nodes]
                assert transport.next_event(0.0) is None
                assert all(isinstance(e, ResultArrived) for e in events)
                assert sorted(e.node_id for e in events if e is not None) == sorted(nodes)
            loaded = [site for site, _ in _calls(log)[before:]]
            assert sorted(loaded) == sorted(set(cohort) - held)  # nobody else, nobody twice
            held, loads = set(cohort), loads + len(loaded)
            sizes = np.diff(transport.data.train_offsets)
            assert transport.data.num_clients == 2000
            assert np.flatnonzero(sizes).tolist() == cohort
    finally:
        transport.close()
    assert transport.loads == loads == len(_calls(log)) > 3 * 15


def test_auto_goes_lazy_only_past_half_the_memory_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    task_path, log = _task(tmp_path, "per_round", "auto")
    cfg = validate(_cfg(task_path, "auto", clients=1000, per_round=10))
    task = lazy_federation.load_task(str(task_path))
    sampled = [lazy_federation.load_site(task, s, 1000, 0) for s in (0, 333, 666, 999)]
    # their mean times the sites; reference and round window both held in memory
    need = sum(rows.nbytes for rows in sampled) * 1000 // 4 * 2
    monkeypatch.setattr(lazy_federation, "available_memory", lambda device: 2 * need - 1)
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        _, federation = open_federation(cfg)
    assert isinstance(federation, LazyFederation)
    assert "> half of the" in caplog.text and "loading the 10 clients of each round" in caplog.text
    assert "(from mean of 4 sites times 1,000)" in caplog.text
    assert federation.round_aware
    loads = len(_calls(log))
    monkeypatch.setattr(lazy_federation, "available_memory", lambda device: 2 * need)
    _, data = open_federation(cfg)
    assert isinstance(data, FederatedData) and data.num_clients == 1000
    assert len(_calls(log)) - loads == 1000  # 4 sites measured and kept, then the others
    memory = validate(_cfg(task_path, "memory", clients=1000, per_round=10))
    monkeypatch.setattr(lazy_federation, "available_memory", lambda device: 1)
    assert isinstance(open_federation(memory)[1], FederatedData)  # memory: never lazy


BROKEN = """
def load_data(site, num_sites):
    x, y = rows(site, -1)
    if site == 6:
        y = y[:-1]  # one label short
    return (x[:-4], y[:-4]), (x[-4:], y[-4:])
"""


def test_a_malformed_site_fails_as_in_memory(tmp_path: Path) -> None:
    """The same error, naming the task and the site, when a round first loads it."""
    path = tmp_path / "broken.py"
    path.write_text(MODEL.format(log=str(tmp_path / "b.log")) + BROKEN)
    errors = {}
    for data in ("memory", "lazy"):
        with pytest.raises(ValueError) as caught:
            run_simulation(validate(_cfg(path, data, per_round=9)), tmp_path / f"run-{data}")
        errors[data] = str(caught.value)
    assert errors["lazy"] == errors["memory"]
    assert "broken.py" in errors["lazy"] and "load_data(site=6) train" in errors["lazy"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": "disk"}, "must be one of"),
        ({"data": "lazy", "backend": "sequential"}, "simulation=vectorized only"),
        ({"data": "memory", "backend": "process"}, "simulation=vectorized only"),
    ],
)
def test_simulation_data_is_checked_by_its_key(change: dict[str, str], message: str) -> None:
    cfg = SimulateConfig(task="digits")
    for key, value in change.items():
        setattr(cfg.simulation, key, value)
    with pytest.raises(ConfigError, match=message) as caught:
        validate(cfg)
    assert caught.value.key == "simulation.data"


def test_lazy_needs_a_task() -> None:
    cfg = SimulateConfig()
    cfg.simulation.data = "lazy"
    with pytest.raises(ConfigError, match="built-in dataset") as caught:
        validate(cfg)
    assert caught.value.key == "simulation.data"
    cfg.simulation.data = "memory"
    validate(cfg)  # memory and auto: what a built-in dataset does anyway


@pytest.mark.usefixtures("quiet_warnings")
def test_local_dp_sites_keep_their_own_ledgers_when_loaded_lazily(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site's DP ledger is its page of the whole federation's book, as in memory."""
    from types import SimpleNamespace

    from fedops.simulation import local_dp_sites
    from fedops.simulation.engine import site_ledger_book

    task, _ = _task(tmp_path, "static", "dp")

    def run(data: str) -> tuple[dict[str, Any], list[Any]]:
        drawn = iter(range(10_000, 20_000))  # the same "secret" noise seeds for both runs
        monkeypatch.setattr(
            local_dp_sites, "secrets", SimpleNamespace(randbits=lambda _: next(drawn))
        )
        cfg = _cfg(task, data)
        cfg.privacy.name, cfg.privacy.noise_multiplier = "local", 1.0
        run_dir = tmp_path / f"dp-{data}"
        assert run_simulation(validate(cfg), run_dir)["status"] == "completed"
        book = site_ledger_book(run_dir)
        return final_model(run_dir), [book.charges(i) for i in range(9)]

    (memory, memory_charges), (lazy, lazy_charges) = run("memory"), run("lazy")
    assert lazy_charges == memory_charges
    assert 0 < sum(map(bool, lazy_charges)) < 9  # a sample per round: some sites unused
    for name in memory:
        np.testing.assert_allclose(lazy[name], memory[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_secure_aggregation_wraps_the_lazy_transport(tmp_path: Path) -> None:
    """SecAgg+ rounds (the virtual clients' side in this process) over clients loaded per
    round end with the in-memory run's model."""
    task, _ = _task(tmp_path, "per_round", "secure")
    models = {}
    for data in ("memory", "lazy"):
        cfg = _cfg(task, data)
        cfg.secagg.name, cfg.secagg.clip = "secaggplus", 4.0
        run_dir = tmp_path / f"secure-{data}"
        assert run_simulation(validate(cfg), run_dir)["status"] == "completed"
        models[data] = final_model(run_dir)
    for name in models["memory"]:  # quantized sums: equal up to float rounding of the inputs
        np.testing.assert_allclose(
            models["lazy"][name], models["memory"][name], rtol=1e-4, atol=1e-5, err_msg=name
        )


def test_available_memory_counts_a_gpu_s_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    host = lazy_federation.available_memory("cpu")
    assert host is not None and host > 0  # /proc/meminfo's MemAvailable
    monkeypatch.setattr(lazy_federation.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(lazy_federation.torch.cuda, "mem_get_info", lambda: (1000, 8000))
    assert lazy_federation.available_memory("cuda") == 1000
    assert lazy_federation.available_memory("auto") == 1000
    assert lazy_federation.available_memory("cpu") == pytest.approx(host, rel=0.5)
