"""The compliance export's anchor check: each log's heads as the other party recorded them.

See :mod:`fedops.core.audit.anchor`: a head one party recorded of the other's log, which
that log no longer holds, shows the log was cut or rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedops.core.audit.anchor import anchor_in, missing_anchors
from fedops.core.audit.pseudonyms import MARK, head_mac
from fedops.core.audit.verify import VerifyResult


class Party(Protocol):
    """One verified log: where it is, its verdict and its verified entries."""

    path: Any
    result: VerifyResult
    entries: list[dict[str, Any]]


@dataclass(slots=True)
class Anchors:
    checked: int = 0
    lost: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # anchors no given log could be matched to


def check_anchors(
    coordinator: Party, sites: Sequence[Party], key: bytes | None, run_id: str
) -> Anchors:
    """Each party's log heads as the other side recorded them (:mod:`fedops.core.audit.anchor`).

    A site's heads are matched to its log by node id (the ids its own entries name), never
    by the log's self-declared actor, which whoever rewrites the log also chooses. A sealed
    head (central DP) is checked with the operator's key; without it, it is unchecked.
    """
    out = Anchors()
    log_of_node = {
        e["payload"].get("node_id"): party
        for party in sites
        for e in party.entries
        if e["event"] in ("model_received", "update_sent")
    }
    out.lost += _logs_of_other_runs(coordinator, sites, log_of_node)
    _check_site_heads(out, coordinator, log_of_node, key, run_id)
    _check_coordinator_heads(out, coordinator, sites, run_id)
    return out


def _logs_of_other_runs(
    coordinator: Party, sites: Sequence[Party], log_of_node: Mapping[Any, Party]
) -> list[str]:
    """A log rewritten under new node ids would match no anchor at all: say so instead."""
    lost: list[str] = []
    joined = {
        e["payload"].get("node_id") for e in coordinator.entries if e["event"] == "node_joined"
    }
    for party in sites:
        named = {n for n, owner in log_of_node.items() if owner is party}
        if joined and named and not named & joined:
            name = party.result.actor or str(party.path)
            lost.append(
                f"the log of site {name!r} ({party.path}) names no node this run's coordinator "
                "registered: another run's log, or rewritten"
            )
    return lost


def _check_site_heads(
    out: Anchors,
    coordinator: Party,
    log_of_node: Mapping[Any, Party],
    key: bytes | None,
    run_id: str,
) -> None:
    """The sites' heads the coordinator recorded, each against the log of its node."""
    for e in coordinator.entries:
        p = e["payload"]
        if e["event"] != "update_received" or not isinstance(p.get("site_head"), dict):
            continue
        node, where = (
            p.get("node_id"),
            f"the coordinator's entry {e['seq']} (round {p.get('round')})",
        )
        owner = log_of_node.get(node)
        if owner is None:
            why = (
                "a pseudonymous node (central DP) needs participants.key"
                if p.get(MARK)
                else f"no site log names node {node!r}"
            )
            out.unchecked.append(f"{where}: {why}")
            continue
        name = owner.result.actor or str(owner.path)
        out.checked += 1
        if (head := anchor_in(p, "site_head")) is not None:
            missing = missing_anchors(owner.entries, [(head, where)])
        elif key is not None and isinstance(p["site_head"].get("mac"), str):
            macs = {
                head_mac(key, run_id, p["round"], str(node), x["seq"], x["hash"])
                for x in owner.entries
                if isinstance(x.get("seq"), int) and isinstance(x.get("hash"), str)
            }
            missing = (
                []
                if p["site_head"]["mac"] in macs
                else [f"{where} anchored an entry it no longer holds"]
            )
        else:
            out.checked -= 1
            out.unchecked.append(f"{where}: a sealed head (central DP) needs participants.key")
            continue
        out.lost += [f"the log of site {name!r}: {m}" for m in missing]


def _check_coordinator_heads(
    out: Anchors, coordinator: Party, sites: Sequence[Party], run_id: str
) -> None:
    """The coordinator's heads each site recorded, against the coordinator's log."""
    for party in sites:
        name = party.result.actor or str(party.path)
        mine = [
            (head, f"site {name!r}'s entry {e['seq']}")
            for e in party.entries
            if e["event"] in ("model_received", "run_finished")
            and (head := anchor_in(e["payload"], "coordinator_head"))
            # a site's log may span runs: only this run's coordinator heads are its anchors
            and e["payload"]["coordinator_head"].get("run_id", run_id) == run_id
        ]
        out.checked += len(mine)
        out.lost += [
            f"the coordinator's log: {m}" for m in missing_anchors(coordinator.entries, mine)
        ]
