"""The points where a feature joins a round, so that a new feature is a plug-in, not a branch.

A round is a fixed pipeline: wait for nodes → pick the cohort → fit → aggregate
→ (commit what was spent) → evaluate → metrics → commit. The driver
(:mod:`fedops.runtime.driver`) runs it with plain defaults; every feature that
changes a round (DP, SecAgg+, monitoring, an admin's start and stop, the
coordinator's own evaluation) is a :class:`RoundPlugin` that overrides the
hooks it needs and inherits the rest, which change nothing.

Three hooks *replace* a step rather than add to it: :meth:`RoundPlugin.sample`
(DP samples from a CSPRNG), :meth:`RoundPlugin.run_fit` (SecAgg+ replaces
the plain fit phase) and :meth:`RoundPlugin.aggregate` (central DP wraps the
strategy). At most one plug-in of a round may replace each; the driver
refuses two, so no feature silently overrides another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedops.core.params import Params
from fedops.core.results import EvaluateResult, FitResult, StageResult
from fedops.core.strategies.protocol import Strategy
from fedops.core.train_settings import TrainPlan, TrainSettings
from fedops.runtime.store import Participant, RunStore
from fedops.runtime.transport import Transport


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverConfig:
    rounds: int
    min_clients: int = 1
    clients_per_round: int | None = None
    round_timeout_s: float = 300.0
    join_timeout_s: float = 600.0
    seed: int = 0
    #: fewer accepted updates than this abort the round: the model stays as it was
    min_fit_results: int = 1
    #: how sites train, round by round: every fit task carries ``train.at(round)``
    #: (None: the tasks carry none, for callers driving sites that train as they are built)
    train: TrainPlan | None = None

    def train_at(self, server_round: int) -> TrainSettings | None:
        """The training settings of this round's fit tasks."""
        return self.train.at(server_round) if self.train is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundContext:
    """What every step of a round may use: the run's parts, not its features."""

    transport: Transport
    strategy: Strategy
    config: DriverConfig
    store: RunStore
    site_names: Callable[[str], str]


@dataclass(slots=True, kw_only=True)
class FitOutcome:
    """What the fit phase hands the aggregation, with or without secure aggregation."""

    results: list[FitResult]  # what the strategy aggregates
    reported: list[FitResult | StageResult]  # whose training metrics are averaged
    participants: list[Participant]
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationAsk:
    """What the round's evaluation phase asks of the sites, once every plug-in had its say."""

    #: the sites' own losses, accuracies and example counts go into the round's metrics
    release_site_metrics: bool = True
    #: the drift and fairness spec the sites report against (None: no reports)
    monitor: Any = None

    @property
    def wanted(self) -> bool:
        return self.release_site_metrics or self.monitor is not None


class RoundPlugin:
    """A feature of the round; each hook's default leaves the round as it was."""

    def before_round(self, ctx: RoundContext, server_round: int) -> None:
        """Before anything of the round happens (e.g. an admin's hold or stop)."""

    def eligible(self, ctx: RoundContext, server_round: int, nodes: list[str]) -> list[str]:
        """The connected nodes this feature lets take part (e.g. drop flagged sites)."""
        return nodes

    def sample(
        self, ctx: RoundContext, server_round: int, nodes: list[str], params: Params
    ) -> list[str] | None:
        """Replaces the seeded uniform cohort when not None."""
        return None

    def fit_config(self, ctx: RoundContext, server_round: int) -> Mapping[str, float]:
        """Keys this feature adds to what every selected site trains with (the run owns
        them: a strategy's per-client fit config may not change them)."""
        return {}

    def client_config_refusal(self) -> str:
        """Why this feature forbids a fit config per client ("": it allows one), e.g. one
        that could single a site out of a secure sum (see
        :class:`~fedops.core.strategies.hooks.ClientConfigStrategy`)."""
        return ""

    def run_fit(
        self,
        ctx: RoundContext,
        server_round: int,
        selected: Sequence[str],
        params: Params,
        fit_config: Mapping[str, float],
    ) -> FitOutcome | None:
        """Replaces the plain fit phase when not None."""
        return None

    def aggregate(
        self, ctx: RoundContext, server_round: int, params: Params, fit: FitOutcome
    ) -> tuple[Params, str] | None:
        """Replaces the quorum-checked strategy: the new model and why the round aborted."""
        return None

    def aggregated(self, ctx: RoundContext, server_round: int, fit: FitOutcome) -> None:
        """After aggregation and before the new model leaves for evaluation."""

    def evaluation(self, ask: EvaluationAsk) -> EvaluationAsk:
        """What this feature changes in the evaluation phase's request."""
        return ask

    def metrics(
        self,
        ctx: RoundContext,
        server_round: int,
        params: Params,
        evaluated: Sequence[EvaluateResult] | None,
    ) -> Mapping[str, Any]:
        """Keys this feature adds to the round's metrics (``evaluated``: None if none ran)."""
        return {}

    def committed(self, ctx: RoundContext, server_round: int) -> None:
        """After the round is in the store."""


#: the hooks that replace a step: at most one plug-in of a round may override each
REPLACING_HOOKS = ("sample", "run_fit", "aggregate")


def replacing(plugins: Sequence[RoundPlugin], hook: str) -> RoundPlugin | None:
    """The one plug-in that replaces ``hook``'s step, if any; two is a wiring error."""
    found = [p for p in plugins if getattr(type(p), hook) is not getattr(RoundPlugin, hook)]
    if len(found) > 1:
        names = ", ".join(type(p).__name__ for p in found)
        raise ValueError(f"two round plug-ins replace the {hook} step: {names}")
    return found[0] if found else None


class GlobalEvaluation(RoundPlugin):
    """The coordinator's own evaluation of each new model, on data it holds."""

    def __init__(self, evaluate: Callable[[Params], Mapping[str, float]]) -> None:
        self.evaluate = evaluate

    def metrics(
        self,
        ctx: RoundContext,
        server_round: int,
        params: Params,
        evaluated: Sequence[EvaluateResult] | None,
    ) -> Mapping[str, Any]:
        glob = self.evaluate(params)
        return {"global_loss": float(glob["loss"]), "global_accuracy": float(glob["accuracy"])}
