"""A transport that runs sites in this process, one after another: the reference backend.

Work is done lazily in :meth:`InMemoryTransport.next_event`, one site per
event, so the driver sees exactly the event stream a gRPC coordinator would
(including rejections of invalid updates and injected dropouts), only
without sockets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence

from fedops.core.params import InvalidUpdate, Params, check_finite, check_specs_match, specs_of
from fedops.core.results import EvaluateResult, FitResult, check_reported
from fedops.core.rounds import Event, NodeDropped, Phase, ResultArrived, ResultRejected
from fedops.simulation.faults import FaultPlan
from fedops.tasks.site import Site


def node_id(client: int) -> str:
    return f"site-{client}"


def fit_event(
    node: str,
    task_id: str,
    start: Params,
    new: Params,
    num_examples: int,
    metrics: Mapping[str, float],
) -> Event:
    """The coordinator's checks, applied to a simulated fit result."""
    try:
        check_reported(num_examples=num_examples, metrics=metrics, training=True)
        check_specs_match(specs_of(start), specs_of(new))
        check_finite(new)
    except InvalidUpdate as exc:
        return ResultRejected(node_id=node, task_id=task_id, reason=str(exc))
    result = FitResult(node_id=node, params=new, num_examples=num_examples, metrics=metrics)
    return ResultArrived(node_id=node, task_id=task_id, result=result)


def evaluate_event(
    node: str, task_id: str, num_examples: int, metrics: Mapping[str, float]
) -> Event:
    try:
        check_reported(num_examples=num_examples, metrics=metrics, training=False)
    except InvalidUpdate as exc:
        return ResultRejected(node_id=node, task_id=task_id, reason=str(exc))
    result = EvaluateResult(node_id=node, num_examples=num_examples, metrics=metrics)
    return ResultArrived(node_id=node, task_id=task_id, result=result)


def task_ids(server_round: int, phase: Phase, nodes: Sequence[str]) -> dict[str, str]:
    return {node: f"{node}:{server_round}:{phase}" for node in nodes}


class InMemoryTransport:
    """Drives in-process :class:`Site` objects; node ids are ``site-<index>``."""

    def __init__(self, sites: Sequence[Site], faults: FaultPlan | None = None) -> None:
        self.sites = {node_id(s.site): s for s in sites}
        self.faults = faults or FaultPlan()
        self._work: deque[Callable[[], Event]] = deque()

    def wait_for_nodes(self, count: int, timeout_s: float) -> list[str]:
        return self.available_nodes()

    def available_nodes(self) -> list[str]:
        return list(self.sites)

    def dispatch(
        self,
        server_round: int,
        phase: Phase,
        nodes: Sequence[str],
        params: Params,
        config: Mapping[str, float],
    ) -> dict[str, str]:
        tasks = task_ids(server_round, phase, nodes)
        for node in nodes:
            run = self._fit if phase is Phase.FIT else self._evaluate
            self._work.append(lambda n=node, r=run: r(n, tasks[n], server_round, params, config))
        return tasks

    def _fit(
        self,
        node: str,
        task_id: str,
        server_round: int,
        params: Params,
        config: Mapping[str, float],
    ) -> Event:
        site = self.sites[node]
        if self.faults.drops(server_round, site.site):
            return NodeDropped(node_id=node, reason="injected dropout")
        epochs = self.faults.epochs(server_round, site.site, site.train_config.epochs)
        if epochs < site.train_config.epochs and self.faults.drop_stragglers:
            return NodeDropped(node_id=node, reason="straggler dropped")
        new, n, metrics = site.fit(params, server_round, {**config, "epochs": float(epochs)})
        return fit_event(node, task_id, params, new, n, metrics)

    def _evaluate(
        self,
        node: str,
        task_id: str,
        server_round: int,
        params: Params,
        config: Mapping[str, float],
    ) -> Event:
        n, metrics = self.sites[node].evaluate(params)
        return evaluate_event(node, task_id, n, metrics)

    def next_event(self, timeout_s: float) -> Event | None:
        return self._work.popleft()() if self._work else None

    def fetch_initial_params(self, timeout_s: float) -> Params:
        return next(iter(self.sites.values())).initial_params()

    def close(self) -> None:
        self._work.clear()
