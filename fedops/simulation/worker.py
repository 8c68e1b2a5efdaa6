"""The worker side of the out-of-process backends (process pool, Ray): rebuild once,
train many.

A worker is sent a :class:`WorkerSpec` (the federation's few settings, local training,
threads) as JSON, rebuilds the task and data exactly as the parent does
(:mod:`fedops.simulation.federation`), and then trains or evaluates the clients it is
sent through :class:`~fedops.tasks.site.Site`, the deployed agent's code. Parameters
travel as the wire codec's raw bytes plus a JSON spec list. Nothing here imports the
engine or a run's records (an import-linter contract keeps it so); the parent's side is
:mod:`fedops.simulation.pool`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from fedops.core.monitoring.profile import MonitorSpec, ReportLimits
from fedops.core.params import Params, TensorSpec, specs_of
from fedops.core.rounds import Phase
from fedops.core.train_settings import TrainSettings
from fedops.core.training import TrainConfig
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.simulation.federation import FederationSpec, build_federation, use_threads
from fedops.tasks.site import Site
from fedops.wire import codec

Blob = tuple[str, bytes]
#: phase, client, round, params, config, the run's training settings (fits; or None), the
#: monitoring request (evaluations; or None)
Job = tuple[str, int, int, Blob, dict[str, float], dict[str, Any] | None, MonitorSpec | None]


def encode(params: Params) -> Blob:
    specs = [[s.name, s.dtype, list(s.shape)] for s in specs_of(params)]
    return json.dumps(specs), b"".join(codec.iter_chunks(params))


def decode(blob: Blob) -> Params:
    specs = [TensorSpec(name=n, dtype=d, shape=tuple(s)) for n, d, s in json.loads(blob[0])]
    return {k: v.copy() for k, v in codec.decode(specs, blob[1]).items()}


@dataclass(frozen=True)
class WorkerSpec:
    """All a worker is told: whose federation, how to train, how many threads."""

    federation: FederationSpec
    train: TrainConfig
    threads: int
    report_min_count: int = ReportLimits().min_count  # each site's monitoring floor

    @classmethod
    def of(cls, cfg: SimulateConfig) -> WorkerSpec:
        c = cfg.client
        train = TrainConfig(
            epochs=c.epochs,
            batch_size=c.batch_size,
            lr=c.lr,
            optimizer=c.optimizer,
            momentum=c.momentum,
        )
        return cls(FederationSpec.of(cfg), train, cfg.simulation.threads, cfg.monitoring.min_count)

    def to_json(self) -> str:
        body = {"federation": self.federation.to_json(), "train": asdict(self.train)}
        return json.dumps(
            {**body, "threads": self.threads, "report_min_count": self.report_min_count}
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        body = json.loads(text)
        return cls(
            FederationSpec.from_json(body["federation"]),
            TrainConfig(**body["train"]),
            int(body["threads"]),
            int(body.get("report_min_count", ReportLimits().min_count)),
        )


class ClientWorker:
    """One worker's task, shared model and lazily built sites."""

    def __init__(self, spec_json: str) -> None:
        self.spec = WorkerSpec.from_json(spec_json)
        use_threads(self.spec.threads)
        self.task, _ = build_federation(self.spec.federation)
        self.model = self.task.build_model()
        self.train = self.spec.train
        self.sites: dict[int, Site] = {}

    def site(self, client: int) -> Site:
        if client not in self.sites:
            self.sites[client] = Site(
                self.task,
                site=client,
                num_sites=self.spec.federation.num_clients,
                train_config=self.train,
                model=self.model,
                report_limits=ReportLimits(min_count=self.spec.report_min_count),
            )
        return self.sites[client]

    def run(self, job: Job) -> tuple[Any, ...]:
        """(client, examples, metrics, trained params blob or None, monitoring report or
        None): the report is the site's own, computed here beside its data."""
        phase, client, server_round, blob, config, train, monitor = job
        site = self.site(client)
        if phase == Phase.FIT:
            settings = TrainSettings(**train) if train is not None else None
            new, n, metrics = site.fit(decode(blob), server_round, config, train=settings)
            return client, n, metrics, encode(new), None
        params = decode(blob)
        n, metrics = site.evaluate(params, server_round)
        report = site.report(params, monitor) if monitor is not None else None
        return client, n, metrics, None, report
