"""Strategies by name: the built-ins and any a user registers.

A strategy class lists the run settings it reads in ``options``: the
``strategy.*`` key (in :mod:`fedops.runtime.schema`) -> its constructor keyword.
So a new option is a field in the schema and a keyword in the strategy, and the
CLI flag, the Hydra key and the rule that refuses it under a strategy that does
not read it all follow from those two. A setting left at ``None`` is not passed:
the strategy keeps its own default (``strategy.server_lr``: 1 for FedAvg, 0.01
for FedAdam).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedops.core.strategies.fedavg import FedAvg
from fedops.core.strategies.fedavgm import FedAvgM
from fedops.core.strategies.fedopt import FedAdagrad, FedAdam, FedYogi
from fedops.core.strategies.fedprox import FedProx
from fedops.core.strategies.protocol import Strategy
from fedops.core.strategies.robust import Krum, Median, MultiKrum, TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "trimmed_mean": TrimmedMean,
    "median": Median,
    "krum": Krum,
    "multi_krum": MultiKrum,
    "fedavgm": FedAvgM,
    "fedadagrad": FedAdagrad,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
}
BUILTIN_STRATEGIES = tuple(STRATEGIES)

_METHODS = ("fit_config", "aggregate_fit", "aggregate_evaluate")


def options_of(cls: type[Strategy]) -> Mapping[str, str]:
    """``strategy.*`` key -> constructor keyword, of the settings ``cls`` reads."""
    options: Mapping[str, str] = getattr(cls, "options", {})
    return options


def register_strategy(name: str, cls: type[Strategy]) -> type[Strategy]:
    """Make ``cls`` available as ``strategy.name=NAME`` (and return it: usable as a decorator
    through ``functools.partial``).

    ``cls`` is called with the keywords its ``options`` mapping names (none by
    default) and must have the :class:`Strategy` methods. A built-in name, or a
    name already taken by another class, is refused: a run must not change
    meaning because some module was imported first.
    """
    module, _, attr = name.rpartition(":")
    dotted = all(part.isidentifier() for part in module.split(".")) if module else True
    if not (attr.isidentifier() and dotted):
        raise ValueError(f"strategy name must be an identifier or module:Class, got {name!r}")
    missing = [m for m in _METHODS if not callable(getattr(cls, m, None))]
    if not isinstance(cls, type) or missing:
        raise TypeError(f"{cls!r} is not a strategy class: it lacks {', '.join(missing)}")
    taken = STRATEGIES.get(name)
    if taken is not None and (name in BUILTIN_STRATEGIES or taken is not cls):
        raise ValueError(f"strategy {name!r} is already registered ({taken.__qualname__})")
    STRATEGIES[name] = cls
    return cls


def build_strategy(name: str, options: Mapping[str, Any]) -> Strategy:
    """The strategy registered as ``name``, given the settings it reads from ``options``
    (those that are not ``None``: for those it keeps its own default)."""
    cls = STRATEGIES[name]
    return cls(
        **{
            keyword: options[key]
            for key, keyword in options_of(cls).items()
            if options[key] is not None
        }
    )


def readers(option: str) -> tuple[str, ...]:
    """The registered strategies that read ``option``; every other ignores it."""
    return tuple(name for name, cls in STRATEGIES.items() if option in options_of(cls))
