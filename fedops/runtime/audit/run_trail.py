"""What a coordinator writes into its audit log about a run, round by round.

Per-node events (joins, models sent, updates received, each with digests)
come from the transport; this adds the run's frame (config digest, start,
end) and, for every committed round, the model digest and the checkpoint
file's sha256, the privacy spent, the drift and fairness reports and the
alerts, so an auditor can answer "what happened in round 37" from the signed
log alone, and a resumed coordinator trusts only the checkpoints the log
committed (:mod:`fedops.runtime.audit.commitments`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedops.core.audit import json_values
from fedops.runtime.audit.commitments import (
    CHARGE_EVENT,
    COMMIT_EVENT,
    FALLBACK_EVENT,
    INITIAL_EVENT,
)
from fedops.runtime.audit.log_file import AuditLog
from fedops.runtime.driver import RoundRecord
from fedops.runtime.store import Participant, RunStore, config_digest

PRIVACY_KEYS = (
    "privacy_mechanism",
    "privacy_holds_against",
    "accountant",
    "epsilon",
    "epsilon_pld",
    "epsilon_rdp",
    "epsilon_known_participants",
    "delta",
    "noise_multiplier",
    "update_noise_multiplier",
    "effective_noise_multiplier",
    "clip_norm",
    "privacy_event",
    "target_epsilon",
)
DRIFT_KEYS = ("psi", "psi_feature", "js", "js_feature", "ks", "ks_feature")


class RunTrail:
    """Turns a run's milestones into signed audit entries."""

    def __init__(self, audit: AuditLog, store: RunStore) -> None:
        self.audit = audit
        self.store = store

    def _record(self, event: str, payload: Mapping[str, Any]) -> None:
        self.audit.record(event, json_values(payload))

    def checkpoint_fallback(self, event: Mapping[str, Any]) -> None:
        """The run resumed from an earlier round: its last checkpoints did not verify."""
        self._record(FALLBACK_EVENT, event)

    def initial_model(self, event: Mapping[str, Any]) -> None:
        """Round 0 was committed (``{round, model_digest, checkpoint_sha256}``): signed like
        every later round, so a resume can refuse an initial model swapped in state.sqlite."""
        self._record(INITIAL_EVENT, event)

    def privacy_charged(self, charge: Mapping[str, Any]) -> None:
        """A DP round was spent (its noised model released, or its sum unmasked): signed
        before the ledger is committed to ``state.sqlite``, which whoever holds the run
        directory can edit, so a crash before the round commits cannot hide the charge."""
        self._record(CHARGE_EVENT, charge)

    def run_started(self, run_id: str, config: Mapping[str, Any], *, task_digest: str = "") -> None:
        self._record(
            "run_started",
            {
                "run_id": run_id,
                "config_digest": config_digest(config),
                "config": dict(config),
                "task_digest": task_digest,
                "resume_after_round": self.store.last_round(),
            },
        )

    def rejection(self, server_round: int, node: str, code: str, reason: str) -> None:
        self._record(
            "update_rejected",
            {"round": server_round, "node_id": node, "code": code, "reason": reason[:2000]},
        )

    def observe_round(self, record: RoundRecord) -> None:
        """The round's entries (commit, DP spent, each site's drift report, alerts), written
        together: one disk flush per round whatever the number of sites."""
        r, m = record.server_round, record.metrics
        entries: list[tuple[str, dict[str, Any]]] = [
            (
                COMMIT_EVENT,
                {
                    "round": r,
                    "model_digest": self.store.model_digest(r),
                    "checkpoint_sha256": self.store.checkpoint_sha256(r),
                    "num_clients": m.get("num_clients"),
                },
            )
        ]
        privacy = {k: m[k] for k in PRIVACY_KEYS if k in m}
        if privacy:
            entries.append(("privacy_spent", {"round": r, **privacy}))
        for site, drift in m.get("drift", {}).items():
            entries.append(
                (
                    "drift_report",
                    {"round": r, "site": site, **{k: drift.get(k) for k in DRIFT_KEYS}},
                )
            )
        if "fairness" in m:
            entries.append(("fairness_report", {"round": r, **m["fairness"]}))
        entries += _alerts(r, m)
        payloads = [(event, json_values(payload)) for event, payload in entries]
        payloads[0][1]["participants"] = _participant_rows(record.participants)
        self.audit.record_many(payloads)

    def run_finished(self, summary: Mapping[str, Any]) -> None:
        """The run's end. Its final model digest is signed only if the log committed it as
        that round's model: state.sqlite (editable) names it, and a run that failed before
        it could fall back must not sign a model swapped in there."""
        keys = ("status", "rounds_completed", "model_digest", "privacy", "stop_reason")
        payload = {k: summary[k] for k in keys if k in summary}
        final, last = payload.get("model_digest"), payload.get("rounds_completed")
        if final is not None and not (
            isinstance(last, int) and self.audit.commitments.vouches_model(last, final)
        ):
            payload["model_digest"] = None
            payload["model_unvouched"] = (
                f"state.sqlite names model {final} for round {last}, which the log never committed"
            )
        self._record("run_finished", payload)


def _participant_rows(participants: Sequence[Participant]) -> list[dict[str, Any]]:
    """The commit entry's participants, as :func:`json_values` makes them. Their fields are
    plain strings, which it keeps as they are: its walk of 200,000 rows (0.13 s) is skipped
    unless some field is not a ``str``."""
    rows = [
        {"node_id": p.node_id, "site": p.site, "phase": p.phase, "outcome": p.outcome}
        for p in participants
    ]
    if {type(v) for row in rows for v in row.values()} <= {str}:
        return rows
    return json_values(rows)  # type: ignore[no-any-return]


def _alerts(server_round: int, m: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One entry per alerting site (drift) or metric (fairness), not per statistic."""
    by_site: dict[str, list[dict[str, Any]]] = {}
    for alert in m.get("drift_alerts", []):
        by_site.setdefault(alert["site"], []).append(alert)
    entries = []
    for site, alerts in sorted(by_site.items()):
        worst = max(alerts, key=lambda a: a["value"])
        entries.append(
            (
                "alert",
                {
                    "round": server_round,
                    "kind": "drift",
                    "site": site,
                    "statistics_over_threshold": len(alerts),
                    "features": sorted({a["feature"] for a in alerts}),
                    "worst": worst,
                },
            )
        )
    for alert in m.get("fairness_alerts", []):
        entries.append(("alert", {"round": server_round, "kind": "fairness", **alert}))
    return entries
