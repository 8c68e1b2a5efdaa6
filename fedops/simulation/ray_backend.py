"""Ray actors: the process backend for users who outgrow one machine.

``simulation.workers`` actors each hold one
:class:`~fedops.simulation.worker.ClientWorker`; jobs go to them round-robin
and results are taken as they finish. Without ``simulation.ray_address``
a local Ray instance is started (and stopped with the run); with
``simulation.ray_address=auto`` (or ``ray://host:10001``) the run joins an
existing cluster. Ray is an optional extra: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from fedops.core.params import Params
from fedops.core.rounds import Event, Phase
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.simulation.faults import FaultPlan
from fedops.simulation.inmemory import node_id, task_ids
from fedops.simulation.process import result_event
from fedops.simulation.worker import ClientWorker, Job, fault_jobs


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ValueError("simulation.backend=ray needs Ray: pip install -e '.[ray]'") from exc
    return ray


class _Actor:
    def __init__(self, config_json: str) -> None:
        self.worker = ClientWorker(config_json)

    def run(self, job: Job) -> tuple[Any, ...]:
        return self.worker.run(job)


class RayTransport:
    """Clients trained by Ray actors; node ids are ``site-<index>``."""

    def __init__(self, cfg: SimulateConfig, *, faults: FaultPlan | None = None) -> None:
        ray = _ray()
        s = cfg.simulation
        self._owns_ray = not ray.is_initialized() and not s.ray_address
        if not ray.is_initialized():
            if s.ray_address:
                ray.init(address=s.ray_address, log_to_driver=False)
            else:
                ray.init(num_cpus=s.workers, include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=1)(_Actor)
        config_json = json.dumps(asdict(cfg))
        self.actors = [actor.remote(config_json) for _ in range(s.workers)]
        self.num_clients = s.num_clients
        self.epochs = cfg.client.epochs
        self.faults = faults or FaultPlan()
        self._pending: deque[Event] = deque()
        self._refs: list[Any] = []
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
        jobs, dropped = fault_jobs(
            self.faults, server_round, phase, nodes, params, config, self.epochs
        )
        self._pending.extend(dropped)
        self._refs = [
            self.actors[i % len(self.actors)].run.remote(job) for i, job in enumerate(jobs)
        ]
        self._current = (phase, tasks, params)
        return tasks

    def next_event(self, timeout_s: float) -> Event | None:
        if self._pending:
            return self._pending.popleft()
        if not self._refs or self._current is None:
            return None
        ray = _ray()
        ready, self._refs = ray.wait(self._refs, num_returns=1, timeout=timeout_s)
        if not ready:
            return None
        return result_event(*self._current, ray.get(ready[0]))

    def fetch_initial_params(self, timeout_s: float) -> Params:
        raise NotImplementedError("the simulation builds its initial model itself")

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)
        if self._owns_ray:
            ray.shutdown()
