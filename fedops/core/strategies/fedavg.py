"""FedAvg (McMahan et al. 2017): the example-weighted mean of client models.

With a server learning rate η (Reddi et al. 2021, FedAvg as server SGD on the
mean update) the model moves ``x + η (mean - x)``; η = 1 is plain FedAvg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedops.core.params import Params, weighted_average
from fedops.core.results import EvaluateResult, FitResult, weighted_metrics


@dataclass(frozen=True, slots=True, kw_only=True)
class FedAvg:
    """Federated averaging, weighted by each client's number of examples.

    Example:
        >>> import numpy as np
        >>> a = FitResult(node_id="a", params={"w": np.array([0.0])}, num_examples=1)
        >>> b = FitResult(node_id="b", params={"w": np.array([3.0])}, num_examples=2)
        >>> FedAvg().aggregate_fit(1, {"w": np.array([9.0])}, [a, b])["w"]
        array([2.])
        >>> FedAvg(server_lr=0.5).aggregate_fit(1, {"w": np.array([9.0])}, [a, b])["w"]
        array([5.5])
    """

    #: the ``strategy.*`` settings it reads -> its keyword (see strategies.registry)
    options: ClassVar[Mapping[str, str]] = {"server_lr": "server_lr"}
    name: str = "fedavg"
    server_lr: float = 1.0

    def __post_init__(self) -> None:
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr}")

    def fit_config(self, server_round: int) -> dict[str, float]:
        return {}

    def aggregate_fit(
        self, server_round: int, current: Params, results: Sequence[FitResult]
    ) -> Params:
        if not results:
            return current
        mean = weighted_average([(r.params, float(r.num_examples)) for r in results])
        if self.server_lr == 1.0:
            return mean
        return {name: _step(current[name], value, self.server_lr) for name, value in mean.items()}

    def aggregate_evaluate(
        self, server_round: int, results: Sequence[EvaluateResult]
    ) -> dict[str, float]:
        return weighted_metrics(results)


def _step(current: np.ndarray, mean: np.ndarray, lr: float) -> np.ndarray:
    """``current + lr (mean - current)`` for float tensors; counters take the mean."""
    if mean.dtype.kind != "f":
        return mean
    moved: np.ndarray = current.astype(np.float64) + lr * (mean.astype(np.float64) - current)
    with np.errstate(over="ignore"):  # past the dtype's range: Inf, which the driver refuses
        return moved.astype(mean.dtype)
