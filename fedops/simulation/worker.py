"""The worker side of the out-of-process backends (process pool, Ray): rebuild once,
train many.

A worker is sent a :class:`WorkerSpec` (the federation's few settings, local training,
threads) as JSON, rebuilds the task and data exactly as the parent does
(:mod:`fedops.simulation.federation`), and then trains or evaluates the clients it is
sent through :class:`~fedops.tasks.site.Site`, the deployed agent's code; under secure
aggregation it also runs those clients' SecAgg+ side (:mod:`fedops.simulation.secure_worker`).
Parameters travel as the wire codec's raw bytes plus a JSON spec list
(:mod:`fedops.simulation.jobs`). Nothing here imports the engine or a run's records (an
import-linter contract keeps it so); the parent's side is :mod:`fedops.simulation.pool`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from fedops.core.monitoring.profile import ReportLimits
from fedops.core.params import Params
from fedops.core.rounds import Phase
from fedops.core.train_settings import TrainSettings
from fedops.core.training import TrainConfig
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.simulation.federation import FederationSpec, build_federation, use_threads
from fedops.simulation.jobs import Blob, Job, decode, encode
from fedops.simulation.secure_worker import SecureSessions, StageAnswer, StageJob
from fedops.tasks.site import Site

__all__ = ["Blob", "ClientWorker", "Job", "WorkerSpec", "decode", "encode"]


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
        self.secure = SecureSessions(self.fit)  # the SecAgg+ sessions of this worker's clients

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

    def run(self, job: Job | StageJob) -> tuple[Any, ...] | StageAnswer:
        """(client, examples, metrics, trained params blob or None, monitoring report or
        None): the report is the site's own, computed here beside its data. A secure
        aggregation stage is answered by the client's session here (:class:`StageAnswer`)."""
        if isinstance(job, StageJob):
            return self.secure.run(job)
        phase, client, server_round, blob, _, _, monitor = job
        if phase == Phase.FIT:
            new, n, metrics = self.fit(job)
            return client, n, metrics, encode(new), None
        site = self.site(client)
        params = decode(blob)
        n, metrics = site.evaluate(params, server_round)
        report = site.report(params, monitor) if monitor is not None else None
        return client, n, metrics, None, report

    def fit(self, job: Job) -> tuple[Params, int, dict[str, float]]:
        """Train a fit job's client: (new params, examples, metrics)."""
        _, client, server_round, blob, config, train, _ = job
        settings = TrainSettings(**train) if train is not None else None
        return self.site(client).fit(decode(blob), server_round, config, train=settings)
