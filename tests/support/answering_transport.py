"""A transport whose every node answers at once, for driver tests with scripted sites."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping

import numpy as np

from fedops.core.results import EvaluateResult, FitResult
from fedops.core.rounds import Phase, ResultArrived


class AnsweringTransport:
    """``fit[node] -> (value, num_examples)``: the node's update has ``value`` in every
    tensor; ``evals[node] -> (metrics, num_examples)``: its evaluation."""

    def __init__(
        self,
        fit: Mapping[str, tuple[float, int]],
        evals: Mapping[str, tuple[dict[str, float], int]],
    ) -> None:
        self.fit, self.evals = fit, evals
        self.events: deque[ResultArrived] = deque()

    def wait_for_nodes(self, count, timeout_s):
        return sorted(self.fit)

    def available_nodes(self):
        return sorted(self.fit)

    def dispatch(self, server_round, nodes, instruction):
        tasks = {n: f"{n}/{server_round}/{instruction.phase}" for n in nodes}
        for n in nodes:
            result: FitResult | EvaluateResult
            if instruction.phase is Phase.FIT:
                value, count = self.fit[n]
                new = {k: np.full_like(v, value) for k, v in instruction.params.items()}
                result = FitResult(node_id=n, params=new, num_examples=count)
            else:
                metrics, count = self.evals[n]
                result = EvaluateResult(node_id=n, num_examples=count, metrics=dict(metrics))
            self.events.append(ResultArrived(node_id=n, task_id=tasks[n], result=result))
        return tasks

    def next_event(self, timeout_s):
        if self.events:
            return self.events.popleft()
        time.sleep(min(timeout_s, 0.005))
        return None
