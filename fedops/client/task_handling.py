"""What a site does with each task it pulls: carry it out, or decline it with a reason.

The task-handling half of :class:`~fedops.client.agent.Agent`, split from its loop
(registration, retries, heartbeats) so that each file holds one concern. The agent
hands a :class:`TaskHandler` what a task may use (the site, its rules, the call that
fetches a model, and an :class:`Outbox` with what a push needs), so neither reaches
back into it. Whatever a task asks, the site's own rules are checked
first; a task it will not or cannot do is answered with a declined result, never left
to time out, so the round need not wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from fedops.client.calls import Session, push_result
from fedops.client.coordinator_checks import CoordinatorChecks
from fedops.client.secure_participant import SecureParticipant
from fedops.client.site_trail import SiteTrail
from fedops.client.task_guard import TaskGuard, run_training
from fedops.core.params import InvalidUpdate, Params
from fedops.core.secagg.primitives import ProtocolError
from fedops.tasks.local_site import LocalSite
from fedops.tasks.site import DP_NUM_EXAMPLES, PolicyRefusal
from fedops.tasks.site_policy import PolicyViolation, SitePolicy
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import monitoring
from fedops.wire.phases import phase_of

log = logging.getLogger("fedops.client")


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskHandler:
    """Carrying out and declining tasks. The agent builds one for each task from its
    parts as they are then, so the handling keeps no copy of them that could go stale.

    Args:
        site: the site's task, data and privacy ledger.
        policy: the site's own rules (consent, round limit).
        guard: the checks a task must pass against the session (run, replays, SecAgg).
        checks: the coordinator's audit head and monitoring bins, checked for going back.
        secure: this site's SecAgg+ side.
        consent_file: where consent is given (named when it is withdrawn).
        withhold_monitoring: keep drift and fairness statistics (site policy).
        announced_examples: the record count the site tells the coordinator.
        audit: ``(event, **payload)`` for the site's signed log.
        fetch: downloads a task's model.
        outbox: where the task's answer goes (every answer goes out this one way).
    """

    site: LocalSite
    policy: SitePolicy
    guard: TaskGuard
    checks: CoordinatorChecks
    secure: SecureParticipant
    consent_file: Path | None
    withhold_monitoring: bool
    announced_examples: int
    audit: Callable[..., None]
    fetch: Callable[[pb.Task], Params]
    outbox: Outbox

    def handle(self, task: pb.Task, session: Session) -> None:
        """Carry out one task; anything it raises is declined by ``Agent._step``."""
        refusal = self.guard.refusal(task, session.run_id) or self.checks.refusal(task)
        if refusal:
            self.decline(task, refusal)
        elif task.kind == pb.TASK_KIND_SEND_INITIAL:
            # a training result needs at least one example: a DP site claims the one it
            # claims for every local-DP update (Site.fit's DP_NUM_EXAMPLES)
            n = self.announced_examples or DP_NUM_EXAMPLES
            self.outbox.push(task, self.site.initial_params(), n, {})
        elif task.kind == pb.TASK_KIND_FIT:
            try:  # the run's settings, checked against the site's caps before the download
                train = run_training(task)
                self.site.training(train)
                params = self.fetch(task)
                new, n, metrics = self.site.fit(
                    params, task.round, dict(task.config), run_id=session.run_id, train=train
                )
            except PolicyRefusal as exc:
                self.decline(task, str(exc))
                return
            self.outbox.push(task, new, n, metrics)
        elif task.kind == pb.TASK_KIND_EVALUATE:
            self._evaluate(task)
        elif task.kind == pb.TASK_KIND_SECAGG:
            self._secure_step(task)
        else:
            self.decline(task, f"unknown task kind {task.kind}")

    def allows(self, task: pb.Task) -> bool:
        """Consent and the round limit, checked before any work; False: declined."""
        if not self.policy.consents():
            log.warning("consent withdrawn: declining round %d and leaving the run", task.round)
            self.audit("consent_withdrawn", round=task.round, consent_file=self.consent_file)
            self.decline(task, "this site's consent is withdrawn (site policy)")
            return False
        try:
            self.policy.check_round(task.round)
        except PolicyViolation as exc:
            self.decline(task, f"site policy: {exc}")
            return False
        return True

    def _evaluate(self, task: pb.Task) -> None:
        spec = None
        if task.HasField("monitor") and self.withhold_monitoring:
            log.info(
                "round %d: drift and fairness statistics withheld (site policy: "
                "--require-secagg / --max-epsilon without --share-monitoring)",
                task.round,
            )
        elif task.HasField("monitor"):
            try:  # refused before the model is fetched or any row is counted
                spec = monitoring.spec_from_proto(task.monitor)
                self.site.check_report(spec)
                self.checks.same_bins(task.run_id, spec)  # = the session's (TaskGuard)
            except InvalidUpdate as exc:
                self.decline(task, f"monitoring request: {exc}")
                return
            except PolicyRefusal as exc:
                self.decline(task, str(exc))
                return
        params = self.fetch(task)
        n, metrics = self.site.evaluate(params, task.round)
        report = None
        if spec is not None:
            site_report = self.site.report(params, spec)
            if site_report is not None:
                report = monitoring.report_to_proto(site_report)
        self.outbox.push(task, {}, n, metrics, report=report)

    def _secure_step(self, task: pb.Task) -> None:
        try:
            reply, payload, n, metrics = self.secure.answer(task, lambda: self.fetch(task))
        except (ProtocolError, InvalidUpdate) as exc:
            self.decline(task, f"secure aggregation: {exc}")
            return
        except PolicyRefusal as exc:
            self.decline(task, str(exc))
            return
        self.outbox.push(task, payload, n, metrics, secagg=reply)

    def decline(self, task: pb.Task, reason: str) -> None:
        reason = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
        log.warning("round %d: declining the task: %s", task.round, reason)
        self.audit("task_declined", round=task.round, kind=phase_of(task), reason=reason)
        self.outbox.push(task, {}, 0, {}, declined=reason)


#: the longest decline reason a site records and sends: a hostile task's text quoted into
#: it must not fill the site's audit log
MAX_REASON = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class Outbox:
    """Where a session's answers go, and the records each one leaves at the site. Built
    for each push: the session changes whenever the site registers again.

    Args:
        channel: the connection to the coordinator.
        session: the node this site is registered as.
        trail: the site's signed log and journal (what it sent, and its log head).
        guarded: runs a call with the agent's retries (re-registering if forgotten).
    """

    channel: grpc.Channel
    session: Session
    trail: SiteTrail
    guarded: Callable[[str, Callable[[], str]], str]

    def push(
        self,
        task: pb.Task,
        params: Params,
        num_examples: int,
        metrics: Mapping[str, float],
        *,
        secagg: pb.SecAggReply | None = None,
        declined: str = "",
        report: pb.SiteReport | None = None,
    ) -> None:
        try:
            sent = self.guarded(
                "push result",
                lambda: push_result(
                    self.channel,
                    self.session,
                    task,
                    params,
                    num_examples,
                    metrics,
                    digest=self.trail.keeping,
                    secagg=secagg,
                    declined=declined,
                    report=report,
                    audit_head=self.trail.head(),
                ),
            )
        except grpc.RpcError as exc:
            log.warning(
                "round %d: result refused (%s): %s", task.round, exc.code().name, exc.details()
            )
            self.trail.refused(task, exc.code().name, exc.details())
            return
        self.trail.sent(
            task,
            self.session.node_id,
            sent if params else "",
            num_examples,
            metrics=metrics,
            declined=declined,
            secagg=secagg,
            report=report,
        )
