"""Ray actors: the process backend for users who outgrow one machine.

``simulation.workers`` actors each hold one
:class:`~fedops.simulation.worker.ClientWorker`; jobs go to them round-robin
and results are taken as they finish. A pinned job (a SecAgg+ stage) goes to the
actor that owns its client (:func:`~fedops.simulation.pool.owner`), which runs its
calls in order and keeps the client's session between stages. Without ``simulation.ray_address``
a local Ray instance is started (and stopped with the run); with
``simulation.ray_address=auto`` (or ``ray://host:10001``) the run joins an
existing cluster. Ray is an optional extra: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fedops.runtime.simulate_settings import SimulateConfig
from fedops.simulation.faults import FaultPlan
from fedops.simulation.jobs import Job
from fedops.simulation.pool import WorkerTransport, owner
from fedops.simulation.secure_worker import StageAnswer, StageJob
from fedops.simulation.worker import ClientWorker, WorkerSpec


def _ray() -> Any:
    # Keep Ray's hands off CUDA_VISIBLE_DEVICES for CPU-only actors (and its warning quiet).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        import ray
    except ImportError as exc:
        raise ValueError("simulation.backend=ray needs Ray: pip install -e '.[ray]'") from exc
    return ray


class _Actor:
    def __init__(self, spec_json: str) -> None:
        self.worker = ClientWorker(spec_json)

    def run(self, job: Job | StageJob) -> tuple[Any, ...] | StageAnswer:
        return self.worker.run(job)


class RayTransport(WorkerTransport):
    """Clients trained by ``simulation.workers`` Ray actors."""

    def __init__(self, cfg: SimulateConfig, *, faults: FaultPlan | None = None) -> None:
        super().__init__(cfg, faults)
        ray = _ray()
        s = cfg.simulation
        self._owns_ray = not ray.is_initialized() and not s.ray_address
        if not ray.is_initialized():
            if s.ray_address:
                ray.init(address=s.ray_address, log_to_driver=False)
            else:
                # Ray gives its GCS server 30 s to start: a loaded machine can take longer
                os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
                ray.init(num_cpus=s.workers, include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=1)(_Actor)
        spec_json = WorkerSpec.of(cfg).to_json()
        self.actors = [actor.remote(spec_json) for _ in range(s.workers)]
        self._refs: list[Any] = []

    def _submit(self, jobs: Sequence[Job | StageJob], *, pinned: bool = False) -> None:
        count, self._refs = len(self.actors), []
        for i, job in enumerate(jobs):
            client = job.client if isinstance(job, StageJob) else job[1]
            slot = owner(client, count) if pinned else i % count
            self._refs.append(self.actors[slot].run.remote(job))

    def _next_result(self, timeout_s: float) -> tuple[Any, ...] | StageAnswer | None:
        if not self._refs:
            return None
        ray = _ray()
        ready, self._refs = ray.wait(self._refs, num_returns=1, timeout=timeout_s)
        return ray.get(ready[0]) if ready else None

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)
        if self._owns_ray:
            ray.shutdown()
