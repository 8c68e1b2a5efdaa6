"""A pool of worker processes: for tasks the vectorized backend cannot batch.

User tasks with their own ``train()``, models with buffers (BatchNorm) or
optimisers other than SGD run client by client; this backend spreads those
clients over ``simulation.workers`` spawned processes, each holding one
:class:`~fedops.simulation.worker.ClientWorker`.

Each worker has its own inbox, so the parent decides who runs what: a plain job
goes to whichever worker has room (at most :data:`DEPTH` jobs in flight each), a
pinned one (a SecAgg+ stage) to the worker that owns its client
(:func:`~fedops.simulation.pool.owner`), behind that worker's earlier jobs.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import traceback
from collections import deque
from collections.abc import Sequence
from typing import Any

from fedops.runtime.simulate_settings import SimulateConfig, backend_workers
from fedops.simulation.faults import FaultPlan
from fedops.simulation.jobs import Job
from fedops.simulation.pool import WorkerTransport, owner
from fedops.simulation.secure_worker import StageAnswer, StageJob
from fedops.simulation.worker import ClientWorker, WorkerSpec

#: jobs in flight per worker: one running, one queued behind it
DEPTH = 2

AnyJob = Job | StageJob


def _serve(spec_json: str, slot: int, inbox: Any, outbox: Any) -> None:
    """A worker process: run jobs from ``inbox`` until ``None``; answer on ``outbox``."""
    worker = ClientWorker(spec_json)
    while (job := inbox.get()) is not None:
        try:
            outbox.put((slot, worker.run(job), None))
        except Exception as exc:  # the parent raises it: a failed job ends the run
            outbox.put((slot, None, _portable(exc)))


def _portable(exc: Exception) -> Exception:
    """``exc`` rebuilt the way the queue rebuilds it in the parent (its type from its
    module, called with its args), so the parent raises the same type; a RuntimeError with
    the traceback where that would fail (the queue would otherwise drop it, and the parent
    wait for an answer until its timeout)."""
    text = traceback.format_exc()
    kind = type(exc)
    try:
        if kind.__qualname__ != kind.__name__ or kind.__module__ == "__main__":
            raise TypeError("not importable by name")
        same = kind(*exc.args)
    except Exception:
        return RuntimeError(f"a simulation worker failed:\n{text}")
    same.add_note(f"in a simulation worker:\n{text}")
    return same


class ProcessTransport(WorkerTransport):
    """Clients trained in ``simulation.workers`` spawned processes."""

    def __init__(self, cfg: SimulateConfig, *, faults: FaultPlan | None = None) -> None:
        super().__init__(cfg, faults)
        context = mp.get_context("spawn")  # no forked torch/gRPC state in workers
        spec = WorkerSpec.of(cfg).to_json()
        count = backend_workers(cfg.simulation)  # unset: the default, never None
        self._outbox = context.Queue()
        self._inboxes = [context.Queue() for _ in range(count)]
        self._procs = [
            context.Process(target=_serve, args=(spec, i, inbox, self._outbox), daemon=True)
            for i, inbox in enumerate(self._inboxes)
        ]
        for proc in self._procs:
            proc.start()
        self._free: deque[AnyJob] = deque()  # jobs any worker may run
        self._pinned: list[deque[AnyJob]] = [deque() for _ in range(count)]
        self._busy = [0] * count

    def _submit(self, jobs: Sequence[AnyJob], *, pinned: bool = False) -> None:
        if not pinned:
            self._free.extend(jobs)
        for job in jobs if pinned else ():
            client = job.client if isinstance(job, StageJob) else job[1]
            self._pinned[owner(client, len(self._procs))].append(job)
        self._feed()

    def _feed(self) -> None:
        for slot, inbox in enumerate(self._inboxes):
            own = self._pinned[slot]
            while self._busy[slot] < DEPTH and (own or self._free):
                inbox.put(own.popleft() if own else self._free.popleft())
                self._busy[slot] += 1

    def _next_result(self, timeout_s: float) -> tuple[Any, ...] | StageAnswer | None:
        if not any(self._busy):
            return None
        try:
            slot, result, error = self._outbox.get(timeout=timeout_s)
        except queue.Empty:
            self._check_alive()
            return None
        self._busy[slot] -= 1
        self._feed()
        if error is not None:
            raise error
        return result  # type: ignore[no-any-return]

    def _check_alive(self) -> None:
        for slot, proc in enumerate(self._procs):
            if self._busy[slot] and not proc.is_alive():
                raise RuntimeError(
                    f"simulation worker {slot} exited (code {proc.exitcode}) with "
                    f"{self._busy[slot]} jobs unfinished"
                )

    def close(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.join()
        for q in (*self._inboxes, self._outbox):
            q.cancel_join_thread()  # what a terminated worker never read is dropped
            q.close()
