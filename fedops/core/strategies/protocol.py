"""The strategy seam: what the round driver asks of an aggregation algorithm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from fedops.core.params import Params
from fedops.core.results import EvaluateResult, FitResult


class Strategy(Protocol):
    """Decides what clients are told and how their results become a model.

    Implementations are pure: no I/O, and the same inputs give the same outputs. A
    strategy that keeps server state across rounds (a server optimizer's moments:
    FedAvgM, FedAdam, ...) is a function of its inputs and that state, and exposes
    it through the two OPTIONAL methods of :class:`StatefulStrategy`, so a run can
    checkpoint it and a resumed run continue exactly. A strategy without them is
    stateless; :func:`strategy_state` and :func:`load_strategy_state` treat it as
    having the empty state ``{}``.
    """

    @property
    def name(self) -> str:
        """The strategy's registry name (read-only, so frozen dataclasses qualify)."""
        ...

    def fit_config(self, server_round: int) -> dict[str, float]:
        """Hyperparameters sent to every client selected for training."""
        ...

    def aggregate_fit(
        self, server_round: int, current: Params, results: Sequence[FitResult]
    ) -> Params:
        """Turn the round's accepted results into the next global model."""
        ...

    def aggregate_evaluate(
        self, server_round: int, results: Sequence[EvaluateResult]
    ) -> dict[str, float]:
        """Summarise the clients' evaluations of the global model."""
        ...


@runtime_checkable
class StatefulStrategy(Strategy, Protocol):
    """A :class:`Strategy` with server state, checkpointable without pickle."""

    def state(self) -> dict[str, np.ndarray]:
        """The state as flat names -> numpy arrays (e.g. ``m.<param>``, ``v.<param>``, a 0-d
        ``step``): copies, writable as tensors (safetensors). A stateless strategy: ``{}``."""
        ...

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from what :meth:`state` returned (``{}``: start afresh); raise
        :class:`ValueError`, changing nothing, for names or shapes it cannot use."""
        ...


def strategy_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """``strategy.state()``, or ``{}`` for a strategy without state."""
    if isinstance(strategy, StatefulStrategy):
        return strategy.state()
    return {}


def load_strategy_state(strategy: Strategy, state: Mapping[str, np.ndarray]) -> None:
    """``strategy.load_state(state)``; a strategy without state accepts only ``{}``."""
    if isinstance(strategy, StatefulStrategy):
        strategy.load_state(state)
    elif state:
        raise ValueError(
            f"strategy {strategy.name!r} keeps no state, but was given {sorted(state)[:5]}"
        )
