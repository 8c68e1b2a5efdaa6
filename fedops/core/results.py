"""What clients send back: values shared by strategies, runtimes and stores."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedops.core.monitoring.profile import SiteReport
from fedops.core.params import InvalidUpdate, Params

MAX_NUM_EXAMPLES = 1 << 40


class AggregationRefused(ValueError):
    """A strategy will not aggregate this round's results (e.g. too few for the rule to
    bound one site's influence); the runtime aborts the round and keeps the model."""


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


def median_metrics(
    results: Sequence[FitResult | EvaluateResult | StageResult],
) -> dict[str, float]:
    """The unweighted median across sites of every metric that all results report.

    For robust strategies: ``num_examples`` is the site's own claim, so no site's
    count may move the summary; a minority of sites cannot move a median far.
    """
    usable = [r for r in results if r.num_examples > 0]
    if not usable:
        return {}
    names = set(usable[0].metrics)
    for r in usable[1:]:
        names &= set(r.metrics)
    return {
        name: float(statistics.median(float(r.metrics[name]) for r in usable))
        for name in sorted(names)
    }


def check_reported(*, num_examples: int, metrics: Mapping[str, float], training: bool) -> None:
    """Refuse example counts and metrics no honest client reports.

    A training result must rest on at least one example (FedAvg weights by
    it); every metric must be finite, and an evaluation's ``accuracy`` a
    fraction in [0, 1]. Both runtimes apply the same rule.
    """
    low = 1 if training else 0
    if not low <= num_examples <= MAX_NUM_EXAMPLES:
        raise InvalidUpdate(
            f"num_examples {num_examples} is out of range [{low}, {MAX_NUM_EXAMPLES}]"
        )
    if not all(map(math.isfinite, metrics.values())):  # rare: sorted only then
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
        raise InvalidUpdate(f"metrics {bad} are not finite")
    # ``in`` first: a protobuf map's lookup of a missing key may add it
    accuracy = metrics["accuracy"] if not training and "accuracy" in metrics else None
    if accuracy is not None and not 0.0 <= accuracy <= 1.0:
        raise InvalidUpdate(f"metric 'accuracy' is {accuracy:g}; an accuracy is in [0, 1]")
