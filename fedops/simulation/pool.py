"""The parent side of the out-of-process backends: jobs out, events back.

:class:`WorkerTransport` turns a round's dispatch into jobs for workers
(:mod:`fedops.simulation.worker`), with injected faults, and their results into the
round driver's events, checked as the coordinator checks results. Under secure
aggregation each client's SecAgg+ side runs in the worker that owns the client
(:func:`owner`); the parent only relays the protocol's messages
(:mod:`fedops.simulation.secure_pool`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from fedops.core.monitoring.profile import MonitorSpec
from fedops.core.params import Params, specs_of
from fedops.core.rounds import Event, NodeDropped, Phase
from fedops.core.train_settings import TrainSettings
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.runtime.transport import Instruction
from fedops.simulation.faults import FaultPlan
from fedops.simulation.jobs import Job, decode, encode
from fedops.simulation.secure_pool import SecureStages
from fedops.simulation.secure_worker import StageAnswer, StageJob
from fedops.simulation.sim_transport import (
    SimulatedTransport,
    check_plain,
    client_index,
    evaluate_event,
    fit_event,
    node_id,
    task_ids,
)


def owner(client: int, workers: int) -> int:
    """The worker that runs ``client``'s pinned jobs (its SecAgg+ session lives there)."""
    return client % workers


def fault_jobs(
    faults: FaultPlan,
    server_round: int,
    phase: Phase,
    nodes: Sequence[str],
    params: Params,
    config_for: Callable[[str], Mapping[str, float]],
    train: TrainSettings,
    monitor: MonitorSpec | None = None,
) -> tuple[list[Job], list[Event]]:
    """The jobs to send, and the dropouts injected instead of some of them: each
    fit job trains with the run's ``train``, a straggler with fewer epochs, and with
    its node's config (``config_for``: :meth:`Instruction.config_for`)."""
    blob = encode(params)
    jobs: list[Job] = []
    dropped: list[Event] = []
    for node in nodes:
        client = client_index(node)
        job_train: dict[str, Any] | None = None
        if phase is Phase.FIT:
            done, reason = faults.plan(server_round, client, train.epochs)
            if reason:
                dropped.append(NodeDropped(node_id=node, reason=reason))
                continue
            job_train = asdict(replace(train, epochs=done))
        config = dict(config_for(node))
        jobs.append((str(phase), client, server_round, blob, config, job_train, monitor))
    return jobs, dropped


class WorkerTransport(SimulatedTransport):
    """Dispatch as jobs to out-of-process workers; events as their results come back.

    Subclasses say how jobs are submitted (:meth:`_submit`) and how the next
    finished one is collected (:meth:`_next_result`); injected faults, task
    ids and the coordinator's checks on results are shared here.
    """

    def __init__(self, cfg: SimulateConfig, faults: FaultPlan | None) -> None:
        super().__init__(cfg.simulation.num_clients)
        self.train = cfg.client.settings()  # tasks without the run's (a direct dispatch)
        self.faults = faults or FaultPlan()
        self._dropped: deque[Event] = deque()
        self._current: tuple[Phase, dict[str, str], Params, MonitorSpec | None] | None = None
        self._round = 0
        # secure aggregation: the parent relays each stage's messages to the clients' owners
        self.secure = SecureStages(seed=cfg.seed, noise_seed=cfg.privacy.seed)

    def _submit(self, jobs: Sequence[Job | StageJob], *, pinned: bool = False) -> None:
        """Start ``jobs``; ``pinned``: each on its client's :func:`owner`, in order (a
        client's SecAgg+ session stays in that worker between stages)."""
        raise NotImplementedError

    def _next_result(self, timeout_s: float) -> tuple[Any, ...] | StageAnswer | None:
        raise NotImplementedError

    def dispatch(
        self, server_round: int, nodes: Sequence[str], instruction: Instruction
    ) -> dict[str, str]:
        phase, params, monitor = instruction.phase, instruction.params, instruction.monitor
        tasks = task_ids(server_round, phase, nodes)
        train = instruction.train if instruction.train is not None else self.train
        self._current, self._round = (phase, tasks, params, monitor), server_round
        if instruction.stage is not None:  # a SecAgg+ stage: the workers' clients answer it
            self._dispatch_stage(server_round, nodes, instruction, train)
            return tasks
        check_plain(instruction)  # monitoring: each worker's site reports on its data
        jobs, dropped = fault_jobs(
            self.faults, server_round, phase, nodes, params, instruction.config_for, train, monitor
        )
        self._dropped.extend(dropped)
        self._submit(jobs)
        return tasks

    def _dispatch_stage(
        self,
        server_round: int,
        nodes: Sequence[str],
        instruction: Instruction,
        train: TrainSettings,
    ) -> None:
        fits: tuple[list[Job], list[Event]] = ([], [])
        if instruction.phase is Phase.SECAGG_KEYS:  # the clients train now, keep the result
            params, config_for = instruction.params, instruction.config_for
            fits = fault_jobs(
                self.faults, server_round, Phase.FIT, nodes, params, config_for, train
            )
        jobs, due = self.secure.jobs(server_round, nodes, instruction, fits)
        self._dropped.extend(due)
        self._submit(jobs, pinned=True)

    def next_event(self, timeout_s: float) -> Event | None:
        if self._dropped:
            return self._dropped.popleft()
        if self._current is None:
            return None
        result = self._next_result(timeout_s)
        if result is None:
            return None
        phase, tasks, start, monitor = self._current
        if isinstance(result, StageAnswer):
            return self.secure.event(result, phase, self._round, tasks)
        client, n, metrics, blob, report = result
        node = node_id(client)
        if phase is Phase.FIT:
            return fit_event(node, tasks[node], specs_of(start), decode(blob), n, metrics)
        return evaluate_event(node, tasks[node], n, metrics, report=report, spec=monitor)
