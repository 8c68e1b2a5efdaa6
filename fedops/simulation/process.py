"""A pool of worker processes: for tasks the vectorized backend cannot batch.

User tasks with their own ``train()``, models with buffers (BatchNorm) or
optimisers other than SGD run client by client; this backend spreads those
clients over ``simulation.workers`` processes. Each worker rebuilds the task
and its data from the (JSON) configuration once, then trains the clients it
is sent through :class:`~fedops.tasks.site.Site`, the deployed agent's code.
Parameters cross the process boundary as the wire codec's raw bytes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from omegaconf import OmegaConf

from fedops.core.params import Params, TensorSpec, specs_of
from fedops.core.rounds import Event, NodeDropped, Phase
from fedops.core.training import TrainConfig
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.simulation.faults import FaultPlan
from fedops.simulation.inmemory import evaluate_event, fit_event, node_id, task_ids
from fedops.tasks.site import Site
from fedops.wire import codec

_worker: dict[str, Any] = {}  # per worker process: the task and its sites


def encode(params: Params) -> tuple[str, bytes]:
    specs = [[s.name, s.dtype, list(s.shape)] for s in specs_of(params)]
    return json.dumps(specs), b"".join(codec.iter_chunks(params))


def decode(blob: tuple[str, bytes]) -> Params:
    specs = [TensorSpec(name=n, dtype=d, shape=tuple(s)) for n, d, s in json.loads(blob[0])]
    return {k: v.copy() for k, v in codec.decode(specs, blob[1]).items()}


def settings_from_json(text: str) -> SimulateConfig:
    merged = OmegaConf.merge(OmegaConf.structured(SimulateConfig), json.loads(text))
    settings = OmegaConf.to_object(merged)
    assert isinstance(settings, SimulateConfig)
    return settings


def _init(config_json: str) -> None:
    from fedops.simulation.engine import load_federation  # the parent's own data recipe

    cfg = settings_from_json(config_json)
    task, _ = load_federation(cfg)
    c = cfg.client
    _worker.update(
        cfg=cfg,
        task=task,
        model=task.build_model(),
        sites={},
        train=TrainConfig(
            epochs=c.epochs,
            batch_size=c.batch_size,
            lr=c.lr,
            optimizer=c.optimizer,
            momentum=c.momentum,
        ),
    )


def _site(client: int) -> Site:
    sites: dict[int, Site] = _worker["sites"]
    if client not in sites:
        sites[client] = Site(
            _worker["task"],
            site=client,
            num_sites=_worker["cfg"].simulation.num_clients,
            train_config=_worker["train"],
            model=_worker["model"],
        )
    return sites[client]


def _work(job: tuple[str, int, int, tuple[str, bytes], dict[str, float]]) -> tuple[Any, ...]:
    phase, client, server_round, blob, config = job
    site = _site(client)
    if phase == Phase.FIT:
        new, n, metrics = site.fit(decode(blob), server_round, config)
        return client, n, metrics, encode(new)
    n, metrics = site.evaluate(decode(blob))
    return client, n, metrics, None


class ProcessTransport:
    """Clients trained in ``workers`` spawned processes; node ids are ``site-<index>``."""

    def __init__(self, cfg: SimulateConfig, *, faults: FaultPlan | None = None) -> None:
        self.num_clients = cfg.simulation.num_clients
        self.epochs = cfg.client.epochs
        self.faults = faults or FaultPlan()
        context = mp.get_context("spawn")  # no forked torch/gRPC state in workers
        self.pool = context.Pool(
            cfg.simulation.workers, initializer=_init, initargs=(json.dumps(asdict(cfg)),)
        )
        self._pending: deque[Event] = deque()
        self._stream: Iterator[tuple[Any, ...]] | None = None
        self._current: tuple[Phase, dict[str, str], Params] | None = None

    def wait_for_nodes(self, count: int, timeout_s: float) -> list[str]:
        return self.available_nodes()

    def available_nodes(self) -> list[str]:
        return [node_id(i) for i in range(self.num_clients)]

    def dispatch(
        self,
        server_round: int,
        phase: Phase,
        nodes: Sequence[str],
        params: Params,
        config: Mapping[str, float],
    ) -> dict[str, str]:
        tasks = task_ids(server_round, phase, nodes)
        blob = encode(params)
        jobs = []
        for node in nodes:
            client = int(node.rsplit("-", 1)[1])
            job_config = dict(config)
            if phase is Phase.FIT:
                if self.faults.drops(server_round, client):
                    self._pending.append(NodeDropped(node_id=node, reason="injected dropout"))
                    continue
                epochs = self.faults.epochs(server_round, client, self.epochs)
                if epochs < self.epochs and self.faults.drop_stragglers:
                    self._pending.append(NodeDropped(node_id=node, reason="straggler dropped"))
                    continue
                job_config["epochs"] = float(epochs)
            jobs.append((str(phase), client, server_round, blob, job_config))
        self._stream = self.pool.imap_unordered(_work, jobs)
        self._current = (phase, tasks, params)
        return tasks

    def next_event(self, timeout_s: float) -> Event | None:
        if self._pending:
            return self._pending.popleft()
        if self._stream is None or self._current is None:
            return None
        try:
            client, n, metrics, blob = self._stream.next(timeout_s)  # type: ignore[attr-defined]
        except StopIteration:
            self._stream = None
            return None
        except mp.TimeoutError:
            return None
        phase, tasks, params = self._current
        node = node_id(client)
        if phase is Phase.FIT:
            return fit_event(node, tasks[node], params, decode(blob), n, metrics)
        return evaluate_event(node, tasks[node], n, metrics)

    def fetch_initial_params(self, timeout_s: float) -> Params:
        raise NotImplementedError("the simulation builds its initial model itself")

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
