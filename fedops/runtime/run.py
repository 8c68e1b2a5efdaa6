"""Start or resume a run: the part of a run's life both runtimes share."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedops.core.params import Params
from fedops.core.rounds import Outcome, Phase
from fedops.core.strategies import build_strategy
from fedops.core.strategies.protocol import Strategy
from fedops.crypto import Crypto
from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.control import AdminControl, RunControl, RunStopped
from fedops.runtime.driver import DriverConfig, RoundDriver, RoundRecord
from fedops.runtime.privacy import (
    BudgetExhausted,
    PrivacyRound,
    PrivacySettings,
    privacy_round,
    restore_ledger,
)
from fedops.runtime.progress import RoundProgress
from fedops.runtime.resume import StartPoint, start_or_resume
from fedops.runtime.round_monitor import MonitorSettings, RoundMonitor, monitor_spec
from fedops.runtime.round_plugin import GlobalEvaluation, RoundPlugin
from fedops.runtime.schema import StrategyConfig
from fedops.runtime.secure_fit import NoiseSource, SecAggSettings, SecureFit
from fedops.runtime.settings import ConfigError
from fedops.runtime.store import RunStore
from fedops.runtime.transport import Transport
from fedops.tasks.contract import Task

log = logging.getLogger("fedops.run")


def make_strategy(options: StrategyConfig) -> Strategy:
    """The strategy ``options.name``, given the ``strategy.*`` settings it reads."""
    return build_strategy(options.name, dataclasses.asdict(options))


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """Everything a run needs besides its transport: the same for both runtimes."""

    label: str
    config: Mapping[str, Any]
    strategy: Strategy
    driver: DriverConfig
    initial_params: Callable[[], Params]
    evaluate_global: Callable[[Params], Mapping[str, float]] | None = None
    site_names: Callable[[str], str] = str
    summary: Mapping[str, Any] = field(default_factory=dict)
    secagg: SecAggSettings | None = None  # secure aggregation of the fit phase, when on
    privacy: PrivacySettings | None = None  # central DP, when on
    monitoring: MonitorSettings | None = None  # drift and fairness reports, when on
    task: Task | None = None  # the coordinator's copy of the task (monitoring bins)
    #: called after every committed round, besides the progress view (audit, metrics)
    observers: Sequence[Callable[[RoundRecord], None]] = ()
    #: a corrupt last checkpoint was passed over on resume (for the audit log)
    on_fallback: Callable[[dict[str, Any]], None] = lambda event: None
    control: RunControl | None = None  # admin start/stop (consortium mode)
    #: what the signed audit log committed: a resume trusts no other checkpoint (None: no
    #: log, state.sqlite alone); :func:`fedops.runtime.records.run_recorded` sets both
    commitments: Commitments | None = None
    #: round 0 was committed (for the audit log's ``initial_model``)
    on_initial: Callable[[dict[str, Any]], None] = lambda event: None


def execute(
    plan: RunPlan,
    *,
    store: RunStore,
    transport: Transport,
    on_exit: Callable[[str], None] = lambda status: None,
) -> dict[str, Any]:
    """Start or resume, drive every round with a progress view, write the summary.

    ``on_exit(status)`` runs before the summary is written, whatever happened
    (the coordinator stops its server there); Ctrl-C leaves the committed
    rounds in the store and a summary that says "interrupted".
    """
    status = "failed"
    dp = None
    if plan.privacy is not None:
        dp = privacy_round(plan.privacy, planned_rounds=plan.driver.rounds)
    extra: dict[str, Any] = {}
    try:
        status = _drive(plan, store, transport, dp, extra)
    except BudgetExhausted as exc:
        log.warning("%s", exc)
        status = "budget_exhausted"
        extra["stop_reason"] = str(exc)
    except RunStopped as exc:
        log.warning("%s", exc)
        status = "stopped"
        extra["stop_reason"] = str(exc)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if plan.control is not None:
            plan.control.finished = True
        on_exit(status)
        if dp is not None:
            extra["privacy"] = dp.privacy.guarantee()
            log.info("privacy: %s", extra["privacy"])
        summary = store.write_summary({"status": status, **plan.summary, **extra})
        store.close()
    return summary


def _drive(
    plan: RunPlan,
    store: RunStore,
    transport: Transport,
    dp: PrivacyRound | None,
    extra: dict[str, Any],
) -> str:
    """Start or resume and drive every round; the status, with why in ``extra``."""
    start = start_or_resume(
        store,
        plan.config,
        plan.initial_params,
        on_fallback=plan.on_fallback,
        strategy=plan.strategy,
        commitments=plan.commitments,
        on_initial=plan.on_initial,
        model=plan.initial_params if plan.task is not None else None,
    )
    if dp is not None:
        ledger, metrics = store.privacy_ledger(), store.round_metrics()
        restore_ledger(dp.privacy, ledger, metrics, logged=plan.commitments)
    if start.start_round > plan.driver.rounds:
        log.warning(
            "run %s in %s already has %d of %d rounds: nothing to do. Use a new run "
            "directory for a new run, or more rounds to extend this one.",
            start.run_id,
            store.dir,
            start.start_round - 1,
            plan.driver.rounds,
        )
    with RoundProgress(
        total_rounds=plan.driver.rounds,
        first_round=start.start_round,
        label=f"{plan.label} {start.run_id}",
    ) as progress:

        def on_round(record: RoundRecord) -> None:
            progress.update(record)
            for observe in plan.observers:
                observe(record)

        RoundDriver(
            transport=transport,
            strategy=plan.strategy,
            config=plan.driver,
            store=store,
            plugins=_plugins(plan, start, transport, dp),
            site_names=plan.site_names,
            on_round=on_round,
        ).run(start.params, start_round=start.start_round)
    if start.start_round <= plan.driver.rounds and not _trained(store, start.start_round):
        extra["stop_reason"] = (
            f"no round from {start.start_round} on accepted any site's update (every site "
            "declined, failed or was rejected): the model did not change"
        )
        log.warning("%s", extra["stop_reason"])
        return "no_progress"  # every round ran, but no site's update was taken
    return "completed"


def _plugins(
    plan: RunPlan, start: StartPoint, transport: Transport, dp: PrivacyRound | None
) -> list[RoundPlugin]:
    """The run's features as round plug-ins, in the order their metrics appear."""
    plugins: list[RoundPlugin] = []
    if plan.control is not None:
        plugins.append(AdminControl(plan.control))
    if plan.evaluate_global is not None:
        plugins.append(GlobalEvaluation(plan.evaluate_global))
    if plan.secagg is not None:
        noise = dp.privacy if dp is not None else None
        plugins.append(_secure_fit(plan, start.run_id, transport, noise))
    if dp is not None:
        plugins.append(dp)
    monitor = _monitor(plan, start.params)
    if monitor is not None:
        plugins.append(monitor)
    return plugins


def _monitor(plan: RunPlan, params: Params) -> RoundMonitor | None:
    if plan.monitoring is None:
        return None
    try:
        spec = monitor_spec(plan.monitoring, plan.task, params)
    except ValueError as exc:  # e.g. a positive label that is not one of the task's classes
        raise ConfigError("monitoring.positive_label", str(exc)) from exc
    log.info(
        "monitoring drift on %s and fairness (favourable class %d) at every evaluation",
        f"{len(spec.edges)} input features" if spec.edges else "the model's outputs",
        spec.positive_label,
    )
    return RoundMonitor(plan.monitoring, spec)


def _secure_fit(
    plan: RunPlan, run_id: str, transport: Transport, noise: NoiseSource | None
) -> SecureFit:
    assert plan.secagg is not None
    return SecureFit(
        transport=transport,
        settings=plan.secagg,
        crypto=Crypto(),
        run_id=run_id,
        timeout_s=plan.driver.round_timeout_s,
        site_names=plan.site_names,
        noise=noise,
    )


def _trained(store: RunStore, first_round: int) -> bool:
    """Whether any round from ``first_round`` on took at least one site's update."""
    return store.any_participant(first_round, str(Phase.FIT), str(Outcome.OK))
