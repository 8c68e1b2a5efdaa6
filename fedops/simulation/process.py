"""A pool of worker processes: for tasks the vectorized backend cannot batch.

User tasks with their own ``train()``, models with buffers (BatchNorm) or
optimisers other than SGD run client by client; this backend spreads those
clients over ``simulation.workers`` spawned processes, each holding one
:class:`~fedops.simulation.worker.ClientWorker`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from fedops.core.params import Params
from fedops.core.rounds import Event, Phase
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.simulation.faults import FaultPlan
from fedops.simulation.inmemory import evaluate_event, fit_event, node_id, task_ids
from fedops.simulation.worker import ClientWorker, Job, decode, fault_jobs

_worker: list[ClientWorker] = []  # the one ClientWorker of this worker process


def _init(config_json: str) -> None:
    _worker.append(ClientWorker(config_json))


def _work(job: Job) -> tuple[Any, ...]:
    return _worker[0].run(job)


def result_event(
    phase: Phase, tasks: Mapping[str, str], start: Params, result: tuple[Any, ...]
) -> Event:
    """A worker's (client, examples, metrics, blob) as the event a coordinator would emit."""
    client, n, metrics, blob = result
    node = node_id(client)
    if phase is Phase.FIT:
        return fit_event(node, tasks[node], start, decode(blob), n, metrics)
    return evaluate_event(node, tasks[node], n, metrics)


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
        jobs, dropped = fault_jobs(
            self.faults, server_round, phase, nodes, params, config, self.epochs
        )
        self._pending.extend(dropped)
        self._stream = self.pool.imap_unordered(_work, jobs)
        self._current = (phase, tasks, params)
        return tasks

    def next_event(self, timeout_s: float) -> Event | None:
        if self._pending:
            return self._pending.popleft()
        if self._stream is None or self._current is None:
            return None
        try:
            result = self._stream.next(timeout_s)  # type: ignore[attr-defined]
        except StopIteration:
            self._stream = None
            return None
        except mp.TimeoutError:
            return None
        return result_event(*self._current, result)

    def fetch_initial_params(self, timeout_s: float) -> Params:
        raise NotImplementedError("the simulation builds its initial model itself")

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
