"""Start or resume a run: the part of a run's life both runtimes share."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedops.core.params import Params
from fedops.core.rounds import Outcome, Phase
from fedops.core.strategies import build_strategy
from fedops.core.strategies.protocol import Strategy, load_strategy_state, strategy_state
from fedops.crypto import Crypto
from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.checkpoint_file import Checkpoint
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
from fedops.runtime.round_monitor import MonitorSettings, RoundMonitor, monitor_spec
from fedops.runtime.round_plugin import GlobalEvaluation, RoundPlugin
from fedops.runtime.schema import StrategyConfig
from fedops.runtime.secure_fit import NoiseSource, SecAggSettings, SecureFit
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
    strategy: Strategy | None = None,
    *,
    commitments: Commitments | None = None,
    on_initial: Callable[[dict[str, Any]], None] = lambda event: None,
) -> StartPoint:
    """Continue after the last committed round, or commit round 0 (the initial model).

    A resumed ``strategy`` gets back the state its checkpoint holds (FedAdam's
    moments), so it continues as if it had never stopped.

    Round 0 is checkpointed too, so a coordinator that dies during round 1
    restarts from the very same initial model instead of a new random one;
    ``on_initial`` records it (the audit log's ``initial_model``).
    A last checkpoint that no longer verifies (a disk error, an edit) is not
    trained on: the run falls back to the newest round whose checkpoint does,
    says so loudly, and ``on_fallback`` records it (the audit log).

    ``commitments`` are what the signed audit log committed: state.sqlite can be
    edited by whoever holds the run directory, so a checkpoint the log does not
    vouch for (another file, an added round, an edited strategy state) counts as
    one that does not verify. That includes a round committed to state.sqlite by
    a coordinator that died before logging it: it is run again. ``None`` (a
    store used without an audit log, as in unit tests) trusts state.sqlite alone.
    """
    stored_digest = store.stored_config_digest()
    run_id, _ = store.open_run(config)
    last = store.last_round()
    if last is None:
        params = initial_params()
        state = {} if strategy is None else strategy_state(strategy)
        digest = store.save_round(
            0, params, {}, strategy_state=state, strategy=strategy.name if strategy else ""
        )
        sha256 = store.checkpoint_sha256(0)
        on_initial({"round": 0, "model_digest": digest, "checkpoint_sha256": sha256})
        return StartPoint(run_id=run_id, params=params, start_round=1, resumed=False)
    if stored_digest and stored_digest != config_digest(config):
        log.warning(
            "resuming run %s with a configuration that differs from the one it started with", run_id
        )
    last, checkpoint = _newest_verified(store, last, on_fallback, commitments)
    if strategy is not None:
        _restore_strategy(strategy, checkpoint, last)
    params = checkpoint.params
    log.info(
        "resuming run %s at round %d from the checkpoint of round %d (model %s)",
        run_id,
        last + 1,
        last,
        store.model_digest(last),
    )
    return StartPoint(run_id=run_id, params=params, start_round=last + 1, resumed=True)


def _newest_verified(
    store: RunStore,
    last: int,
    on_fallback: Callable[[dict[str, Any]], None],
    commitments: Commitments | None,
) -> tuple[int, Checkpoint]:
    """The last round's checkpoint, or (said loudly, recorded, the later rounds forgotten)
    the newest earlier one that still verifies and that the audit log vouches for."""
    try:
        _check_vouched(store, last, commitments)
        return last, store.load_checkpoint(last)
    except StoreError as exc:
        intact = _newest_vouched(store, last - 1, commitments)
        if intact is None:
            raise StoreError(f"{exc}; no earlier checkpoint verifies either") from exc
        good, checkpoint = intact
        forgotten = store.roll_back_to(good)
        log.warning(
            "%s: resuming from round %d, the newest checkpoint that verifies (rounds %s are "
            "run again; their files are kept as *.corrupt)",
            exc,
            good,
            ", ".join(map(str, forgotten)),
        )
        on_fallback({"reason": str(exc), "resumed_from": good, "forgotten": forgotten})
        return good, checkpoint


def _check_vouched(store: RunStore, server_round: int, commitments: Commitments | None) -> None:
    """StoreError unless the audit log committed the checkpoint state.sqlite names for the
    round (the file itself is then checked against that row: together, against the log)."""
    if commitments is None:
        return
    sha256, digest = store.checkpoint_sha256(server_round), store.model_digest(server_round)
    refusal = commitments.refusal(server_round, sha256, digest)
    if refusal is not None:
        raise StoreError(refusal)


def _newest_vouched(
    store: RunStore, up_to: int, commitments: Commitments | None
) -> tuple[int, Checkpoint] | None:
    """The newest round at or before ``up_to`` whose checkpoint verifies and is vouched for."""
    while (intact := store.newest_intact(up_to)) is not None:
        try:
            _check_vouched(store, intact[0], commitments)
        except StoreError as exc:
            log.warning("passing over round %d: %s", intact[0], exc)
            up_to = intact[0] - 1
            continue
        return intact
    return None


def _restore_strategy(strategy: Strategy, checkpoint: Checkpoint, server_round: int) -> None:
    """Give ``strategy`` the state its checkpoint holds; refuse one it cannot continue from."""
    written_by, state = checkpoint.strategy, checkpoint.strategy_state
    advice = "resume with the strategy the run started with, or start a new run directory"
    if written_by and written_by != strategy.name:
        raise StoreError(
            f"the checkpoint of round {server_round} was written by strategy {written_by!r}, "
            f"not {strategy.name!r}: its state would be misread; {advice}"
        )
    try:
        _check_state_fits(state, checkpoint.params)
        load_strategy_state(strategy, state)
    except ValueError as exc:
        raise StoreError(
            f"the checkpoint of round {server_round} holds a strategy state that "
            f"{strategy.name!r} cannot continue from ({exc}): {advice}"
        ) from exc
    if not state and server_round > 0 and strategy_state(strategy):
        log.warning(
            "the checkpoint of round %d holds no state for strategy %r (written by %s): "
            "its server optimizer starts afresh from round %d",
            server_round,
            strategy.name,
            f"strategy {written_by!r}" if written_by else "an older fedops",
            server_round + 1,
        )


def _check_state_fits(state: Mapping[str, Any], params: Params) -> None:
    """A ``<kind>.<tensor>`` buffer must match that tensor of the checkpoint's model: checked
    before any round runs (not after the sites trained and a sum was unmasked)."""
    for key, value in state.items():
        _, _, tensor = key.partition(".")
        if not tensor:
            continue  # a scalar such as ``step``
        if tensor not in params:
            raise ValueError(f"{key} is for a tensor the model does not have")
        if np.shape(value) != np.shape(params[tensor]):
            shape = np.shape(params[tensor])
            raise ValueError(f"{key} has shape {np.shape(value)}, the model's {tensor} {shape}")


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
    )
    if dp is not None:
        restore_ledger(dp.privacy, store.privacy_ledger(), store.round_metrics())
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
