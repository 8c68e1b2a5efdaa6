"""A 40 MB model crosses the real gRPC path (in-process server, real agent) intact.

The per-message limit is 16 MiB, so this only passes if chunking works both
ways: the download to the agent and the upload of its trained model.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fedops.client.agent import Agent
from fedops.coordinator.grpc_server import build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.core.params import digest
from fedops.core.strategies import FedAvg
from fedops.core.train_settings import TrainPlan
from fedops.core.training import TrainConfig, get_params
from fedops.runtime.audit.log_file import AuditLog
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.settings import ClientConfig
from fedops.runtime.store import RunStore
from fedops.tasks.contract import Task
from fedops.tasks.site import Site

pytestmark = pytest.mark.slow  # real gRPC servers or processes: the slow lane


def _big_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 2500), torch.nn.ReLU(), torch.nn.Linear(2500, 4000)
    )  # ~10M float32 = 40 MB


def _data(site: int, num_sites: int):
    rng = np.random.default_rng(site)
    x = rng.normal(size=(16, 8)).astype(np.float32)
    y = rng.integers(0, 4000, size=16)
    return (x, y), (x, y)


def test_forty_megabyte_model_round_trip(tmp_path: Path):
    store = RunStore(tmp_path / "run")
    audit = AuditLog.open(tmp_path / "run", "coordinator", fsync=False)  # heads ride on tasks
    transport = GrpcTransport(
        run_id="big",
        on_rejection=store.record_rejection,
        audit=audit.record,
        audit_head=lambda: audit.head,
    )
    server = build_server(transport, max_workers=8)
    port = server.add_insecure_port("127.0.0.1:0")  # the kernel's pick, at bind time
    assert port != 0
    server.start()

    task = Task(name="big", build_model=_big_model, load_data=_data)
    site = Site(task, site=0, num_sites=1, train_config=TrainConfig(epochs=1, batch_size=16))
    cfg = ClientConfig(
        coordinator=f"127.0.0.1:{port}",
        task="big",
        site=0,
        num_sites=1,
        run_dir=tmp_path / "site0",
        max_retries=5,
        poll_wait_s=1.0,
    )
    agent = Agent(cfg, site)
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(agent.run()), daemon=True)
    thread.start()
    try:
        initial = get_params(_big_model())
        assert sum(a.nbytes for a in initial.values()) > 39_000_000
        store.save_round(0, initial, {})
        driver = RoundDriver(
            transport=transport,
            strategy=FedAvg(),
            config=DriverConfig(
                rounds=1,
                min_clients=1,
                round_timeout_s=120,
                join_timeout_s=60,
                train=TrainPlan(base=site.train_config.settings()),  # the run's, with each task
            ),
            store=store,
        )
        final = driver.run(initial, start_round=1)
    finally:
        transport.close(grace_s=10)
        thread.join(timeout=30)
        server.stop(grace=1).wait(5)
    assert exit_codes == [0]
    assert digest(final) != digest(initial)
    entries = [json.loads(line) for line in (tmp_path / "site0" / "client.jsonl").open()]
    received = next(
        e for e in entries if e.get("event") == "model" and e["kind"] == "TASK_KIND_FIT"
    )
    pushed = next(e for e in entries if e.get("event") == "pushed" and e["kind"] == "TASK_KIND_FIT")
    assert received["model_digest"] == digest(initial)  # the download arrived bit-exact
    assert pushed["model_digest"] == digest(final)  # one client: FedAvg returns its upload
    assert store.rejections() == []
    assert store.round_metrics()[0]["num_clients"] == 1
    store.close()
