"""A compliance report from the parties' audit logs: is every log intact, do they agree?

Each party's log proves only what that party recorded. Put side by side they
prove more: the model a site says it received must be the one the
coordinator says it sent, and every update a site says it sent must have
arrived (``update_received``, same digest) or have been refused
(``update_rejected``); an update the coordinator recorded from a node whose
site log never sent it is flagged too, unless the coordinator had not committed
that round when its log was reopened: a coordinator that crashes after logging
an upload but before acknowledging it leaves the site without the
acknowledgement its ``update_sent`` waits for, and the round is redone, so such
an update reached no model (listed as ``abandoned_updates``). Only the verified
prefix of a log that fails verification is used, and the failure itself fails
the report.

Payloads cross-checked (``round`` int, ``phase`` ``"fit"`` or ``"evaluate"``):

* coordinator ``model_sent``: ``{round, phase, model_digest, nodes}``;
  ``update_received``: ``{round, node_id, site, phase, digest, num_examples}``;
  ``update_rejected``: ``{round, node_id, site, reason}`` (``phase`` optional);
* site ``model_received``: ``{round, phase, model_digest, node_id}``;
  ``update_sent``: ``{round, phase, digest, num_examples, node_id}`` (an empty
  digest, e.g. a masked SecAgg+ contribution, is not cross-checked).

Event totals group event names by substring
(:data:`fedops.reporting.audit.event_totals.CATEGORIES`). Keys are trusted on first
use (the report shows each key's fingerprint, to compare with the parties'
``audit_key.pub``), unless the consortium's CA certificate is given: then every log
must verify with the key of the certificate beside it (``audit_key.crt``, written by a
party started with its kit), which that CA must have issued, for a coordinator's log
to the coordinator and for a site's to a site; the report names the certified party of
each log. Writes ``compliance.json`` and a self-contained ``compliance.html`` (inline
CSS, no scripts, every string escaped).

Each log's heads as the other side anchored them are checked too
(:mod:`fedops.core.audit.anchor`): a coordinator head a site recorded, or a site
head the coordinator recorded, that the log no longer holds is an
``anchor_missing`` mismatch: that log was truncated or rewritten.

Under central DP the coordinator names the nodes of each round by keyed
pseudonyms (:mod:`fedops.core.audit.pseudonyms`). With the run directory's
``participants.key`` (the operator's) they are mapped back and cross-checked
like any round; without it those rounds are listed as ``pseudonymous_rounds``
and not cross-checked. A report made with the key names who took part in each
DP round: its readers get the known-participation ε, not the headline.

The run directory's model files are checked too when the caller gives a check
(``fedops audit export`` gives :func:`fedops.runtime.audit.model_files.check_model_files`,
which reads checkpoints, a runtime format this package does not import): a model file
that is not the model the coordinator's log committed is a ``model_file`` mismatch.
The ε the coordinator's ``privacy_spent`` entries report is recomputed from the round
events they logged (:mod:`fedops.reporting.audit.privacy_recheck`): a ``privacy_epsilon``
mismatch when they disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fedops.consortium.signing import Signer
from fedops.core.audit.pseudonyms import MARK, reidentify
from fedops.core.audit.verify import VerifyResult, split_log
from fedops.core.model_hash import shortened
from fedops.reporting.audit.anchor_checks import check_anchors
from fedops.reporting.audit.compliance_html import render_html
from fedops.reporting.audit.event_totals import event_totals
from fedops.reporting.audit.logs import (
    certified_summary,
    verify_certified_log,
    verify_log_file,
)
from fedops.reporting.audit.privacy_recheck import recheck_privacy
from fedops.reporting.audit.run_logs import (
    SITE_LOG_PATTERNS,
    coordinator_log,
    model_files_against,
    site_log_paths,
)

__all__ = ["export_compliance", "verify_certified_log", "verify_log_file"]
_PHASES = {"fit": 0, "evaluate": 1}
#: the operator's key for the pseudonyms of central-DP rounds (written by the runtime)
PSEUDONYM_KEY = "participants.key"

Key = tuple[int, str, str]  # (round, phase, node_id)


class FileCheck(Protocol):
    """A check of the run directory's files: a row per file, the failures as mismatches."""

    rows: list[dict[str, Any]]
    mismatches: list[dict[str, Any]]


