"""What clients send back: values shared by strategies, runtimes and stores."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedops.core.monitoring.profile import SiteReport
from fedops.core.params import InvalidUpdate, Params

MAX_NUM_EXAMPLES = 1 << 40


@dataclass(frozen=True, slots=True, kw_only=True)
class FitResult:
    """A client's locally trained parameters and how many examples shaped them."""

    node_id: str
    params: Params
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluateResult:
    """A client's evaluation of the global model on its own test split.

    ``report`` is the site's drift and fairness answer, when monitoring asked for one.
    """

    node_id: str
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    report: SiteReport | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StageResult:
    """A client's answer to one secure-aggregation stage (a ``secagg.messages`` reply).

    The masked-input stage also reports, in the clear as without secure
    aggregation, how many examples it trained on and its training metrics.
    """

    node_id: str
    reply: object
    num_examples: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)


def weighted_metrics(
    results: Sequence[FitResult | EvaluateResult | StageResult],
) -> dict[str, float]:
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


def check_reported(*, num_examples: int, metrics: Mapping[str, float], training: bool) -> None:
    """Refuse example counts and metrics no honest client reports.

    A training result must rest on at least one example (FedAvg weights by
    it); every metric must be finite. Both runtimes apply the same rule.
    """
    low = 1 if training else 0
    if not low <= num_examples <= MAX_NUM_EXAMPLES:
        raise InvalidUpdate(
            f"num_examples {num_examples} is out of range [{low}, {MAX_NUM_EXAMPLES}]"
        )
    if all(map(math.isfinite, metrics.values())):  # nearly always: no sort, no generator
        return
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        raise InvalidUpdate(f"metrics {bad} are not finite")
