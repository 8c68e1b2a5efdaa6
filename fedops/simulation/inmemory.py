"""A transport that runs sites in this process: the simulation's network.

Work is done lazily in :meth:`InMemoryTransport.next_event`, one site per
event, so the driver sees exactly the event stream a gRPC coordinator would
(including rejections of invalid updates), only without sockets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence

from fedops.core.params import InvalidUpdate, Params, check_finite, check_specs_match, specs_of
from fedops.core.results import EvaluateResult, FitResult, check_reported
from fedops.core.rounds import Event, Phase, ResultArrived, ResultRejected
from fedops.tasks.site import Site


class InMemoryTransport:
    """Drives in-process :class:`Site` objects; node ids are ``site-<index>``."""

    def __init__(self, sites: Sequence[Site]) -> None:
        self.sites = {f"site-{s.site}": s for s in sites}
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
        tasks = {node: f"{node}:{server_round}:{phase}" for node in nodes}
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
        new, n, metrics = self.sites[node].fit(params, server_round, config)
        try:
            check_reported(num_examples=n, metrics=metrics, training=True)
            check_specs_match(specs_of(params), specs_of(new))
            check_finite(new)
        except InvalidUpdate as exc:
            return ResultRejected(node_id=node, task_id=task_id, reason=str(exc))
        result = FitResult(node_id=node, params=new, num_examples=n, metrics=metrics)
        return ResultArrived(node_id=node, task_id=task_id, result=result)

    def _evaluate(
        self,
        node: str,
        task_id: str,
        server_round: int,
        params: Params,
        config: Mapping[str, float],
    ) -> Event:
        n, metrics = self.sites[node].evaluate(params)
        try:
            check_reported(num_examples=n, metrics=metrics, training=False)
        except InvalidUpdate as exc:
            return ResultRejected(node_id=node, task_id=task_id, reason=str(exc))
        result = EvaluateResult(node_id=node, num_examples=n, metrics=metrics)
        return ResultArrived(node_id=node, task_id=task_id, result=result)

    def next_event(self, timeout_s: float) -> Event | None:
        return self._work.popleft()() if self._work else None

    def fetch_initial_params(self, timeout_s: float) -> Params:
        return next(iter(self.sites.values())).initial_params()

    def close(self) -> None:
        self._work.clear()
