"""FedProx (Li et al. 2020, MLSys): FedAvg plus a proximal term on the clients.

The server side is FedAvg; the difference is that every client minimises
``loss + mu/2 * ||w - w_global||^2``, which keeps heterogeneous clients (and
stragglers doing partial work) from drifting away from the global model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from fedops.core.strategies.fedavg import FedAvg


@dataclass(frozen=True, slots=True, kw_only=True)
class FedProx(FedAvg):
    """FedAvg aggregation; tells clients the proximal coefficient ``mu``."""

    options: ClassVar[Mapping[str, str]] = {**FedAvg.options, "mu": "mu"}
    name: str = "fedprox"
    mu: float = 0.01

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ValueError(f"FedProx mu must be >= 0, got {self.mu}")

    def fit_config(self, server_round: int) -> dict[str, float]:
        return {"proximal_mu": float(self.mu)}
