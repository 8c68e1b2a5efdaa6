"""The parent side of the out-of-process backends: jobs out, events back.

:class:`WorkerTransport` turns a round's dispatch into jobs for workers
(:mod:`fedops.simulation.worker`), with injected faults, and their results into the
round driver's events, checked as the coordinator checks results.
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
from fedops.simulation.sim_transport import (
    SimulatedTransport,
    check_plain,
    client_index,
    evaluate_event,
    fit_event,
    node_id,
    task_ids,
)
from fedops.simulation.worker import Job, decode, encode


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

    def _submit(self, jobs: list[Job]) -> None:
        raise NotImplementedError

    def _next_result(self, timeout_s: float) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def dispatch(
        self, server_round: int, nodes: Sequence[str], instruction: Instruction
    ) -> dict[str, str]:
        check_plain(instruction)  # monitoring: each worker's site reports on its data
        phase, params, monitor = instruction.phase, instruction.params, instruction.monitor
        tasks = task_ids(server_round, phase, nodes)
        train = instruction.train if instruction.train is not None else self.train
        jobs, dropped = fault_jobs(
            self.faults, server_round, phase, nodes, params, instruction.config_for, train, monitor
        )
        self._dropped.extend(dropped)
        self._current = (phase, tasks, params, monitor)
        self._submit(jobs)
        return tasks

    def next_event(self, timeout_s: float) -> Event | None:
        if self._dropped:
            return self._dropped.popleft()
        if self._current is None:
            return None
        result = self._next_result(timeout_s)
        if result is None:
            return None
        phase, tasks, start, monitor = self._current
        client, n, metrics, blob, report = result
        node = node_id(client)
        if phase is Phase.FIT:
            return fit_event(node, tasks[node], specs_of(start), decode(blob), n, metrics)
        return evaluate_event(node, tasks[node], n, metrics, report=report, spec=monitor)
