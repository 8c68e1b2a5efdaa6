"""FedAvg (McMahan et al. 2017): the example-weighted mean of client models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

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
    """

    #: the ``strategy.*`` settings it reads -> its keyword (see strategies.registry)
    options: ClassVar[Mapping[str, str]] = {}
    name: str = "fedavg"

    def fit_config(self, server_round: int) -> dict[str, float]:
        return {}

    def aggregate_fit(
        self, server_round: int, current: Params, results: Sequence[FitResult]
    ) -> Params:
        if not results:
            return current
        return weighted_average([(r.params, float(r.num_examples)) for r in results])

    def aggregate_evaluate(
        self, server_round: int, results: Sequence[EvaluateResult]
    ) -> dict[str, float]:
        return weighted_metrics(results)
