"""Aggregation strategies, one per module, chosen by name from :data:`STRATEGIES`."""

from fedops.core.strategies.fedavg import FedAvg
from fedops.core.strategies.fedprox import FedProx
from fedops.core.strategies.protocol import Strategy
from fedops.core.strategies.registry import (
    BUILTIN_STRATEGIES,
    STRATEGIES,
    build_strategy,
    options_of,
    readers,
    register_strategy,
)
from fedops.core.strategies.robust import ROBUST_STRATEGIES, Krum, Median, MultiKrum, TrimmedMean

__all__ = [
    "BUILTIN_STRATEGIES",
    "ROBUST_STRATEGIES",
    "STRATEGIES",
    "FedAvg",
    "FedProx",
    "Krum",
    "Median",
    "MultiKrum",
    "Strategy",
    "TrimmedMean",
    "build_strategy",
    "options_of",
    "readers",
    "register_strategy",
]
