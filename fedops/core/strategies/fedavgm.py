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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from fedops.core.params import Params
from fedops.core.results import EvaluateResult, FitResult, weighted_metrics
from fedops.core.strategies.server_state import (
    Buffers,
    apply_step,
    check_buffers_fit,
    pack_state,
    pseudo_gradient,
    unpack_state,
)

_KINDS = ("m",)


@dataclass(slots=True, kw_only=True)
class FedAvgM:
    """FedAvg with server momentum ``momentum`` (β) and learning rate ``server_lr`` (η).

    Not frozen: the momentum buffer changes every round. Two instances compare
    equal when their hyperparameters are equal, whatever their state.

    Example:
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
    name: str = "fedavgm"
    server_lr: float = 1.0
    momentum: float = 0.9
    _buffers: Buffers = field(
        default_factory=lambda: {kind: {} for kind in _KINDS},
        init=False,
        repr=False,
        compare=False,
    )
    _step: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.server_lr) and self.server_lr > 0):
            raise ValueError(f"server_lr must be a number > 0, got {self.server_lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def fit_config(self, server_round: int) -> dict[str, float]:
        return {}

    def aggregate_fit(
        self, server_round: int, current: Params, results: Sequence[FitResult]
    ) -> Params:
        if not results:
            return current
        deltas, counters = pseudo_gradient(current, results)
        old = self._buffers["m"]
        if self._step == 0 and not old:
            old = {name: np.zeros_like(d) for name, d in deltas.items()}
        else:
            check_buffers_fit(self._buffers, deltas, self.name)
        u = {name: self.momentum * old[name] + d for name, d in deltas.items()}
        out = apply_step(current, {name: self.server_lr * b for name, b in u.items()}, counters)
        self._buffers, self._step = {"m": u}, self._step + 1
        return out

    def aggregate_evaluate(
        self, server_round: int, results: Sequence[EvaluateResult]
    ) -> dict[str, float]:
        return weighted_metrics(results)

    def state(self) -> dict[str, np.ndarray]:
        """The momentum buffer, ``m.<param>`` (float64), and ``step`` (0-d int64): copies."""
        return pack_state(self._buffers, self._step)

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from ``state`` (what :meth:`state` returned; ``{}``: start afresh).

        Raises :class:`ValueError`, changing nothing, for an unknown or missing entry
        (a FedAdam state, with its ``v.*``, is refused) or a non-finite value. The buffer
        is checked against the model's tensors at the next :meth:`aggregate_fit`, which
        raises before changing anything if they differ.
        """
        self._buffers, self._step = unpack_state(state, _KINDS, self.name)
