"""What a site writes down: its journal (``client.jsonl``) and its signed audit log.

The audit entries mirror the coordinator's (same phase names, same digests),
so ``fedops audit export`` can cross-check the two sides round by round.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedops.client.coordinator_checks import payload_of
from fedops.core.audit import json_values
from fedops.core.audit.anchor import Anchor
from fedops.crypto import Identity
from fedops.runtime.audit.log_file import AuditLog
from fedops.tasks.ledger import Spent
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.phases import phase_of
from fedops.wire.training import train_record

#: what a site's local_epsilon is a guarantee of (README: "Privacy guarantees")
LOCAL_DP_MECHANISM = (
    "record-level DP-SGD (Opacus): Poisson sampling of records, add/remove-one record "
    "adjacency, PLD accountant (dp_accounting; RDP where ε is above 1000) over every round "
    "this site trained with DP, noise from the site's OS entropy; holds against the "
    "coordinator, other sites and readers of the released models, for the site's training "
    "records (not its test rows)"
)


class SiteTrail:
    """The journal and audit log of one site (both off without a ``--run-dir``).

    ``identity``: the key the log is signed with, a consortium kit's (so the
    log is the certified site's); ``None`` for the run directory's own key.
    """

    def __init__(
        self, run_dir: Path | None, site: int, actor: str, *, identity: Identity | None = None
    ) -> None:
        self.site = site
        self.journal_path: Path | None = None
        self.log: AuditLog | None = None
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            self.journal_path = Path(run_dir) / "client.jsonl"
            self.log = AuditLog.open(Path(run_dir), actor, identity=identity)

    @property
    def keeping(self) -> bool:
        return self.log is not None

    def head(self) -> tuple[int, str] | None:
        """This log's ``(seq, hash)``, sent with every result for the coordinator to anchor."""
        if self.log is None:
            return None
        seq, digest = self.log.head
        return (seq, digest) if seq >= 0 else None

    def journal(self, **entry: Any) -> None:
        if self.journal_path is not None:
            with self.journal_path.open("a") as f:
                f.write(json.dumps({"time": time.time(), "site": self.site, **entry}) + "\n")

    def audit(self, event: str, **payload: Any) -> None:
        if self.log is not None:
            self.log.record(event, json_values(payload))

    # -- the events a site writes to both: one call each, the journal's line and the log's entry
    def registered(self, node_id: str, run_id: str) -> None:
        self.journal(event="registered", node_id=node_id, run_id=run_id)
        self.audit("registered", node_id=node_id, run_id=run_id)

    def finished(self, task: pb.Task, head: Anchor | None) -> None:
        """The coordinator's SHUTDOWN, with its log's ``head`` (anchors that log to its end)."""
        self.journal(event="shutdown", run_id=task.run_id)
        self.audit(
            "run_finished",
            run_id=task.run_id,
            message=task.message,
            **payload_of(head, task.run_id),
        )

    def received(self, task: pb.Task, node: str, model_digest: str, head: Anchor | None) -> None:
        """A task's model, downloaded and checked, with the coordinator's log ``head``, and
        the run's training settings a training task carries (what the site trained with)."""
        train = train_record(task)
        trains = {"train": train} if train is not None else {}
        self.journal(
            event="model",
            round=task.round,
            kind=pb.TaskKind.Name(task.kind),
            model_digest=model_digest,
            config=dict(task.config),
            **trains,
        )
        self.audit(
            "model_received",
            round=task.round,
            phase=phase_of(task),
            model_digest=model_digest,
            node_id=node,
            config=dict(task.config),
            **trains,
            # the coordinator's log head: truncating that log later cannot remove it here
            **payload_of(head, task.run_id),
        )

    def refused(self, task: pb.Task, code: str, reason: str) -> None:
        """The coordinator refused this site's answer to ``task``."""
        self.journal(event="refused", round=task.round, code=code, reason=reason)
        self.audit("result_refused", round=task.round, code=code, reason=reason)

    def sent(
        self,
        task: pb.Task,
        node: str,
        digest: str,
        n: int,
        *,
        metrics: Mapping[str, float] | None = None,
        declined: str = "",
        secagg: pb.SecAggReply | None = None,
        report: pb.SiteReport | None = None,
    ) -> None:
        """An answer the coordinator took: the update's ``digest`` ("" without a payload)
        and the statistics in ``report`` go to the log, the answer to the journal."""
        if digest:
            self.audit(
                "update_sent",
                round=task.round,
                phase=phase_of(task),
                digest=digest,
                num_examples=n,
                node_id=node,
            )
        if report is not None:
            self.shared(task.round, report)
        self.journal(
            event="pushed",
            round=task.round,
            kind=pb.TaskKind.Name(task.kind),
            num_examples=n,
            metrics=dict(metrics or {}),
            model_digest=digest,
            **({"declined": declined} if declined else {}),
            **({"secagg": secagg.WhichOneof("stage")} if secagg is not None else {}),
        )

    def privacy_spent(self, spent: Spent) -> None:
        """A local-DP round as the site charged it, from its ledger (written before the
        update leaves, and kept here: ε depends on the site's record count, so the
        coordinator is never told it)."""
        charge = spent.charge
        self.audit(
            "privacy_spent",
            round=charge.server_round,
            run_id=charge.run_id,
            local_epsilon=spent.epsilon,
            local_delta=spent.delta,
            accountant=spent.accountant,
            steps=charge.steps,
            privacy_event=charge.event.to_json(),
            mechanism=LOCAL_DP_MECHANISM,
        )

    def shared(self, server_round: int, report: pb.SiteReport) -> None:
        """The statistics this site shared: its largest drift figures and its group counts."""
        if report.drift:
            worst = {
                stat: max(report.drift, key=lambda d, s=stat: getattr(d, s))
                for stat in ("psi", "js", "ks")
            }
            self.audit(
                "drift_report",
                round=server_round,
                **{k: getattr(d, k) for k, d in worst.items()},
                **{f"{k}_feature": d.feature for k, d in worst.items()},
            )
        if report.fairness:
            self.audit(
                "fairness_counts",
                round=server_round,
                groups={
                    str(g.group): [g.n, g.tp, g.fp, g.tn, g.fn, g.correct] for g in report.fairness
                },
            )

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
