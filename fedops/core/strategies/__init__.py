"""Aggregation strategies, one per module, chosen by name from :data:`STRATEGIES`."""

from fedops.core.strategies.base import Strategy
from fedops.core.strategies.fedavg import FedAvg
from fedops.core.strategies.fedprox import FedProx
from fedops.core.strategies.robust import ROBUST_STRATEGIES, Krum, Median, MultiKrum, TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "trimmed_mean": TrimmedMean,
    "median": Median,
    "krum": Krum,
    "multi_krum": MultiKrum,
}

__all__ = [
    "ROBUST_STRATEGIES",
    "STRATEGIES",
    "FedAvg",
    "FedProx",
    "Krum",
    "Median",
    "MultiKrum",
    "Strategy",
    "TrimmedMean",
]
