"""The round driver: sample, dispatch, collect, aggregate, evaluate, record.

It owns the order of a federated run and nothing else. Clients are behind a
:class:`~fedops.runtime.transport.Transport`, the aggregation rule is a
:class:`~fedops.core.strategies.Strategy`, and every feature that changes a
round (DP, SecAgg+, monitoring, an admin's start and stop) is a
:class:`~fedops.runtime.round_plugin.RoundPlugin`: the driver calls each
plug-in's hooks at fixed points and has no branch of its own per feature.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedops.core.params import InvalidUpdate, Params, check_finite
from fedops.core.results import AggregationRefused, EvaluateResult, FitResult
from fedops.core.rounds import Phase, RoundTracker, sample_clients
from fedops.core.strategies.hooks import (
    ClientConfigStrategy,
    ClientInfo,
    client_fit_configs,
    fit_metrics,
)
from fedops.core.strategies.protocol import Strategy, load_strategy_state, strategy_state
from fedops.runtime.collect import collect
from fedops.runtime.gc_pause import gc_paused
from fedops.runtime.round_plugin import (
    REPLACING_HOOKS,
    DriverConfig,
    EvaluationAsk,
    FitOutcome,
    RoundContext,
    RoundPlugin,
    replacing,
)
from fedops.runtime.store import Participant, RunStore
from fedops.runtime.transport import Instruction, Transport

log = logging.getLogger("fedops.driver")

__all__ = ["DriverConfig", "RoundDriver", "RoundRecord", "RunAborted", "participants_of"]


class RunAborted(RuntimeError):
    """The run cannot go on (e.g. too few clients joined); the message says why."""


@dataclass(slots=True, kw_only=True)
class RoundRecord:
    """One finished round: the metrics line plus who took part."""

    server_round: int
    metrics: dict[str, Any]
    participants: list[Participant] = field(default_factory=list)


def participants_of(tracker: RoundTracker, site_names: Callable[[str], str]) -> list[Participant]:
    """The participants table's rows for one phase: who answered, dropped or was rejected."""
    examples = {r.node_id: r.num_examples for r in tracker.results}
    # per phase and per outcome, not per row: at 100,000 clients each str() adds up
    phase, named = str(tracker.phase), {o: str(o) for o in set(tracker.outcomes.values())}
    reasons = tracker.reasons
    with gc_paused():  # a row per node, all kept: no collections while they pile up
        return [
            Participant(
                phase=phase,
                node_id=node,
                site=site_names(node),
                outcome=named[outcome],
                num_examples=examples.get(node, 0),
                reason=reasons.get(node, ""),
            )
            for node, outcome in tracker.outcomes.items()
        ]


