"""What a site does with each task it pulls: carry it out, or decline it with a reason.

The task-handling half of :class:`~fedops.client.agent.Agent`, split from its loop
(registration, retries, heartbeats) so that each file holds one concern. Whatever a
task asks, the site's own rules are checked first; a task it will not or cannot do is
answered with a declined result, never left to time out, so the round need not wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from fedops.client.calls import Session, push_result
from fedops.client.checks import CoordinatorChecks
from fedops.client.guard import TaskGuard
from fedops.client.secure import SecureParticipant
from fedops.client.trail import SiteTrail, phase_of
from fedops.core.params import InvalidUpdate, Params
from fedops.core.secagg.primitives import ProtocolError
from fedops.runtime.settings import ClientConfig
from fedops.tasks.policy import PolicyViolation, SitePolicy
from fedops.tasks.site import DP_NUM_EXAMPLES, PolicyRefusal, Site
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import monitoring

log = logging.getLogger("fedops.client")


class TaskHandling:
    """Carrying out and declining tasks; the state is the agent's (see its ``__init__``)."""

    cfg: ClientConfig
    site: Site
    policy: SitePolicy
    guard: TaskGuard
    checks: CoordinatorChecks
    secure: SecureParticipant
    trail: SiteTrail
    channel: grpc.Channel
    session: Session | None
    withhold_monitoring: bool
    announced_examples: int
    _audit: Callable[..., None]
    _record: Callable[..., None]
    _fetch: Callable[[pb.Task], Params]
    _guarded: Callable[[str, Callable[[], Any]], Any]

    def _handle(self, task: pb.Task, session: Session) -> None:
        """Carry out one task; anything it raises is declined by ``Agent._step``."""
        refusal = self.guard.refusal(task, session.run_id) or self.checks.refusal(task)
        if refusal:
            self._decline(task, refusal)
        elif task.kind == pb.TASK_KIND_SEND_INITIAL:
            # a training result needs at least one example: a DP site claims the one it
            # claims for every local-DP update (Site.fit's DP_NUM_EXAMPLES)
            n = self.announced_examples or DP_NUM_EXAMPLES
            self._push(task, self.site.initial_params(), n, {})
        elif task.kind == pb.TASK_KIND_FIT:
            params = self._fetch(task)
            try:
                new, n, metrics = self.site.fit(
                    params, task.round, dict(task.config), run_id=task.run_id
                )
            except PolicyRefusal as exc:
                self._decline(task, str(exc))
                return
            self._push(task, new, n, metrics)
        elif task.kind == pb.TASK_KIND_EVALUATE:
            self._evaluate(task)
        elif task.kind == pb.TASK_KIND_SECAGG:
            self._secure_step(task)
        else:
            self._decline(task, f"unknown task kind {task.kind}")

    def _policy_allows(self, task: pb.Task) -> bool:
        """Consent and the round limit, checked before any work; False: declined."""
        if not self.policy.consents():
            log.warning("consent withdrawn: declining round %d and leaving the run", task.round)
            self._audit("consent_withdrawn", round=task.round, consent_file=self.cfg.consent_file)
            self._decline(task, "this site's consent is withdrawn (site policy)")
            return False
        try:
            self.policy.check_round(task.round)
        except PolicyViolation as exc:
            self._decline(task, f"site policy: {exc}")
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
                self.checks.same_bins(task.run_id, spec)
            except InvalidUpdate as exc:
                self._decline(task, f"monitoring request: {exc}")
                return
            except PolicyRefusal as exc:
                self._decline(task, str(exc))
                return
        params = self._fetch(task)
        n, metrics = self.site.evaluate(params, task.round)
        report = None
        if spec is not None:
            site_report = self.site.report(params, spec)
            if site_report is not None:
                report = monitoring.report_to_proto(site_report)
        self._push(task, {}, n, metrics, report=report)

    def _secure_step(self, task: pb.Task) -> None:
        try:
            reply, payload, n, metrics = self.secure.answer(task, lambda: self._fetch(task))
        except (ProtocolError, InvalidUpdate) as exc:
            self._decline(task, f"secure aggregation: {exc}")
            return
        except PolicyRefusal as exc:
            self._decline(task, str(exc))
            return
        self._push(task, payload, n, metrics, secagg=reply)

    def _decline(self, task: pb.Task, reason: str) -> None:
        log.warning("round %d: declining the task: %s", task.round, reason)
        self._audit("task_declined", round=task.round, kind=phase_of(task), reason=reason)
        self._push(task, {}, 0, {}, declined=reason)

    def _push(
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
        session = self.session
        assert session is not None
        try:
            sent = self._guarded(
                "push result",
                lambda: push_result(
                    self.channel,
                    session,
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
            self._record(
                event="refused", round=task.round, code=exc.code().name, reason=exc.details()
            )
            self._audit(
                "result_refused", round=task.round, code=exc.code().name, reason=exc.details()
            )
            return
        self.trail.sent(task, session.node_id, sent if params else "", num_examples)
        if report is not None:
            self.trail.shared(task.round, report)
        self._record(
            event="pushed",
            round=task.round,
            kind=pb.TaskKind.Name(task.kind),
            num_examples=num_examples,
            metrics=dict(metrics),
            model_digest=sent if params else "",
            **({"declined": declined} if declined else {}),
            **({"secagg": secagg.WhichOneof("stage")} if secagg is not None else {}),
        )
