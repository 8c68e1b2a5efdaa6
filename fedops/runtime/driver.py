"""The round driver: sample, dispatch, collect, aggregate, evaluate, record.

It owns the order of a federated run and nothing else. Clients are behind a
:class:`~fedops.runtime.transport.Transport`, the aggregation rule is a
:class:`~fedops.core.strategies.Strategy`, and the per-round bookkeeping is
:class:`~fedops.core.rounds.RoundTracker`; the driver only waits on events
until every selected node has answered, dropped, or the deadline passed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedops.core.params import Params
from fedops.core.results import EvaluateResult, FitResult, weighted_metrics
from fedops.core.rounds import Phase, RoundTracker, sample_clients
from fedops.core.strategies.protocol import Strategy
from fedops.runtime.collect import collect
from fedops.runtime.control import RunControl
from fedops.runtime.privacy import CentralPrivacy, LocalPrivacy, RoundSample
from fedops.runtime.round_monitor import RoundMonitor
from fedops.runtime.secure_fit import FitOutcome, SecureFit
from fedops.runtime.store import Participant, RunStore
from fedops.runtime.transport import Instruction, Transport

log = logging.getLogger("fedops.driver")


class RunAborted(RuntimeError):
    """The run cannot go on (e.g. too few clients joined); the message says why."""


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


@dataclass(slots=True, kw_only=True)
class RoundRecord:
    """One finished round: the metrics line plus who took part."""

    server_round: int
    metrics: dict[str, Any]
    participants: list[Participant] = field(default_factory=list)


class RoundDriver:
    """Runs rounds over a transport and commits each one to the store.

    Args:
        evaluate_global: optional ``params -> {"loss", "accuracy"}`` on data
            the coordinator holds (reported as ``global_loss`` and
            ``global_accuracy``).
        site_names: node id -> site name, for the participants table.
        on_round: called after every committed round (progress display).
        secure: runs the fit phase under secure aggregation, when it is on.
        privacy: central DP (clipping, noise, accounting, budget), when it is on.
        monitor: drift and fairness reports with every evaluation, when it is on.
        control: an admin's start and stop (consortium mode), checked between rounds.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        strategy: Strategy,
        config: DriverConfig,
        store: RunStore,
        evaluate_global: Callable[[Params], Mapping[str, float]] | None = None,
        site_names: Callable[[str], str] = lambda node: node,
        on_round: Callable[[RoundRecord], None] = lambda record: None,
        secure: SecureFit | None = None,
        privacy: CentralPrivacy | LocalPrivacy | None = None,
        monitor: RoundMonitor | None = None,
        control: RunControl | None = None,
    ) -> None:
        self.transport = transport
        self.strategy = strategy
        self.config = config
        self.store = store
        self.evaluate_global = evaluate_global
        self.site_names = site_names
        self.on_round = on_round
        self.secure = secure
        self.privacy = privacy
        self.monitor = monitor
        self.control = control

    def run(self, params: Params, *, start_round: int = 1) -> Params:
        for server_round in range(start_round, self.config.rounds + 1):
            if self.control is not None:  # an admin may hold the start or stop the run
                self.control.before_round(server_round, self.config.join_timeout_s)
            params, record = self.run_round(server_round, params)
            self.store.save_round(server_round, params, record.metrics, record.participants)
            if self.control is not None:
                self.control.committed(server_round)
            self.on_round(record)
        return params

    def run_round(self, server_round: int, params: Params) -> tuple[Params, RoundRecord]:
        started = time.monotonic()
        selected, sample = self._select(server_round, params)
        fit = self._fit(server_round, selected, params)
        params, aborted = self._aggregate(server_round, params, fit, sample)
        if self.privacy is not None and sample is not None:
            # what was unmasked or aggregated is spent, even if the round then aborted
            self.privacy.spend(fit.reported)
            # committed before the noised model leaves for evaluation (a crash between
            # the two must not forget the round)
            self.store.spend_privacy(server_round, self.privacy.ledger_json())
        # under DP the sites' own losses, accuracies and counts of their data are outside
        # the mechanism: the sites evaluate only when the operator releases them
        release = self.privacy is None or self.privacy.settings.release_site_metrics
        evaluation = None
        if release or self.monitor is not None:
            alive = set(self.transport.available_nodes())
            evaluation = self._collect(
                server_round,
                [n for n in selected if n in alive],
                Instruction(
                    phase=Phase.EVALUATE,
                    params=params,
                    monitor=self.monitor.spec if self.monitor is not None else None,
                ),
            )
        metrics = self._metrics(server_round, params, fit, evaluation if release else None)
        if aborted:
            metrics["round_aborted"] = aborted
        if self.privacy is not None:
            metrics.update(self.privacy.metrics())
        if self.monitor is not None and evaluation is not None:
            evaluated = [r for r in evaluation.results if isinstance(r, EvaluateResult)]
            metrics.update(self.monitor.summarize(server_round, evaluated, self.site_names))
        metrics["duration_s"] = round(time.monotonic() - started, 4)
        participants = fit.participants
        if evaluation is not None:
            participants = participants + self._participants(evaluation)
        return params, RoundRecord(
            server_round=server_round, metrics=metrics, participants=participants
        )

    def _select(self, server_round: int, params: Params) -> tuple[list[str], RoundSample | None]:
        """This round's cohort, and (under DP) the sample its accountant knows of."""
        cfg = self.config
        nodes = self.transport.wait_for_nodes(cfg.min_clients, cfg.join_timeout_s)
        if len(nodes) < cfg.min_clients:
            raise RunAborted(
                f"round {server_round}: only {len(nodes)} of the {cfg.min_clients} required "
                f"clients (--min-clients) joined within {cfg.join_timeout_s:.0f} s"
            )
        if self.monitor is not None:  # action=exclude: flagged sites train no more
            nodes = [n for n in nodes if not self.monitor.excluded(self.site_names(n))]
        if self.privacy is None:
            return sample_clients(
                nodes, cfg.clients_per_round, seed=cfg.seed, server_round=server_round
            ), None
        # DP samples from a CSPRNG, and checks its budget first
        sample = self.privacy.sample(nodes, cfg.clients_per_round, server_round)
        self.privacy.begin_round(server_round, sample, params)
        return sample.selected, sample

    def _fit(self, server_round: int, selected: list[str], params: Params) -> FitOutcome:
        fit_config = {**self.strategy.fit_config(server_round), "seed": float(self.config.seed)}
        if self.privacy is not None:
            fit_config.update(self.privacy.fit_config())
        if self.secure is None:
            return self._plain_fit(server_round, selected, params, fit_config)
        noise = self.privacy.secure_noise() if self.privacy is not None else None
        floor = self.privacy.survivor_floor() if self.privacy is not None else 0
        return self.secure.run(
            server_round, selected, params, fit_config, noise=noise, min_survivors=floor
        )

    def _metrics(
        self,
        server_round: int,
        params: Params,
        fit: FitOutcome,
        released: RoundTracker | None,
    ) -> dict[str, Any]:
        """The round's numbers: the sites' own only from a ``released`` evaluation."""
        metrics: dict[str, Any] = {"num_clients": len(fit.reported)}
        if released is not None:
            eval_metrics = self.strategy.aggregate_evaluate(server_round, released.results)  # type: ignore[arg-type]
            metrics |= {
                "train_loss": weighted_metrics(fit.reported).get("train_loss", math.nan),
                "eval_loss": eval_metrics.get("loss", math.nan),
                "eval_accuracy": eval_metrics.get("accuracy", math.nan),
                "num_eval_clients": len(released.results),
            }
        if self.evaluate_global is not None:
            glob = self.evaluate_global(params)
            metrics["global_loss"] = float(glob["loss"])
            metrics["global_accuracy"] = float(glob["accuracy"])
        metrics.update(fit.metrics)
        return metrics

    def _aggregate(
        self, server_round: int, params: Params, fit: FitOutcome, sample: RoundSample | None
    ) -> tuple[Params, str]:
        """The new model from the accepted updates, or the old one and why the round aborted."""
        if isinstance(self.privacy, CentralPrivacy) and self.privacy.aggregates and sample:
            # central DP releases its noised mean whatever the count: aborting on too few
            # updates would tell, outside the noise, how many were sampled. DP wraps the
            # strategy: it takes the release as its one result (post-processing, which
            # spends no privacy), so e.g. a server learning rate applies under DP too
            release = self.privacy.aggregate(server_round, params, fit.results, sample=sample)
            mean = FitResult(node_id="dp-release", params=release, num_examples=1)
            return self.strategy.aggregate_fit(server_round, params, [mean]), ""
        need = self.config.min_fit_results
        # under SecAgg the results are one masked sum; ``reported`` lists who is in it
        accepted = len(fit.reported) if fit.results else 0
        if accepted < need:
            reason = f"{accepted} accepted update(s), fewer than the {need} required"
            log.warning("round %d aborted: %s; the model is unchanged", server_round, reason)
            return params, reason
        return self.strategy.aggregate_fit(server_round, params, fit.results), ""

    def _collect(
        self, server_round: int, nodes: list[str], instruction: Instruction
    ) -> RoundTracker:
        return collect(
            self.transport, server_round, nodes, instruction, timeout_s=self.config.round_timeout_s
        )

    def _plain_fit(
        self, server_round: int, nodes: list[str], params: Params, config: Mapping[str, float]
    ) -> FitOutcome:
        tracker = self._collect(
            server_round, nodes, Instruction(phase=Phase.FIT, params=params, config=config)
        )
        results = [r for r in tracker.results if isinstance(r, FitResult)]
        return FitOutcome(
            results=results, reported=list(results), participants=self._participants(tracker)
        )

    def _participants(self, tracker: RoundTracker) -> list[Participant]:
        examples = {r.node_id: r.num_examples for r in tracker.results}
        return [
            Participant(
                phase=str(tracker.phase),
                node_id=node,
                site=self.site_names(node),
                outcome=str(outcome),
                num_examples=examples.get(node, 0),
                reason=tracker.reasons.get(node, ""),
            )
            for node, outcome in tracker.outcomes.items()
        ]
