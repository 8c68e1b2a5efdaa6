"""A pool of worker processes: for tasks the vectorized backend cannot batch.

User tasks with their own ``train()``, models with buffers (BatchNorm) or
optimisers other than SGD run client by client; this backend spreads those
clients over ``simulation.workers`` spawned processes, each holding one
:class:`~fedops.simulation.worker.ClientWorker`.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from typing import Any

from fedops.runtime.simulate_settings import SimulateConfig
from fedops.simulation.faults import FaultPlan
from fedops.simulation.pool import WorkerTransport
from fedops.simulation.worker import ClientWorker, Job, WorkerSpec

_worker: list[ClientWorker] = []  # the one ClientWorker of this worker process


def _init(spec_json: str) -> None:
    _worker.append(ClientWorker(spec_json))


def _work(job: Job) -> tuple[Any, ...]:
    return _worker[0].run(job)


class ProcessTransport(WorkerTransport):
    """Clients trained in ``simulation.workers`` spawned processes."""

    def __init__(self, cfg: SimulateConfig, *, faults: FaultPlan | None = None) -> None:
        super().__init__(cfg, faults)
        context = mp.get_context("spawn")  # no forked torch/gRPC state in workers
        self.pool = context.Pool(
            cfg.simulation.workers, initializer=_init, initargs=(WorkerSpec.of(cfg).to_json(),)
        )
        self._stream: Iterator[tuple[Any, ...]] | None = None

    def _submit(self, jobs: list[Job]) -> None:
        self._stream = self.pool.imap_unordered(_work, jobs)

    def _next_result(self, timeout_s: float) -> tuple[Any, ...] | None:
        if self._stream is None:
            return None
        try:
            return self._stream.next(timeout_s)  # type: ignore[attr-defined,no-any-return]
        except StopIteration:
            self._stream = None
        except mp.TimeoutError:
            pass
        return None

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
