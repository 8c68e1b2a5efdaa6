"""Client work for out-of-process backends (process pool, Ray): rebuild once, train many.

A worker gets the run's configuration as JSON, rebuilds the task and data
exactly as the parent does, and then trains or evaluates the clients it is
sent through :class:`~fedops.tasks.site.Site`, the deployed agent's code.
Parameters travel as the wire codec's raw bytes plus a JSON spec list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

from fedops.core.params import Params, TensorSpec, specs_of
from fedops.core.rounds import Event, NodeDropped, Phase
from fedops.core.training import TrainConfig
from fedops.runtime.simulate_settings import SimulateConfig
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
        client = int(node.rsplit("-", 1)[1])
        job_config = dict(config)
        if phase is Phase.FIT:
            if faults.drops(server_round, client):
                dropped.append(NodeDropped(node_id=node, reason="injected dropout"))
                continue
            done = faults.epochs(server_round, client, epochs)
            if done < epochs and faults.drop_stragglers:
                dropped.append(NodeDropped(node_id=node, reason="straggler dropped"))
                continue
            job_config["epochs"] = float(done)
        jobs.append((str(phase), client, server_round, blob, job_config))
    return jobs, dropped


class ClientWorker:
    """One worker's task, shared model and lazily built sites."""

    def __init__(self, config_json: str) -> None:
        from fedops.simulation.engine import load_federation  # the parent's own recipe

        self.cfg = settings_from_json(config_json)
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