class RoundDriver:
    """Runs rounds over a transport and commits each one to the store.

    Args:
        plugins: the run's features, in the order their metrics appear; at most
            one may replace each of sampling, the fit phase and aggregation.
        site_names: node id -> site name, for the participants table.
        on_round: called after every committed round (progress display).
    """

    def __init__(
        self,
        *,
        transport: Transport,
        strategy: Strategy,
        config: DriverConfig,
        store: RunStore,
        plugins: Sequence[RoundPlugin] = (),
        site_names: Callable[[str], str] = lambda node: node,
        on_round: Callable[[RoundRecord], None] = lambda record: None,
    ) -> None:
        self.ctx = RoundContext(
            transport=transport,
            strategy=strategy,
            config=config,
            store=store,
            site_names=site_names,
        )
        self.plugins = tuple(plugins)
        self.replaced = {hook: replacing(self.plugins, hook) for hook in REPLACING_HOOKS}
        if isinstance(strategy, ClientConfigStrategy):
            for plugin in self.plugins:
                if why := plugin.client_config_refusal():
                    raise ValueError(
                        f"strategy {strategy.name!r} sets a fit config per client "
                        f"(client_fit_config), which this run refuses: {why}"
                    )
        self.on_round = on_round

    def run(self, params: Params, *, start_round: int = 1) -> Params:
        ctx = self.ctx
        for server_round in range(start_round, ctx.config.rounds + 1):
            for plugin in self.plugins:
                plugin.before_round(ctx, server_round)
            params, record = self.run_round(server_round, params)
            with gc_paused():  # the participants table and the audit entry, row by row
                ctx.store.save_round(
                    server_round,
                    params,
                    record.metrics,
                    record.participants,
                    strategy_state=strategy_state(ctx.strategy),
                    strategy=ctx.strategy.name,
                )
                for plugin in self.plugins:
                    plugin.committed(ctx, server_round)
                self.on_round(record)
            del record  # its participants rows are not kept alive through the next round
        return params

    def run_round(self, server_round: int, params: Params) -> tuple[Params, RoundRecord]:
        started = time.monotonic()
        selected = self._select(server_round, params)
        fit = self._fit(server_round, selected, params)
        try:
            with gc_paused():  # a strategy reads every update at once
                params, aborted = self._aggregate(server_round, params, fit)
        finally:  # e.g. DP commits what it spent before the model leaves, even if a strategy
            for plugin in self.plugins:  # failed after a release or an unmasked sum
                plugin.aggregated(self.ctx, server_round, fit)
        ask = EvaluationAsk()
        for plugin in self.plugins:
            ask = plugin.evaluation(ask)
        evaluation = self._evaluate(server_round, selected, params, ask) if ask.wanted else None
        evaluated = None
        if evaluation is not None:
            evaluated = [r for r in evaluation.results if isinstance(r, EvaluateResult)]
        released = evaluation if ask.release_site_metrics else None
        metrics = self._metrics(server_round, fit, released)
        if aborted:
            metrics["round_aborted"] = aborted
        for plugin in self.plugins:
            metrics.update(plugin.metrics(self.ctx, server_round, params, evaluated))
        metrics["duration_s"] = round(time.monotonic() - started, 4)
        participants = fit.participants
        if evaluation is not None:
            participants = participants + participants_of(evaluation, self.ctx.site_names)
        return params, RoundRecord(
            server_round=server_round, metrics=metrics, participants=participants
        )

    def _select(self, server_round: int, params: Params) -> list[str]:
        """This round's cohort, from the nodes every plug-in lets take part."""
        ctx, cfg = self.ctx, self.ctx.config
        nodes = ctx.transport.wait_for_nodes(cfg.min_clients, cfg.join_timeout_s)
        if len(nodes) < cfg.min_clients:
            raise RunAborted(
                f"round {server_round}: only {len(nodes)} of the {cfg.min_clients} required "
                f"clients (--min-clients) joined within {cfg.join_timeout_s:.0f} s"
            )
        for plugin in self.plugins:
            nodes = plugin.eligible(ctx, server_round, nodes)
        sampler = self.replaced["sample"]
        if sampler is not None:
            chosen = sampler.sample(ctx, server_round, nodes, params)
            if chosen is not None:
                return chosen
        return sample_clients(
            nodes, cfg.clients_per_round, seed=cfg.seed, server_round=server_round
        )

    def _fit(self, server_round: int, selected: list[str], params: Params) -> FitOutcome:
        ctx = self.ctx
        fit_config = {**ctx.strategy.fit_config(server_round), "seed": float(ctx.config.seed)}
        owned = {"seed"}  # the run's keys, not the strategy's: never set per client
        for plugin in self.plugins:
            added = plugin.fit_config(ctx, server_round)
            fit_config.update(added)
            owned.update(added)
        phase = self.replaced["run_fit"]
        if phase is not None:
            outcome = phase.run_fit(ctx, server_round, selected, params, fit_config)
            if outcome is not None:
                return outcome
        # who is who, only for a strategy that reads it: 100,000 ClientInfo a round are
        # otherwise built for nothing (client_fit_configs returns {} without looking)
        cohort = (
            [
                ClientInfo(node_id=n, site=ctx.site_names(n), index=i, cohort_size=len(selected))
                for i, n in enumerate(selected)
            ]
            if isinstance(ctx.strategy, ClientConfigStrategy)
            else []
        )
        fit = Instruction(
            phase=Phase.FIT,
            params=params,
            config=fit_config,
            train=ctx.config.train_at(server_round),
            client_configs=client_fit_configs(
                ctx.strategy, server_round, cohort, fit_config, reserved=owned
            ),
        )
        tracker = self._collect(server_round, selected, fit)
        results = [r for r in tracker.results if isinstance(r, FitResult)]
        return FitOutcome(
            results=results,
            reported=list(results),
            participants=participants_of(tracker, ctx.site_names),
        )

    def _aggregate(self, server_round: int, params: Params, fit: FitOutcome) -> tuple[Params, str]:
        """The new model from the accepted updates, or the old one and why the round aborted.

        A new model with NaN or Inf (e.g. finite updates whose weighted sum overflows
        float32) is never committed, nor one the strategy refuses to compute
        (:class:`AggregationRefused`, e.g. too few results to trim): the round aborts,
        the model and the strategy's state stay as they were, and the run goes on.
        """
        strategy = self.ctx.strategy
        before = strategy_state(strategy)  # copies: a refused aggregate must not move it
        try:
            new, aborted = self._new_model(server_round, params, fit)
        except AggregationRefused as exc:
            new, aborted = params, str(exc)
        else:
            if aborted or new is params:
                return new, aborted
            try:
                check_finite(new)
            except InvalidUpdate as exc:
                new, aborted = params, f"the aggregated model is not finite ({exc})"
        if aborted:
            load_strategy_state(strategy, before)
            log.warning("round %d aborted: %s; the model is unchanged", server_round, aborted)
        return new, aborted

    def _new_model(self, server_round: int, params: Params, fit: FitOutcome) -> tuple[Params, str]:
        """The strategy's (or a plug-in's) new model, or the old one and why not."""
        rule = self.replaced["aggregate"]
        if rule is not None:
            replaced = rule.aggregate(self.ctx, server_round, params, fit)
            if replaced is not None:
                return replaced
        need = self.ctx.config.min_fit_results
        # under SecAgg the results are one masked sum; ``reported`` lists who is in it
        accepted = len(fit.reported) if fit.results else 0
        if accepted < need:
            reason = f"{accepted} accepted update(s), fewer than the {need} required"
            log.warning("round %d aborted: %s; the model is unchanged", server_round, reason)
            return params, reason
        return self.ctx.strategy.aggregate_fit(server_round, params, fit.results), ""

    def _evaluate(
        self, server_round: int, selected: list[str], params: Params, ask: EvaluationAsk
    ) -> RoundTracker:
        """The still-connected part of the cohort evaluates the new model."""
        alive = set(self.ctx.transport.available_nodes())
        return self._collect(
            server_round,
            [n for n in selected if n in alive],
            Instruction(phase=Phase.EVALUATE, params=params, monitor=ask.monitor),
        )

    def _metrics(
        self,
        server_round: int,
        fit: FitOutcome,
        released: RoundTracker | None,
    ) -> dict[str, Any]:
        """The round's numbers: the sites' own only from a ``released`` evaluation."""
        metrics: dict[str, Any] = {"num_clients": len(fit.reported)}
        if released is not None:
            evaluated = [r for r in released.results if isinstance(r, EvaluateResult)]
            eval_metrics = self.ctx.strategy.aggregate_evaluate(server_round, evaluated)
            # the strategy's own reduction (aggregate_fit_metrics) only where the sites'
            # metrics are released: its names join train_loss (plug-ins' keys win over them)
            metrics |= {"train_loss": math.nan} | fit_metrics(
                self.ctx.strategy, server_round, fit.reported
            )
            metrics |= {
                "eval_loss": eval_metrics.get("loss", math.nan),
                "eval_accuracy": eval_metrics.get("accuracy", math.nan),
                "num_eval_clients": len(released.results),
            }
        metrics.update(fit.metrics)
        return metrics

    def _collect(
        self, server_round: int, nodes: list[str], instruction: Instruction
    ) -> RoundTracker:
        return collect(
            self.ctx.transport,
            server_round,
            nodes,
            instruction,
            timeout_s=self.ctx.config.round_timeout_s,
        )