#: ``(run_dir, the coordinator's verified entries)`` -> the model files' check
ModelFilesCheck = Callable[[Path, list[dict[str, Any]]], FileCheck]


@dataclass(slots=True)
class _Party:
    role: str
    path: Path
    result: VerifyResult
    entries: list[dict[str, Any]]
    certified: Signer | None = None

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "certified": certified_summary(self.certified),
            "role": self.role,
            "path": str(self.path),
            "actor": r.actor,
            "ok": r.ok,
            "entries": r.entries,
            "fingerprint": r.fingerprint,
            "pinned": r.pinned,
            "reason": r.reason,
            "first_bad": r.first_bad,
            "warnings": list(r.warnings),
        }


def _load(
    path: Path,
    role: str,
    ca_pem: bytes | None = None,
    allow_missing_head: bool = False,
    crl_pem: bytes | None = None,
) -> _Party:
    """Verify a log (pinned to the CA, with one); keep its verified entries (a prefix, when
    it fails)."""
    signer = None
    if ca_pem is None:
        result = verify_log_file(path, allow_missing_head=allow_missing_head)
    else:
        result, signer = verify_certified_log(
            path, ca_pem, role=role, allow_missing_head=allow_missing_head, crl_pem=crl_pem
        )
    entries: list[dict[str, Any]] = []
    if result.entries:
        lines, _ = split_log(path.read_bytes())
        entries = [json.loads(line) for line in lines[: result.entries]]
    return _Party(role, path, result, entries, signer)


def _fields(payload: Mapping[str, Any], *names: str) -> tuple[Any, ...] | None:
    """The named fields, or None when one is missing or has the wrong type."""
    values = tuple(payload.get(n) for n in names)
    for name, value in zip(names, values, strict=True):
        want: type = int if name in ("round", "num_examples") else str
        if not isinstance(value, want) or isinstance(value, bool):
            return None
    return values


@dataclass(slots=True)
class _Coordinator:
    sent: dict[tuple[int, str], set[str]] = field(default_factory=dict)
    sent_to: dict[Key, str] = field(default_factory=dict)
    received: dict[Key, tuple[str, str]] = field(default_factory=dict)  # -> (digest, site)
    rejected: set[tuple[int, str]] = field(default_factory=set)
    # received in a round the coordinator had not committed when it crashed (log reopened)
    abandoned: set[Key] = field(default_factory=set)
    # rounds whose nodes are pseudonyms no key was given for: not cross-checked
    hidden: set[int] = field(default_factory=set)

    @classmethod
    def index(cls, entries: list[dict[str, Any]]) -> _Coordinator:
        c = cls()
        pending: set[Key] = set()  # received in rounds not yet committed, in this life
        for e in entries:
            event, p = e["event"], e["payload"]
            if p.get(MARK) and isinstance(p.get("round"), int):
                c.hidden.add(p["round"])
                continue
            if event == "log_reopened":  # the previous life's uncommitted rounds are redone
                c.abandoned |= pending
                pending = set()
            elif event == "round_committed" and isinstance(p.get("round"), int):
                pending = {k for k in pending if k[0] != p["round"]}
            if event == "model_sent" and (f := _fields(p, "round", "phase", "model_digest")):
                c.sent.setdefault((f[0], f[1]), set()).add(f[2])
                nodes = p.get("nodes")
                for node in nodes if isinstance(nodes, list) else []:
                    c.sent_to[(f[0], f[1], str(node))] = f[2]
            elif event == "update_received" and (
                f := _fields(p, "round", "phase", "node_id", "digest")
            ):
                c.received[(f[0], f[1], f[2])] = (f[3], str(p.get("site", "")))
                pending.add((f[0], f[1], f[2]))
                c.abandoned.discard((f[0], f[1], f[2]))
            elif event == "update_rejected" and (f := _fields(p, "round", "node_id")):
                c.rejected.add((f[0], f[1]))
        return c


