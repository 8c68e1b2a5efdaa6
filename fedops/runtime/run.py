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
from fedops.runtime.control import RunControl, RunStopped
from fedops.runtime.driver import DriverConfig, RoundDriver, RoundRecord
from fedops.runtime.privacy import (
    BudgetExhausted,
    CentralPrivacy,
    DistributedPrivacy,
    LocalPrivacy,
    PrivacySettings,
    restore_ledger,
)
from fedops.runtime.progress import RoundProgress
from fedops.runtime.round_monitor import MonitorSettings, RoundMonitor, monitor_spec
from fedops.runtime.schema import StrategyConfig
from fedops.runtime.secure_fit import SecAggSettings, SecureFit
from fedops.runtime.settings import ConfigError
from fedops.runtime.store import RunStore, StoreError, config_digest
from fedops.runtime.transport import Transport
from fedops.tasks.contract import Task

log = logging.getLogger("fedops.run")


@dataclass(frozen=True, slots=True, kw_only=True)
class StartPoint:
    run_id: str
    params: Params
    start_round: int
    resumed: bool


def make_strategy(options: StrategyConfig) -> Strategy:
    """The strategy ``options.name``, given the ``strategy.*`` settings it reads."""
    return build_strategy(options.name, dataclasses.asdict(options))


def start_or_resume(
    store: RunStore,
    config: Mapping[str, Any],
    initial_params: Callable[[], Params],
    on_fallback: Callable[[dict[str, Any]], None] = lambda event: None,
) -> StartPoint:
    """Continue after the last committed round, or commit round 0 (the initial model).

    Round 0 is checkpointed too, so a coordinator that dies during round 1
    restarts from the very same initial model instead of a new random one.
    A last checkpoint that no longer verifies (a disk error, an edit) is not
    trained on: the run falls back to the newest round whose checkpoint does,
    says so loudly, and ``on_fallback`` records it (the audit log).
    """
    stored_digest = store.stored_config_digest()
    run_id, _ = store.open_run(config)
    last = store.last_round()
    if last is None:
        params = initial_params()
        store.save_round(0, params, {})
        return StartPoint(run_id=run_id, params=params, start_round=1, resumed=False)
    if stored_digest and stored_digest != config_digest(config):
        log.warning(
            "resuming run %s with a configuration that differs from the one it started with", run_id
        )
    try:
        params = store.load_round(last)
    except StoreError as exc:
        intact = store.newest_intact(last - 1)
        if intact is None:
            raise StoreError(f"{exc}; no earlier checkpoint verifies either") from exc
        good, params = intact
        forgotten = store.roll_back_to(good)
        log.warning(
            "%s: resuming from round %d, the newest checkpoint that verifies (rounds %s are "
            "run again; their files are kept as *.corrupt)",
            exc,
            good,
            ", ".join(map(str, forgotten)),
        )
        on_fallback({"reason": str(exc), "resumed_from": good, "forgotten": forgotten})
        last = good
    log.info(
        "resuming run %s at round %d from the checkpoint of round %d (model %s)",
        run_id,
        last + 1,
        last,
        store.model_digest(last),
    )
    return StartPoint(run_id=run_id, params=params, start_round=last + 1, resumed=True)


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
    privacy = _privacy(plan)
    extra: dict[str, Any] = {}
    try:
        status = _drive(plan, store, transport, privacy, extra)
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
        if privacy is not None:
            extra["privacy"] = privacy.guarantee()
            log.info("privacy: %s", extra["privacy"])
        summary = store.write_summary({"status": status, **plan.summary, **extra})
        store.close()
    return summary


def _privacy(plan: RunPlan) -> CentralPrivacy | LocalPrivacy | None:
    """The run's DP mechanism and accountant, by mode."""
    if plan.privacy is None:
        return None
    if plan.privacy.mode == "local":
        return LocalPrivacy(plan.privacy, planned_rounds=plan.driver.rounds)
    if plan.privacy.mode == "distributed":
        return DistributedPrivacy(plan.privacy, planned_rounds=plan.driver.rounds)
    return CentralPrivacy(plan.privacy, planned_rounds=plan.driver.rounds)


def _drive(
    plan: RunPlan,
    store: RunStore,
    transport: Transport,
    privacy: CentralPrivacy | LocalPrivacy | None,
    extra: dict[str, Any],
) -> str:
    """Start or resume and drive every round; the status, with why in ``extra``."""
    start = start_or_resume(store, plan.config, plan.initial_params, on_fallback=plan.on_fallback)
    if privacy is not None:
        restore_ledger(privacy, store.privacy_ledger(), store.round_metrics())
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
            evaluate_global=plan.evaluate_global,
            site_names=plan.site_names,
            on_round=on_round,
            secure=_secure_fit(plan, start.run_id, transport),
            privacy=privacy,
            monitor=_monitor(plan, start.params),
            control=plan.control,
        ).run(start.params, start_round=start.start_round)
    if start.start_round <= plan.driver.rounds and not _trained(store, start.start_round):
        extra["stop_reason"] = (
            f"no round from {start.start_round} on accepted any site's update (every site "
            "declined, failed or was rejected): the model did not change"
        )
        log.warning("%s", extra["stop_reason"])
        return "no_progress"  # every round ran, but no site's update was taken
    return "completed"


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


def _secure_fit(plan: RunPlan, run_id: str, transport: Transport) -> SecureFit | None:
    if plan.secagg is None:
        return None
    return SecureFit(
        transport=transport,
        settings=plan.secagg,
        crypto=Crypto(),
        run_id=run_id,
        timeout_s=plan.driver.round_timeout_s,
        site_names=plan.site_names,
    )


def _trained(store: RunStore, first_round: int) -> bool:
    """Whether any round from ``first_round`` on took at least one site's update."""
    last = store.last_round() or 0
    return any(
        p.phase == str(Phase.FIT) and p.outcome == str(Outcome.OK)
        for r in range(first_round, last + 1)
        for p in store.participants(r)
    )
