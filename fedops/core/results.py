"""What clients send back: values shared by strategies, runtimes and stores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedops.core.params import Params


@dataclass(frozen=True, slots=True, kw_only=True)
class FitResult:
    """A client's locally trained parameters and how many examples shaped them."""

    node_id: str
    params: Params
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluateResult:
    """A client's evaluation of the global model on its own test split."""

    node_id: str
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


def weighted_metrics(results: Sequence[FitResult | EvaluateResult]) -> dict[str, float]:
    """Example-weighted mean of every metric that all results report."""
    usable = [r for r in results if r.num_examples > 0]
    if not usable:
        return {}
    total = sum(r.num_examples for r in usable)
    names = set(usable[0].metrics)
    for r in usable[1:]:
        names &= set(r.metrics)
    return {
        name: sum(float(r.metrics[name]) * r.num_examples for r in usable) / total
        for name in sorted(names)
    }