@dataclass(slots=True)
class _Check:
    """The cross-check's tables, filled site by site."""

    coordinator: _Coordinator
    rows: dict[tuple[int, str, str, str], dict[str, Any]] = field(default_factory=dict)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    site_sent: set[Key] = field(default_factory=set)
    site_nodes: set[str] = field(default_factory=set)

    def row(self, site: str, key: Key) -> dict[str, Any]:
        r, phase, node = key
        return self.rows.setdefault(
            (r, phase, site, node),
            {"site": site, "node_id": node, "model_digest": None, "model_match": None,
             "update_digest": None, "coordinator_digest": None, "update_status": None},
        )  # fmt: skip

    def mismatch(self, kind: str, site: str, key: Key, message: str, **digests: Any) -> None:
        r, phase, node = key
        where = f"round {r} {phase}: site {site!r} (node {node})"
        self.mismatches.append(
            {"kind": kind, "round": r, "phase": phase, "site": site, "node_id": node,
             "message": f"{where}: {message}", **digests}
        )  # fmt: skip

    def model_received(self, site: str, key: Key, digest: str) -> None:
        self.site_nodes.add(key[2])
        expected = self.coordinator.sent_to.get(key)
        sent = {expected} if expected else self.coordinator.sent.get(key[:2], set())
        row = self.row(site, key)
        row["model_digest"], row["model_match"] = digest, digest in sent
        if not sent:
            self.mismatch("model_not_sent", site, key, "the coordinator recorded no model_sent")
        elif digest not in sent:
            self.mismatch(
                "model_digest", site, key,
                f"received model {shortened(digest)}, the coordinator sent {_short(sent)}",
                site_digest=digest, coordinator_digest=sorted(sent),
            )  # fmt: skip

    def update_sent(self, site: str, key: Key, digest: object) -> None:
        self.site_nodes.add(key[2])
        self.site_sent.add(key)
        if not isinstance(digest, str) or not digest:
            return  # e.g. a masked SecAgg+ contribution: nothing to compare
        row = self.row(site, key)
        got = self.coordinator.received.get(key)
        row["update_digest"], row["coordinator_digest"] = digest, got and got[0]
        if got is not None and got[0] == digest:
            row["update_status"] = "match"
        elif (key[0], key[2]) in self.coordinator.rejected:
            row["update_status"] = "rejected"
        elif got is None:
            row["update_status"] = "missing"
            self.mismatch("update_missing", site, key, "the coordinator has no record of it")
        else:
            row["update_status"] = "mismatch"
            self.mismatch(
                "update_digest", site, key,
                f"sent update {shortened(digest)}, the coordinator received {shortened(got[0])}",
                site_digest=digest, coordinator_digest=got[0],
            )  # fmt: skip

    def unsent_updates(self) -> None:
        for key, (digest, site) in sorted(self.coordinator.received.items()):
            if key in self.coordinator.abandoned:
                continue  # its round was redone: the site may never have had the ack
            if key[2] in self.site_nodes and key not in self.site_sent and digest:
                self.mismatch(
                    "update_not_sent", site or "?", key,
                    "the coordinator recorded an update the site's log never sent",
                    coordinator_digest=digest,
                )  # fmt: skip


def _short(digests: set[str]) -> str:
    return " or ".join(shortened(d) for d in sorted(digests))


def _cross_check(coordinator: _Party, sites: list[_Party]) -> _Check:
    check = _Check(_Coordinator.index(coordinator.entries))
    for party in sites:
        site = party.result.actor or str(party.path)
        for e in party.entries:
            p = e["payload"]
            if p.get("round") in check.coordinator.hidden:
                continue
            if e["event"] == "model_received" and (
                f := _fields(p, "round", "phase", "node_id", "model_digest")
            ):
                check.model_received(site, (f[0], f[1], f[2]), f[3])
            elif e["event"] == "update_sent" and (f := _fields(p, "round", "phase", "node_id")):
                check.update_sent(site, (f[0], f[1], f[2]), p.get("digest"))
    check.unsent_updates()
    return check


