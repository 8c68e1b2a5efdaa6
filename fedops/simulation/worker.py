"""Client work for out-of-process backends (process pool, Ray): rebuild once, train many.

A worker gets the run's configuration as JSON, rebuilds the task and data
exactly as the parent does, and then trains or evaluates the clients it is
sent through :class:`~fedops.tasks.site.Site`, the deployed agent's code.
Parameters travel as the wire codec's raw bytes plus a JSON spec list.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

from fedops.core.monitoring.profile import MonitorSpec
from fedops.core.params import Params, TensorSpec, specs_of
from fedops.core.rounds import Event, NodeDropped, Phase
from fedops.core.training import TrainConfig
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.runtime.transport import StageRequest
from fedops.simulation.base import (
    SimulatedTransport,
    check_plain,
    client_index,
    evaluate_event,
    fit_event,
    node_id,
    task_ids,
)
from fedops.simulation.faults import FaultPlan
from fedops.tasks.site import Site
from fedops.wire import codec

Blob = tuple[str, bytes]
Job = tuple[str, int, int, Blob, dict[str, float]]  # phase, client, round, params, config


def encode(params: Params) -> Blob:
    specs = [[s.name, s.dtype, list(s.shape)] for s in specs_of(params)]
    return json.dumps(specs), b"".join(codec.iter_chunks(params))


def decode(blob: Blob) -> Params:
    specs = [TensorSpec(name=n, dtype=d, shape=tuple(s)) for n, d, s in json.loads(blob[0])]
    return {k: v.copy() for k, v in codec.decode(specs, blob[1]).items()}


def settings_from_json(text: str) -> SimulateConfig:
    merged = OmegaConf.merge(OmegaConf.structured(SimulateConfig), json.loads(text))
    settings = OmegaConf.to_object(merged)
    assert isinstance(settings, SimulateConfig)
    return settings


def fault_jobs(
    faults: FaultPlan,
    server_round: int,
    phase: Phase,
    nodes: Sequence[str],
    params: Params,
    config: Mapping[str, float],
    epochs: int,
) -> tuple[list[Job], list[Event]]:
    """The jobs to send, and the dropouts injected instead of some of them."""
    blob = encode(params)
    jobs: list[Job] = []
    dropped: list[Event] = []
    for node in nodes:
        client = client_index(node)
        job_config = dict(config)
        if phase is Phase.FIT:
            done, reason = faults.plan(server_round, client, epochs)
            if reason:
                dropped.append(NodeDropped(node_id=node, reason=reason))
                continue
            job_config["epochs"] = float(done)
        jobs.append((str(phase), client, server_round, blob, job_config))
    return jobs, dropped


class ClientWorker:
    """One worker's task, shared model and lazily built sites."""

    def __init__(self, config_json: str) -> None:
        from fedops.simulation.engine import load_federation, use_threads  # parent's recipe

        self.cfg = settings_from_json(config_json)
        use_threads(self.cfg.simulation.threads)
        self.task, _ = load_federation(self.cfg)
        self.model = self.task.build_model()
        c = self.cfg.client
        self.train = TrainConfig(
            epochs=c.epochs,
            batch_size=c.batch_size,
            lr=c.lr,
            optimizer=c.optimizer,
            momentum=c.momentum,
        )
        self.sites: dict[int, Site] = {}

    def site(self, client: int) -> Site:
        if client not in self.sites:
            self.sites[client] = Site(
                self.task,
                site=client,
                num_sites=self.cfg.simulation.num_clients,
                train_config=self.train,
                model=self.model,
            )
        return self.sites[client]

    def run(self, job: Job) -> tuple[Any, ...]:
        """(client, examples, metrics, trained params blob or None)."""
        phase, client, server_round, blob, config = job
        site = self.site(client)
        if phase == Phase.FIT:
            new, n, metrics = site.fit(decode(blob), server_round, config)
            return client, n, metrics, encode(new)
        n, metrics = site.evaluate(decode(blob))
        return client, n, metrics, None


class WorkerTransport(SimulatedTransport):
    """Dispatch as jobs to out-of-process workers; events as their results come back.

    Subclasses say how jobs are submitted (:meth:`_submit`) and how the next
    finished one is collected (:meth:`_next_result`); injected faults, task
    ids and the coordinator's checks on results are shared here.
    """

    def __init__(self, cfg: SimulateConfig, faults: FaultPlan | None) -> None:
        super().__init__(cfg.simulation.num_clients)
        self.epochs = cfg.client.epochs
        self.faults = faults or FaultPlan()
        self._dropped: deque[Event] = deque()
        self._current: tuple[Phase, dict[str, str], Params] | None = None

    def _submit(self, jobs: list[Job]) -> None:
        raise NotImplementedError

    def _next_result(self, timeout_s: float) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def dispatch(
        self,
        server_round: int,
        phase: Phase,
        nodes: Sequence[str],
        params: Params,
        config: Mapping[str, float],
        stage: StageRequest | None = None,
        monitor: MonitorSpec | None = None,
    ) -> dict[str, str]:
        check_plain(phase, stage, monitor)
        tasks = task_ids(server_round, phase, nodes)
        jobs, dropped = fault_jobs(
            self.faults, server_round, phase, nodes, params, config, self.epochs
        )
        self._dropped.extend(dropped)
        self._current = (phase, tasks, params)
        self._submit(jobs)
        return tasks

    def next_event(self, timeout_s: float) -> Event | None:
        if self._dropped:
            return self._dropped.popleft()
        if self._current is None:
            return None
        result = self._next_result(timeout_s)
        if result is None:
            return None
        phase, tasks, start = self._current
        client, n, metrics, blob = result
        node = node_id(client)
        if phase is Phase.FIT:
            return fit_event(node, tasks[node], specs_of(start), decode(blob), n, metrics)
        return evaluate_event(node, tasks[node], n, metrics)
