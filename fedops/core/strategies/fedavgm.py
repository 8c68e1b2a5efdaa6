"""FedAvgM (Hsu, Qi, Brown 2019, "Measuring the Effects of Non-Identical Data
Distribution for Federated Visual Classification"): FedAvg with server momentum.

With the pseudo-gradient ``Δ_t = mean_t - x_t`` (the example-weighted mean of
the client models minus the model, as FedAvg weighs them)::

    u_t = β u_{t-1} + Δ_t        (u_{-1} = 0)
    x_{t+1} = x_t + η u_t

This is heavy-ball momentum without dampening (Hsu et al.'s ``v ← βv + Δw``,
with Δ's sign taken so that ``β = 0, η = 1`` is exactly FedAvg). Steady updates
are amplified up to ``η / (1 - β)``: lower η when raising β. Defaults: ``β = 0.9``
(``server_momentum``), ``η = 1.0`` (``server_lr``). Integer tensors (counters)
take the rounded weighted mean and carry no momentum.

The momentum buffer is the strategy's state (:meth:`FedAvgM.state`):
``m.<param>`` (float64) and ``step``, the number of updates applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedops.core.strategies.server_state import Buffers, ServerOptimizer


@dataclass(slots=True, kw_only=True)
class FedAvgM(ServerOptimizer):
    """FedAvg with server momentum ``momentum`` (β) and learning rate ``server_lr`` (η).

    Not frozen: the momentum buffer changes every round. Two instances compare
    equal when their hyperparameters are equal, whatever their state.

    Example:
        >>> from fedops.core.results import FitResult
        >>> a = FitResult(node_id="a", params={"w": np.array([2.0])}, num_examples=1)
        >>> opt = FedAvgM(momentum=0.5)
        >>> x = opt.aggregate_fit(1, {"w": np.array([0.0])}, [a])  # u = 2, x = 0 + 2
        >>> opt.aggregate_fit(2, x, [a])["w"]  # Δ = 0, u = 0.5 * 2, x = 2 + 1
        array([3.])
    """

    #: the ``strategy.*`` settings it reads -> its keyword (see strategies.registry)
    options: ClassVar[Mapping[str, str]] = {
        "server_lr": "server_lr",
        "server_momentum": "momentum",
    }
    KINDS: ClassVar[tuple[str, ...]] = ("m",)
    name: str = "fedavgm"
    server_lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        ServerOptimizer.__post_init__(self)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def _update(
        self, deltas: Mapping[str, np.ndarray], previous: Buffers | None
    ) -> tuple[dict[str, np.ndarray], Buffers]:
        fresh = {n: np.zeros_like(d) for n, d in deltas.items()}
        old = previous["m"] if previous is not None else fresh
        u = {name: self.momentum * old[name] + d for name, d in deltas.items()}
        return {name: self.server_lr * b for name, b in u.items()}, {"m": u}
