"""Ray actors: the process backend for users who outgrow one machine.

``simulation.workers`` actors each hold one
:class:`~fedops.simulation.worker.ClientWorker`; jobs go to them round-robin
and results are taken as they finish. A pinned job (a SecAgg+ stage) goes to the
actor that owns its client (:func:`~fedops.simulation.pool.owner`), which runs its
calls in order and keeps the client's session between stages. Without ``simulation.ray_address``
a local Ray instance is started (and stopped with the run); with
``simulation.ray_address=auto`` (or ``ray://host:10001``) the run joins an
existing cluster (``HOST:PORT``, the head's GCS address, from a machine of the cluster).
A joined run logs the cluster's live nodes, and every run logs, at its end, the node each
actor ran on and how many results it gave. Ray is an optional extra:
``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from fedops.runtime.simulate_settings import SimulateConfig
from fedops.simulation.faults import FaultPlan
from fedops.simulation.jobs import Job
from fedops.simulation.pool import WorkerTransport, owner
from fedops.simulation.secure_worker import StageAnswer, StageJob
from fedops.simulation.worker import ClientWorker, WorkerSpec

log = logging.getLogger("fedops.simulate")


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

    def where(self) -> tuple[str, str]:
        """(node IP, node id): the Ray node this actor lives on."""
        ray = _ray()
        return ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()


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
                nodes = [n for n in ray.nodes() if n.get("Alive")]
                log.info(
                    "joined the Ray cluster at %s: %d live node(s) (%s), %g CPUs",
                    s.ray_address,
                    len(nodes),
                    ", ".join(sorted(str(n.get("NodeManagerAddress")) for n in nodes)),
                    ray.cluster_resources().get("CPU", 0),
                )
            else:
                # Ray gives its GCS server 30 s to start: a loaded machine can take longer
                os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
                ray.init(num_cpus=s.workers, include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=1)(_Actor)
        spec_json = WorkerSpec.of(cfg).to_json()
        self.actors = [actor.remote(spec_json) for _ in range(s.workers)]
        # asked first, so answered before any job of its actor (calls from here run in order)
        self._where = [a.where.remote() for a in self.actors]
        self._results = [0] * len(self.actors)  # results taken from each actor
        self._refs: list[Any] = []
        self._slot_of: dict[Any, int] = {}

    def _submit(self, jobs: Sequence[Job | StageJob], *, pinned: bool = False) -> None:
        count, self._refs, self._slot_of = len(self.actors), [], {}
        for i, job in enumerate(jobs):
            client = job.client if isinstance(job, StageJob) else job[1]
            slot = owner(client, count) if pinned else i % count
            ref = self.actors[slot].run.remote(job)
            self._refs.append(ref)
            self._slot_of[ref] = slot

    def _next_result(self, timeout_s: float) -> tuple[Any, ...] | StageAnswer | None:
        if not self._refs:
            return None
        ray = _ray()
        ready, self._refs = ray.wait(self._refs, num_returns=1, timeout=timeout_s)
        if not ready:
            return None
        result: tuple[Any, ...] | StageAnswer = ray.get(ready[0])
        self._results[self._slot_of.pop(ready[0])] += 1
        return result

    def close(self) -> None:
        ray = _ray()
        self._log_placement(ray)
        for actor in self.actors:
            ray.kill(actor)
        if self._owns_ray:
            ray.shutdown()

    def _log_placement(self, ray: Any) -> None:
        """Log each actor's node and how many results it gave; never waits on an actor."""
        for i, ref in enumerate(self._where):
            try:
                ready, _ = ray.wait([ref], timeout=0)
                ip, node_id = ray.get(ready[0]) if ready else ("?", "no answer yet")
            except Exception as exc:  # an actor that died: the run's outcome stands
                ip, node_id = "?", f"lost: {type(exc).__name__}"
            log.info(
                "ray actor %d gave %d result(s) on node %s (%s)", i, self._results[i], ip, node_id
            )
