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

A local instance is started with Ray's start-up deadlines that are settings raised
(:data:`SLOW_START`), and one that still does not start (Ray gives its raylet a fixed 30 s
to register, which a loaded machine can miss) is cleaned up and started once more; a second
failure is a :class:`RayStartError` saying so in one line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from fedops.runtime.simulate_settings import SimulateConfig, backend_workers
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


#: tries at starting a local Ray: the second one finds the first one's files in the page
#: cache, which is what a loaded machine lacked when its raylet missed Ray's fixed deadline
START_TRIES = 2
#: Ray's start-up deadlines that are settings (each read by Ray from the environment, the
#: started processes' included), raised so that a loaded machine is slow, not failed
SLOW_START = {
    "RAY_gcs_server_port_wait_time_s": "120",  # the GCS publishing its port (30 s)
    "RAY_raylet_start_wait_time_s": "120",  # the raylet's own waits at start (10 s)
    "RAY_worker_register_timeout_seconds": "120",  # a started worker registering (60 s)
}


#: the most a run waits, before its first round, for its actors to be up (each a worker
#: process that imports the task and builds its client): minutes on a loaded machine, which
#: the first round's deadline would otherwise spend, going on without the slow actors' clients
ACTORS_UP_S = 180.0


#: after this long, a run still waiting for its actors says so (once), then waits the rest
ACTORS_SAID_S = 10.0


def await_actors(ray: Any, started: Sequence[Any]) -> None:
    """Wait, at most :data:`ACTORS_UP_S`, until every actor has answered ``started`` (its
    first call, so it is up); past :data:`ACTORS_SAID_S` the wait is said in the log, and an
    actor still not up at the end is left to the rounds' own deadlines, with a warning."""
    total = len(started)
    _, pending = ray.wait(list(started), num_returns=total, timeout=ACTORS_SAID_S)
    if not pending:
        return
    log.info(
        "waiting for %d of %d Ray actor(s) to start (up to %g s more)",
        len(pending),
        total,
        ACTORS_UP_S - ACTORS_SAID_S,
    )
    _, pending = ray.wait(pending, num_returns=len(pending), timeout=ACTORS_UP_S - ACTORS_SAID_S)
    if pending:
        log.warning(
            "%d of %d Ray actor(s) not started after %g s; the rounds go on without waiting "
            "for them",
            len(pending),
            total,
            ACTORS_UP_S,
        )


class RayStartError(RuntimeError):
    """A local Ray instance did not start in :data:`START_TRIES` tries: the run cannot use
    Ray on this machine now (Ray's own traceback is the cause, kept for the error log)."""


def start_local_ray(ray: Any, num_cpus: int) -> None:
    """Start a local Ray instance of ``num_cpus`` CPUs, trying once more after a failed
    start-up (its processes stopped first); raise :class:`RayStartError` after the last."""
    for name, value in SLOW_START.items():
        os.environ.setdefault(name, value)  # a user's own setting stands
    for attempt in range(1, START_TRIES + 1):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return
        except Exception as exc:  # Ray raises a bare Exception for its start-up timeout
            _stop_failed_node(exc.__traceback__)
            ray.shutdown()
            why = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
            if attempt == START_TRIES:
                raise RayStartError(
                    f"simulation.backend=ray: a local Ray instance did not start in "
                    f"{START_TRIES} tries (last: {why}); on a busy machine try again when it "
                    "is less loaded, or run with simulation.backend=process"
                ) from exc
            log.warning("a local Ray instance did not start (%s); trying once more", why)


def _stop_failed_node(trace: TracebackType | None) -> None:
    """Stop the processes a failed ``ray.init`` started: its node object never reached Ray's
    own bookkeeping (``ray.shutdown`` does not see it), only the failed call's frames."""
    try:
        from ray._private.node import Node  # Ray's internals: best effort, never fatal
    except ImportError:
        return
    while trace is not None:
        node = trace.tb_frame.f_locals.get("self")
        if isinstance(node, Node):
            try:
                node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
            except Exception as exc:  # the retry goes on; a leftover only costs memory
                log.debug("could not stop a failed Ray node's processes: %s", exc)
            return
        trace = trace.tb_next


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
        workers = backend_workers(s)  # unset: the default, never None
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
                start_local_ray(ray, workers)
        actor = ray.remote(num_cpus=1)(_Actor)
        spec_json = WorkerSpec.of(cfg).to_json()
        self.actors = [actor.remote(spec_json) for _ in range(workers)]
        # asked first, so answered before any job of its actor (calls from here run in order)
        self._where = [a.where.remote() for a in self.actors]
        await_actors(ray, self._where)
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
