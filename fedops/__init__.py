"""fedops: federated learning with privacy built in.

The names a user's code needs are importable from ``fedops`` itself (loaded on
first use, so ``import fedops`` stays cheap): :class:`Task` (what a federation
trains), :class:`Strategy` and the built-in strategies, :func:`register_strategy`,
and :func:`simulate`, which runs ``fedops simulate OVERRIDES`` in this process.

A strategy of your own, registered and run on the bundled digits data:

    >>> import tempfile
    >>> from dataclasses import dataclass
    >>> import fedops
    >>> @dataclass(frozen=True)
    ... class HalfStep(fedops.FedAvg):
    ...     '''FedAvg that moves the model only half way to the clients' mean.'''
    ...     name: str = "half_step"
    ...     def aggregate_fit(self, server_round, current, results):
    ...         mean = fedops.FedAvg.aggregate_fit(self, server_round, current, results)
    ...         return {k: (current[k] + mean[k]) / 2 for k in current}
    >>> fedops.register_strategy("half_step", HalfStep) is HalfStep
    True
    >>> summary = fedops.simulate(
    ...     "strategy.name=half_step", "rounds=2", "simulation.num_clients=4",
    ...     run_dir=tempfile.mkdtemp(),
    ... )
    >>> summary["status"], summary["rounds_completed"], summary["strategy"]
    ('completed', 2, 'half_step')
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "Task": "fedops.tasks.contract",
    "TaskError": "fedops.tasks.contract",
    "Strategy": "fedops.core.strategies",
    "FedAvg": "fedops.core.strategies",
    "FedProx": "fedops.core.strategies",
    "FedAvgM": "fedops.core.strategies",
    "FedAdagrad": "fedops.core.strategies",
    "FedAdam": "fedops.core.strategies",
    "FedYogi": "fedops.core.strategies",
    "TrimmedMean": "fedops.core.strategies",
    "Median": "fedops.core.strategies",
    "Krum": "fedops.core.strategies",
    "MultiKrum": "fedops.core.strategies",
    "register_strategy": "fedops.core.strategies",
    "FitResult": "fedops.core.results",
    "EvaluateResult": "fedops.core.results",
    "ConfigError": "fedops.runtime.rules",
    "simulate": "fedops.config.hydra_app",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fedops' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
