"""The strategy seam: what the round driver asks of an aggregation algorithm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fedops.core.params import Params
from fedops.core.results import EvaluateResult, FitResult


class Strategy(Protocol):
    """Decides what clients are told and how their results become a model.

    Implementations are pure: same inputs, same outputs, no I/O.
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
