"""A strategy's per-client fit configs cross real gRPC to each site, and its own fit
metrics land in the round's metrics line (in-process server, real agents on loopback)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fedops.client.agent import Agent
from fedops.coordinator.grpc_server import build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.core.params import Params
from fedops.core.results import FitResult, StageResult
from fedops.core.strategies import ClientInfo, FedProx
from fedops.core.train_settings import TrainPlan
from fedops.core.training import TrainConfig, get_params
from fedops.runtime.audit.log_file import AuditLog
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.settings import ClientConfig
from fedops.runtime.store import RunStore
from fedops.tasks.contract import Task
from fedops.tasks.site import Site

pytestmark = pytest.mark.slow  # real gRPC servers: the slow lane


@dataclass(frozen=True)
class PerSite(FedProx):
    """site-1 gets its own μ and a key of the strategy's; fit metrics as a count."""

    def client_fit_config(
        self, server_round: int, client: ClientInfo, base: Mapping[str, float]
    ) -> dict[str, float]:
        if client.site == "site-1":
            return {"proximal_mu": 0.5, "group": 2.0}
        return {}

    def aggregate_fit_metrics(
        self, server_round: int, results: Sequence[FitResult | StageResult]
    ) -> dict[str, float]:
        return {"fit_reports": float(len(results))}


class RecordingSite(Site):
    """Keeps the config of every fit task the agent hands it."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.configs: list[dict[str, float]] = []

    def fit(self, params: Params, server_round: int, config: Mapping[str, float], **kw):  # type: ignore[no-untyped-def]
        self.configs.append(dict(config))
        return super().fit(params, server_round, config, **kw)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def _data(site: int, num_sites: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(site)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=16)
    return (x, y), (x, y)


def test_each_site_gets_its_own_config_over_grpc(tmp_path: Path):
    store = RunStore(tmp_path / "run")
    audit = AuditLog.open(tmp_path / "run", "coordinator", fsync=False)  # heads ride on tasks
    transport = GrpcTransport(
        run_id="hooks",
        on_rejection=store.record_rejection,
        audit=audit.record,
        audit_head=lambda: audit.head,
    )
    server = build_server(transport, max_workers=8)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    task = Task(name="tiny", build_model=_model, load_data=_data)
    train = TrainConfig(epochs=1, batch_size=8, lr=0.1)
    sites = [RecordingSite(task, site=i, num_sites=2, train_config=train) for i in range(2)]
    threads = []
    for site in sites:
        cfg = ClientConfig(
            coordinator=f"127.0.0.1:{port}",
            task="tiny",
            site=site.site,
            num_sites=2,
            run_dir=tmp_path / f"site{site.site}",
            max_retries=5,
            poll_wait_s=1.0,
        )
        agent = Agent(cfg, site)
        threads.append(threading.Thread(target=agent.run, daemon=True))
        threads[-1].start()
    try:
        driver = RoundDriver(
            transport=transport,
            strategy=PerSite(mu=0.01),
            config=DriverConfig(
                rounds=1,
                min_clients=2,
                seed=5,
                round_timeout_s=60,
                join_timeout_s=60,
                train=TrainPlan(base=train.settings()),
            ),
            store=store,
            site_names=transport.registry.site_name,
        )
        initial = get_params(_model())
        store.save_round(0, initial, {})
        driver.run(initial, start_round=1)
    finally:
        transport.close(grace_s=10)
        for thread in threads:
            thread.join(timeout=30)
        server.stop(grace=1).wait(5)
    assert sites[0].configs == [{"proximal_mu": 0.01, "seed": 5.0}]
    assert sites[1].configs == [{"proximal_mu": 0.5, "seed": 5.0, "group": 2.0}]
    line = store.round_metrics()[0]
    assert line["fit_reports"] == 2.0 and line["num_clients"] == 2
    assert store.rejections() == []
    store.close()