def _round_table(check: _Check) -> list[dict[str, Any]]:
    keys = set(check.coordinator.sent) | {k[:2] for k in check.rows}
    table = []
    for r, phase in sorted(keys, key=lambda k: (k[0], _PHASES.get(k[1], 2), k[1])):
        sites = [v for k, v in sorted(check.rows.items()) if k[:2] == (r, phase)]
        digests = sorted(check.coordinator.sent.get((r, phase), set()))
        table.append({"round": r, "phase": phase, "model_digests": digests, "sites": sites})
    return table


def export_compliance(
    run_dir: Path,
    out_dir: Path | None = None,
    site_logs: Sequence[Path] = (),
    *,
    ca_pem: bytes | None = None,
    allow_missing_head: bool = False,
    crl_pem: bytes | None = None,
    model_files: ModelFilesCheck | None = None,
) -> dict[str, Any]:
    """Verify all logs, cross-check digests, write ``compliance.{json,html}``; the report.

    With ``ca_pem`` (the consortium CA's certificate) every log is pinned to
    the key the CA certified for its party (:func:`verify_certified_log`), and
    with ``crl_pem`` a log signed by a revoked key fails. ``model_files`` checks the
    run directory's model files against the coordinator's log (none without it).
    """
    run_dir = Path(run_dir)
    log = coordinator_log(run_dir)  # NotARunDirectory: nothing read, nothing written
    coordinator = _load(log, "coordinator", ca_pem, allow_missing_head, crl_pem)
    key_path = run_dir / PSEUDONYM_KEY
    key = key_path.read_bytes() if key_path.is_file() else None  # the operator's
    if key is not None:  # DP rounds' pseudonyms back to node ids
        coordinator.entries = reidentify(coordinator.entries, key)
    sites = [
        _load(p, "site", ca_pem, allow_missing_head, crl_pem)
        for p in site_log_paths(run_dir, coordinator.path, site_logs)
    ]
    parties = [coordinator, *sites]
    check = _cross_check(coordinator, sites)
    anchors = check_anchors(coordinator, sites, key, _run_id_of(coordinator))
    check.mismatches += [{"kind": "anchor_missing", "message": m} for m in anchors.lost]
    files, unchecked = model_files_against(
        run_dir, coordinator.result.ok, coordinator.entries, model_files
    )
    check.mismatches += files.mismatches if files is not None else []
    privacy, privacy_mismatches = recheck_privacy(coordinator.entries)
    check.mismatches += privacy_mismatches
    report: dict[str, Any] = {
        "ok": all(p.result.ok for p in parties) and not check.mismatches,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
        "ca_pinned": ca_pem is not None,
        "parties": [p.summary() for p in parties],
        "rounds": _round_table(check),
        "mismatches": check.mismatches,
        "model_files": files.rows if files is not None else None,
        "model_files_unchecked": unchecked,
        "site_logs_searched": [str(run_dir / p) for p in SITE_LOG_PATTERNS],
        "privacy_recomputed": privacy,
        "pseudonymous_rounds": sorted(check.coordinator.hidden),
        "anchors_checked": anchors.checked,
        # the coordinator's records of site heads no given log (or no key) could check
        "anchors_unchecked": anchors.unchecked,
        "abandoned_updates": [
            {"round": r, "phase": phase, "node_id": node}
            for r, phase, node in sorted(check.coordinator.abandoned)
        ],
        "events": event_totals((p.role, p.entries) for p in parties),
    }
    _write_report(report, Path(out_dir) if out_dir is not None else run_dir)
    return report


def _run_id_of(coordinator: _Party) -> str:
    """The run the coordinator's log started: a site's anchors of other runs are not its."""
    return next(
        (
            e["payload"].get("run_id", "")
            for e in coordinator.entries
            if e["event"] == "run_started"
        ),
        "",
    )


def _write_report(report: dict[str, Any], out: Path) -> None:
    """Write ``compliance.{json,html}`` into ``out``; the report then says where they are."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False)
    (out / "compliance.json").write_text(text + "\n", encoding="utf-8")
    (out / "compliance.html").write_text(render_html(report), encoding="utf-8")
    report["paths"] = {"json": str(out / "compliance.json"), "html": str(out / "compliance.html")}
