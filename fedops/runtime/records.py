"""Where a run is written down, opened and closed in one place for every runtime.

``fedops coordinator``, ``fedops simulate`` and the tests that stand up a
coordinator all open the same records: the run store (state, checkpoints,
metrics), the signed audit log and its trail, optionally MLflow and
Prometheus. :func:`run_recorded` then executes a plan against them and closes
them whatever happens, so a deployed and a simulated run leave the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedops.crypto import Identity
from fedops.runtime.audit.log_file import AuditLog
from fedops.runtime.audit.run_trail import RunTrail
from fedops.runtime.driver import RoundRecord
from fedops.runtime.mlflow_sink import MlflowSink
from fedops.runtime.run import RunPlan, execute
from fedops.runtime.store import RunStore
from fedops.runtime.transport import Transport

if TYPE_CHECKING:  # only the deployed coordinator exports Prometheus metrics; prometheus_client
    # and the HTTP server modules it imports stay out of ``fedops simulate`` (~1.2 MB RSS)
    from fedops.runtime.metrics import RunMetrics


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordSettings:
    """What decides how a run is recorded (from either front's settings)."""

    run_dir: Path
    config: Mapping[str, Any]  # as stored and digested: what makes the run what it is
    task_digest: str = ""
    keep_checkpoints: int = 3
    identity: Identity | None = None  # consortium: the kit's CA-certified key
    #: central DP with a secret cohort: the audit log pseudonymises who took part
    hide_participants: bool = False
    mlflow_uri: str | None = None
    mlflow_experiment: str = "fedops"
    mlflow_params: Mapping[str, Any] | None = None  # flat; None: ``config``
    fsync: bool = True


@dataclass(slots=True)
class RunRecords:
    """An open run's records; :meth:`open` and :meth:`finish` bracket every run."""

    run_id: str
    config: Mapping[str, Any]  # as stored and digested: the plan runs this very value
    store: RunStore
    audit: AuditLog
    trail: RunTrail
    metrics: RunMetrics | None = None  # Prometheus: the deployed coordinator's
    mlflow: MlflowSink | None = None

    @classmethod
    def open(cls, settings: RecordSettings, *, metrics: RunMetrics | None = None) -> RunRecords:
        store = RunStore(settings.run_dir, keep_checkpoints=settings.keep_checkpoints)
        run_id, _ = store.open_run(settings.config)
        audit = AuditLog.open(
            settings.run_dir, "coordinator", identity=settings.identity, fsync=settings.fsync
        )
        if settings.hide_participants:
            audit.hide_participants(run_id)  # the cohort is secret: see core.audit_pseudonyms
        trail = RunTrail(audit, store)
        trail.run_started(run_id, settings.config, task_digest=settings.task_digest)
        mlflow = None
        if settings.mlflow_uri:
            params = settings.config if settings.mlflow_params is None else settings.mlflow_params
            mlflow = MlflowSink(settings.mlflow_uri, settings.mlflow_experiment, run_id, params)
        return cls(run_id, settings.config, store, audit, trail, metrics, mlflow)

    def write_rejection(self, server_round: int, node: str, code: str, reason: str) -> None:
        """The run store's row and the audit entry of one refused message."""
        self.store.record_rejection(server_round, node, code, reason)
        self.trail.rejection(server_round, node, code, reason)

    def observers(self) -> tuple[Callable[[RoundRecord], None], ...]:
        """What hears of every committed round besides the progress view."""
        found: list[Callable[[RoundRecord], None]] = [self.trail.observe_round]
        if self.metrics is not None:
            found.append(self.metrics.observe_round)
        if self.mlflow is not None:
            found.append(self.mlflow.observe_round)
        return tuple(found)

    def abandon(self, reason: str) -> None:
        """Close the records of a run that failed before its first round could start."""
        try:
            self.finish({"status": "failed", "reason": reason[:500]})
        finally:
            self.store.close()

    def finish(self, summary: Mapping[str, Any]) -> None:
        self.trail.run_finished(summary)
        self.audit.close()
        if self.mlflow is not None:
            self.mlflow.finish(str(summary["status"]))


def run_recorded(
    plan: RunPlan,
    records: RunRecords,
    transport: Transport,
    on_exit: Callable[[str], None] = lambda status: None,
) -> dict[str, Any]:
    """Execute ``plan`` over ``transport`` into ``records``, closing them whatever happens.

    ``on_exit(status)`` runs before the summary is written (the coordinator stops
    its server there).
    """
    summary: dict[str, Any] = {"status": "failed"}
    # the resume trusts only the checkpoints the signed log vouches for, and round 0 is signed
    plan = replace(
        plan, commitments=records.audit.commitments, on_initial=records.trail.initial_model
    )
    if plan.privacy is not None:  # each DP charge is signed before its ledger is committed
        plan = replace(
            plan, privacy=replace(plan.privacy, sign_charge=records.trail.privacy_charged)
        )
    try:
        summary = execute(plan, store=records.store, transport=transport, on_exit=on_exit)
    finally:
        records.finish(summary)
    return summary
