"""Aggregation strategies, one per module, chosen by name from :data:`STRATEGIES`."""

from fedops.core.strategies.fedavg import FedAvg
from fedops.core.strategies.fedavgm import FedAvgM
from fedops.core.strategies.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from fedops.core.strategies.fedprox import FedProx
from fedops.core.strategies.hooks import (
    ClientConfigStrategy,
    ClientInfo,
    FitMetricsStrategy,
    client_fit_configs,
    fit_metrics,
)
from fedops.core.strategies.protocol import (
    StatefulStrategy,
    Strategy,
    load_strategy_state,
    strategy_state,
)
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
    "ClientConfigStrategy",
    "ClientInfo",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedOpt",
    "FedProx",
    "FedYogi",
    "FitMetricsStrategy",
    "Krum",
    "Median",
    "MultiKrum",
    "StatefulStrategy",
    "Strategy",
    "TrimmedMean",
    "build_strategy",
    "client_fit_configs",
    "fit_metrics",
    "load_strategy_state",
    "options_of",
    "readers",
    "register_strategy",
    "strategy_state",
]
