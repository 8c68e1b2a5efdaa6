"""A transport that runs sites in this process, one after another: the reference backend.

Work is done lazily in :meth:`InMemoryTransport.next_event`, one site per
event, so the driver sees exactly the event stream a gRPC coordinator would
(including rejections of invalid updates and injected dropouts), only
without sockets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from fedops.core.monitoring.profile import MonitorSpec
from fedops.core.params import Params, specs_of
from fedops.core.rounds import Event, NodeDropped, Phase, ResultRejected
from fedops.core.train_settings import TrainSettings
from fedops.runtime.transport import Instruction
from fedops.simulation.faults import FaultPlan
from fedops.simulation.sim_transport import (
    SimulatedTransport,
    check_plain,
    evaluate_event,
    fit_event,
    node_id,
    task_ids,
)
from fedops.tasks.local_site import LocalSite
from fedops.tasks.site import PolicyRefusal


class InMemoryTransport(SimulatedTransport):
    """Drives in-process sites (:class:`~fedops.tasks.local_site.LocalSite`); node ids are
    ``site-<index>``."""

    def __init__(self, sites: Sequence[LocalSite], faults: FaultPlan | None = None) -> None:
        super().__init__(len(sites))
        self.sites = {node_id(s.site): s for s in sites}
        self.faults = faults or FaultPlan()
        self._work: deque[Callable[[], Event]] = deque()

    def dispatch(
        self, server_round: int, nodes: Sequence[str], instruction: Instruction
    ) -> dict[str, str]:
        check_plain(instruction)
        phase, params = instruction.phase, instruction.params
        monitor, train = instruction.monitor, instruction.train
        tasks = task_ids(server_round, phase, nodes)
        for node in nodes:
            if phase is Phase.FIT:
                config = instruction.config_for(node)  # the node's own, if it has one
                self._work.append(
                    lambda n=node, c=config: self._fit(n, tasks[n], server_round, params, c, train)
                )
            else:
                self._work.append(
                    lambda n=node: self._evaluate(n, tasks[n], server_round, params, monitor)
                )
        return tasks

    def _fit(
        self,
        node: str,
        task_id: str,
        server_round: int,
        params: Params,
        config: Mapping[str, float],
        train: TrainSettings | None,
    ) -> Event:
        """The run's settings as a deployed site gets them (``train``; None: the site's
        own), but for a straggler's epochs."""
        site = self.sites[node]
        settings = train if train is not None else site.train_config.settings()
        epochs, dropped = self.faults.plan(server_round, site.site, settings.epochs)
        if dropped:
            return NodeDropped(node_id=node, reason=dropped)
        try:
            new, n, metrics = site.fit(
                params, server_round, config, train=replace(settings, epochs=epochs)
            )
        except PolicyRefusal as exc:
            return ResultRejected(node_id=node, task_id=task_id, reason=f"declined: {exc}")
        return fit_event(node, task_id, specs_of(params), new, n, metrics)

    def _evaluate(
        self,
        node: str,
        task_id: str,
        server_round: int,
        params: Params,
        monitor: MonitorSpec | None,
    ) -> Event:
        site = self.sites[node]
        n, metrics = site.evaluate(params, server_round)
        report = site.report(params, monitor) if monitor is not None else None
        return evaluate_event(node, task_id, n, metrics, report=report, spec=monitor)

    def fetch_initial_params(self, timeout_s: float) -> Params:
        """The first site's freshly built model, as a coordinator without a task asks for."""
        return next(iter(self.sites.values())).initial_params()

    def next_event(self, timeout_s: float) -> Event | None:
        return self._work.popleft()() if self._work else None

    def close(self) -> None:
        self._work.clear()
