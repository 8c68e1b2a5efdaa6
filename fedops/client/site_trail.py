"""What a site writes down: its journal (``client.jsonl``) and its signed audit log.

The audit entries mirror the coordinator's (same phase names, same digests),
so ``fedops audit export`` can cross-check the two sides round by round.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fedops.core.audit import json_values
from fedops.crypto import Identity
from fedops.runtime.audit.log_file import AuditLog
from fedops.tasks.ledger import Spent
from fedops.v1 import fedops_pb2 as pb

#: what a site's local_epsilon is a guarantee of (README: "Privacy guarantees")
LOCAL_DP_MECHANISM = (
    "record-level DP-SGD (Opacus): Poisson sampling of records, add/remove-one record "
    "adjacency, PLD accountant (dp_accounting; RDP where ε is above 1000) over every round "
    "this site trained with DP, noise from the site's OS entropy; holds against the "
    "coordinator, other sites and readers of the released models, for the site's training "
    "records (not its test rows)"
)

_SECAGG_PHASES = {
    "setup": "secagg_keys",
    "keys": "secagg_shares",
    "mask": "secagg_masked",
    "consistency": "secagg_consistency",
    "unmask": "secagg_unmask",
}


def phase_of(task: pb.Task) -> str:
    """The phase name the coordinator's audit log uses for the same task."""
    if task.kind == pb.TASK_KIND_SECAGG:
        return _SECAGG_PHASES.get(task.secagg.WhichOneof("stage") or "", "secagg")
    return {
        pb.TASK_KIND_FIT: "fit",
        pb.TASK_KIND_EVALUATE: "evaluate",
        pb.TASK_KIND_SEND_INITIAL: "initial",
    }.get(task.kind, pb.TaskKind.Name(task.kind))


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

    def sent(self, task: pb.Task, node: str, digest: str, n: int) -> None:
        if digest:
            self.audit(
                "update_sent",
                round=task.round,
                phase=phase_of(task),
                digest=digest,
                num_examples=n,
                node_id=node,
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
