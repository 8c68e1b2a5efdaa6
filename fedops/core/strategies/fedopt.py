"""FedAdagrad, FedAdam and FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization",
ICLR, Algorithm 2): an adaptive optimizer on the server.

Each round the server takes the example-weighted mean of the client models (as
FedAvg does) and treats its difference from the model as a pseudo-gradient
``Δ_t = mean_t - x_t``; then, per coordinate::

    m_t = β1 m_{t-1} + (1 - β1) Δ_t
    v_t = v_{t-1} + Δ_t²                                        (FedAdagrad)
    v_t = β2 v_{t-1} + (1 - β2) Δ_t²                            (FedAdam)
    v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)          (FedYogi)
    x_{t+1} = x_t + η m_t / (√v_t + τ)

Conventions (Algorithm 2 leaves the first one open, within a bound):

- **Initial moments**: ``m_{-1} = 0`` and ``v_{-1} = τ²``, the smallest value
  Algorithm 2 allows (it asks for ``v_{-1} ≥ τ²``).
- **No bias correction**: Algorithm 2 has none (unlike Adam's ``1 - β^t``
  terms), and neither has this implementation; ``β1`` damps the first rounds' steps.
- ``t`` counts the updates applied (``step`` in the state), not the round
  number: a round without results leaves the model and the moments as they were.

Defaults: ``β1 = 0.9``, ``β2 = 0.99``, ``τ = 1e-3`` (the paper's), and a server
learning rate ``η = 0.01`` for FedAdam and FedYogi, ``η = 0.1`` for FedAdagrad
(common starting points: the paper tunes η per task, and a step of size ~η per
coordinate is what FedAdam's first round takes). Integer tensors (counters)
take the rounded weighted mean and are not optimized.

The moments are the strategy's state (:meth:`FedOpt.state`, :meth:`FedOpt.load_state`):
``m.<param>``, ``v.<param>`` and ``step``, so a resumed run can continue exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedops.core.strategies.server_state import Buffers, ServerOptimizer


def _check_unit(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


@dataclass(slots=True, kw_only=True)
class FedOpt(ServerOptimizer):
    """Algorithm 2's common part; :class:`FedAdagrad`, :class:`FedAdam` and :class:`FedYogi`
    differ only in how the second moment ``v`` is updated (:meth:`second_moment`).

    Not frozen: the moments change every round. Two instances compare equal when
    their hyperparameters are equal, whatever their state.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("m", "v")
    name: str = "fedopt"
    server_lr: float = 0.01
    beta1: float = 0.9
    tau: float = 1e-3

    def __post_init__(self) -> None:
        ServerOptimizer.__post_init__(self)
        _check_unit("beta1", self.beta1)
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be a number > 0, got {self.tau}")

    def second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        """``v_t`` from ``v_{t-1}`` and ``Δ_t²``."""
        raise NotImplementedError(f"{type(self).__name__} does not define its second moment")

    def _update(
        self, deltas: Mapping[str, np.ndarray], previous: Buffers | None
    ) -> tuple[dict[str, np.ndarray], Buffers]:
        if previous is None:  # m_{-1} = 0, v_{-1} = τ²
            old_m = {name: np.zeros_like(d) for name, d in deltas.items()}
            old_v = {name: np.full_like(d, self.tau**2) for name, d in deltas.items()}
        else:
            old_m, old_v = previous["m"], previous["v"]
        m = {name: self.beta1 * old_m[name] + (1 - self.beta1) * d for name, d in deltas.items()}
        v = {name: self.second_moment(old_v[name], d * d) for name, d in deltas.items()}
        steps = {name: self.server_lr * m[name] / (np.sqrt(v[name]) + self.tau) for name in deltas}
        return steps, {"m": m, "v": v}


@dataclass(slots=True, kw_only=True)
class FedAdagrad(FedOpt):
    """FedAdagrad: ``v_t = v_{t-1} + Δ_t²`` (η = 0.1, β1 = 0.9, τ = 1e-3 by default).

    Example:
        >>> from fedops.core.results import FitResult
        >>> a = FitResult(node_id="a", params={"w": np.array([1.0])}, num_examples=1)
        >>> opt = FedAdagrad(server_lr=0.1, beta1=0.0, tau=1e-3)
        >>> # Δ = 1, v = τ² + 1, x = 0.1 * 1 / (√(1 + 1e-6) + 1e-3)
        >>> round(float(opt.aggregate_fit(1, {"w": np.array([0.0])}, [a])["w"][0]), 6)
        0.0999
    """

    options: ClassVar[Mapping[str, str]] = {
        "server_lr": "server_lr",
        "beta1": "beta1",
        "tau": "tau",
    }
    name: str = "fedadagrad"
    server_lr: float = 0.1

    def second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        grown: np.ndarray = v + delta_sq
        return grown


@dataclass(slots=True, kw_only=True)
class FedAdam(FedOpt):
    """FedAdam: ``v_t = β2 v_{t-1} + (1 - β2) Δ_t²`` (η = 0.01, β1 = 0.9, β2 = 0.99,
    τ = 1e-3 by default)."""

    options: ClassVar[Mapping[str, str]] = {
        "server_lr": "server_lr",
        "beta1": "beta1",
        "beta2": "beta2",
        "tau": "tau",
    }
    name: str = "fedadam"
    beta2: float = 0.99

    def __post_init__(self) -> None:
        FedOpt.__post_init__(self)
        _check_unit("beta2", self.beta2)

    def second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1 - self.beta2) * delta_sq


@dataclass(slots=True, kw_only=True)
class FedYogi(FedOpt):
    """FedYogi: ``v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)``: ``v`` moves towards
    ``Δ²`` by a step that does not scale with ``v`` itself, so it grows slower than
    FedAdam's after a large update (η = 0.01, β1 = 0.9, β2 = 0.99, τ = 1e-3 by default)."""

    options: ClassVar[Mapping[str, str]] = FedAdam.options
    name: str = "fedyogi"
    beta2: float = 0.99

    def __post_init__(self) -> None:
        FedOpt.__post_init__(self)
        _check_unit("beta2", self.beta2)

    def second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        moved: np.ndarray = v - (1 - self.beta2) * delta_sq * np.sign(v - delta_sq)
        return moved
