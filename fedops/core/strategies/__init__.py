"""Aggregation strategies, one per module, chosen by name from :data:`STRATEGIES`."""

from fedops.core.strategies.base import Strategy
from fedops.core.strategies.fedavg import FedAvg
from fedops.core.strategies.fedprox import FedProx

STRATEGIES: dict[str, type[FedAvg]] = {"fedavg": FedAvg, "fedprox": FedProx}

__all__ = ["STRATEGIES", "FedAvg", "FedProx", "Strategy"]
