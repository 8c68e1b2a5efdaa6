"""Where a run starts: round 0 committed, or the newest checkpoint the records vouch for.

A coordinator (or a simulation) that stops, crashes or is stopped is started again on
the same run directory and continues after its last committed round, from that round's
checkpoint and strategy state. What it may trust of that directory is the question:
``state.sqlite`` and the checkpoint files can be edited by whoever holds it, the signed
audit log cannot (:mod:`fedops.runtime.audit.commitments`), so a checkpoint the log does
not vouch for is treated like one that does not verify.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedops.core.params import InvalidUpdate, Params, check_specs_match, specs_of
from fedops.core.strategies.protocol import Strategy, load_strategy_state, strategy_state
from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.checkpoint_file import Checkpoint
from fedops.runtime.privacy.regime import Regime, check_resume
from fedops.runtime.store import RunStore, StoreError, config_digest

log = logging.getLogger("fedops.run")


@dataclass(frozen=True, slots=True, kw_only=True)
class StartPoint:
    run_id: str
    params: Params
    start_round: int
    resumed: bool


def start_or_resume(
    store: RunStore,
    config: Mapping[str, Any],
    initial_params: Callable[[], Params],
    on_fallback: Callable[[dict[str, Any]], None] = lambda event: None,
    strategy: Strategy | None = None,
    *,
    commitments: Commitments | None = None,
    on_initial: Callable[[dict[str, Any]], None] = lambda event: None,
    model: Callable[[], Params] | None = None,
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

    ``model`` builds the model this run trains (its task's), when there is one: a
    checkpoint of other tensors (a resume with another task or model) is refused before
    any round, instead of failing inside the first one.
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
    _check_privacy_off(store, config, commitments)
    _check_rolled_back(last, commitments, on_fallback)
    last, checkpoint = _newest_verified(store, last, on_fallback, commitments)
    if model is not None:
        _check_same_model(checkpoint.params, model(), last)
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


def _check_same_model(saved: Params, built: Params, last: int) -> None:
    try:
        check_specs_match(specs_of(built), specs_of(saved))
    except InvalidUpdate as exc:
        raise StoreError(
            f"this run directory's model (round {last}) is not the one this run's task builds "
            f"({exc}): resume it with the task and model it started with, or start a new run "
            "directory"
        ) from None


def _check_privacy_off(
    store: RunStore, config: Mapping[str, Any], commitments: Commitments | None
) -> None:
    """Refuse (a :class:`StoreError`) to go on without DP after rounds under DP: the models
    released from then on would be outside the run's guarantee. A run under DP checks its
    rounds itself, with its settings (:func:`fedops.runtime.privacy.restore_ledger`)."""
    section = config.get("privacy")
    if not isinstance(section, Mapping) or section.get("name") != "none":
        return  # DP, or a config that does not say (a store used alone, in unit tests)
    check_resume(
        Regime("none"),
        saved=store.privacy_ledger(),
        metrics=store.round_metrics(),
        logged=commitments,
    )


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


def _check_rolled_back(
    last: int, commitments: Commitments | None, on_fallback: Callable[[dict[str, Any]], None]
) -> None:
    """Say loudly, and record, that state.sqlite ends before rounds the signed log committed
    (its newest rows deleted, or an older copy of it put back): those rounds are run again
    from the store's last, never silently."""
    beyond = sorted(r for r in (commitments.rounds if commitments else {}) if r > last)
    if not beyond:
        return
    reason = (
        f"state.sqlite ends at round {last}, but the audit log committed rounds up to "
        f"{beyond[-1]}: the store was rolled back"
    )
    log.warning("%s; rounds %s are run again", reason, ", ".join(map(str, beyond)))
    on_fallback({"reason": reason, "resumed_from": last, "forgotten": beyond})


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
    """The newest round at or before ``up_to`` whose checkpoint verifies and is vouched for
    (the log asked first: a round it does not vouch for is not read)."""

    def vouched(server_round: int) -> None:
        try:
            _check_vouched(store, server_round, commitments)
        except StoreError as exc:
            log.warning("passing over round %d: %s", server_round, exc)
            raise

    return store.newest_intact(up_to, check=vouched)


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
