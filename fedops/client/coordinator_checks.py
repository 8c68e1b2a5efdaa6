"""What a site checks of the coordinator itself before it does a task's work.

The coordinator is not trusted (a site protects its data from it), so each
task is read as a claim: its audit head must move forward (a truncated or
replaced coordinator log is caught, :mod:`fedops.core.audit.anchor`), the CRL
it carries must be the CA's, current and no older than one already seen
(:class:`~fedops.consortium.crl.DeliveredCrl`, with which the site checks its
SecAgg+ peers), and a monitoring request must keep the run's first binning
(two binnings, differenced, count the rows between their edges).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from fedops.consortium.crl import CrlError, DeliveredCrl
from fedops.core.audit.anchor import Anchor, HeadWatch, anchor_of
from fedops.core.monitoring.profile import MonitorSpec
from fedops.tasks.site import PolicyRefusal
from fedops.v1 import fedops_pb2 as pb

log = logging.getLogger(__name__)


class CoordinatorChecks:
    """``audit(event, **payload)`` writes to the site's log; ``anchors``: the site keeps
    one, so every model task must carry the coordinator's head; ``crl``: kit mode."""

    def __init__(
        self, audit: Callable[..., None], *, anchors: bool, crl: DeliveredCrl | None = None
    ) -> None:
        self.audit = audit
        self.anchors = anchors
        self.crl = crl
        self.heads = HeadWatch()
        self.bins: dict[str, object] = {}  # run -> the bins of its first report

    def refusal(self, task: pb.Task) -> str:
        """Why the site declines ``task`` for what the coordinator sent ("" when none)."""
        return self._head_regress(task) or self._crl_refusal(task)

    @staticmethod
    def head(task: pb.Task) -> Anchor | None:
        """The coordinator's audit head the task carries, if any."""
        if not task.HasField("coordinator_audit"):
            return None
        return anchor_of(task.coordinator_audit.seq, task.coordinator_audit.hash)

    def _head_regress(self, task: pb.Task) -> str:
        """A coordinator whose audit head goes back (or stays put for a new model) was
        truncated or replaced, or anchors nothing: say so. A site that keeps an audit log
        needs the head on every task that carries a model."""
        head = self.head(task)
        carries_model = bool(task.model_digest)
        if head is None:
            if carries_model and self.anchors:
                return (
                    "the task carries no head of the coordinator's audit log; this site "
                    "anchors that log with every model it receives"
                )
            return ""
        reason = self.heads.regress(task.run_id, head, task_id=task.task_id, strict=carries_model)
        if reason:
            self.audit("audit_anchor_mismatch", round=task.round, reason=reason, **head.payload())
        return reason

    def _crl_refusal(self, task: pb.Task) -> str:
        if self.crl is None or not task.crl:
            return ""  # without a CRL the site's SecAgg+ peer check fails closed
        try:
            news = self.crl.offer(task.crl)
        except CrlError as exc:
            reason = f"the CRL the coordinator sent is refused: {exc}"
            self.audit("crl_refused", round=task.round, reason=str(exc))
            return reason
        if news:
            log.info("CRL number %s from the coordinator accepted", self.crl.number)
            self.audit("crl_accepted", round=task.round, crl_number=self.crl.number)
        return ""

    def same_bins(self, run_id: str, spec: MonitorSpec) -> None:
        """One binning per run: two reports over bins that differ by a sliver count the rows
        in the sliver, whatever the floor per bin (red team, issue 17)."""
        shown = (
            spec.num_classes,
            spec.positive_label,
            tuple((name, np.asarray(e, np.float64).tobytes()) for name, e in spec.edges.items()),
        )
        first = self.bins.setdefault(run_id, shown)
        if first != shown:
            raise PolicyRefusal(
                "the monitoring request's bins differ from this run's first request: two "
                "binnings, differenced, count the rows between their edges"
            )


def payload_of(head: Anchor | None, run_id: str) -> dict[str, Any]:
    """The ``coordinator_head`` field of a site's audit entry (empty without a head)."""
    return {"coordinator_head": {**head.payload(), "run_id": run_id}} if head else {}
