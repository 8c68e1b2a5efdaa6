"""Who took part in a central-DP round, written in the audit log under per-round pseudonyms.

Central DP's ε is amplified by secret Poisson sampling: it holds against a
party that does not know who took part. The coordinator's signed audit log is
made to be handed to auditors, so, unless the operator publishes participants
(``privacy.publish_participants``), its round-scoped entries (``model_sent``,
``update_received``, ``update_rejected``, ``round_committed``) name a node by
``p-`` + HMAC-SHA256(key, run id | round | node id), cut to 16 hex digits: a
reader without the key cannot tell which site took part, nor link one node's
rounds together. The key is the operator's (``participants.key`` in the run
directory); with it, :func:`reidentify` maps the pseudonyms back through the
nodes that joined (``node_joined`` stays in clear: the population is public),
which the compliance cross-check does. Round 0 (the initial model) samples
nobody and stays in clear.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

#: marks an entry whose node ids are pseudonyms (the payload key is in the signed entry)
MARK = "participants_pseudonymous"
KEY_BYTES = 32
_EVENTS = ("model_sent", "update_received", "update_rejected", "round_committed")


def pseudonym(key: bytes, run_id: str, server_round: int, node: str) -> str:
    message = f"{run_id}\x00{server_round}\x00{node}".encode()
    return "p-" + hmac.new(key, message, hashlib.sha256).hexdigest()[:16]


def head_mac(key: bytes, run_id: str, server_round: int, node: str, seq: int, digest: str) -> str:
    """A site's anchored audit head, sealed: in clear its seq would link the node's rounds.
    With the key, the compliance check finds the entry it names in the site's log."""
    message = f"head\x00{run_id}\x00{server_round}\x00{node}\x00{seq}\x00{digest}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class Pseudonyms:
    """``(event, payload) -> payload`` with every node id of a round ≥ 1 replaced."""

    def __init__(self, key: bytes, run_id: str) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"a pseudonym key needs {KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self.run_id = run_id

    def __call__(self, event: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        r = payload.get("round")
        if event not in _EVENTS or not isinstance(r, int) or isinstance(r, bool) or r < 1:
            return payload
        name = self._name(r)
        out = dict(payload)
        if "nodes" in out:
            out["nodes"] = sorted(name(str(n)) for n in out["nodes"])
        head = out.get("site_head")
        if isinstance(head, Mapping) and "node_id" in out:
            out["site_head"] = {
                "mac": head_mac(
                    self._key, self.run_id, r, str(out["node_id"]), head["seq"], head["hash"]
                )
            }
        if "node_id" in out:
            out["node_id"] = name(str(out["node_id"]))
        if "site" in out:
            out["site"] = ""
        if "participants" in out:
            out["participants"] = sorted(
                (
                    {**{k: v for k, v in p.items() if k != "site"}, "node_id": name(p["node_id"])}
                    for p in out["participants"]
                ),
                key=lambda p: str(p["node_id"]),
            )
        out[MARK] = True
        return out

    def _name(self, server_round: int) -> Any:
        def name(node: str) -> str:
            return pseudonym(self._key, self.run_id, server_round, node)

        return name


def reidentify(entries: Iterable[Mapping[str, Any]], key: bytes) -> list[dict[str, Any]]:
    """The coordinator's entries with pseudonyms mapped back to the nodes that joined.

    A pseudonym no joined node has under ``key`` (another run's key, a forged entry)
    is left as it is, and so fails the cross-check like any unknown node.
    """
    entries = list(entries)
    run_id, nodes = "", set()
    for e in entries:
        p = e.get("payload", {})
        if e.get("event") == "run_started" and isinstance(p.get("run_id"), str):
            run_id = p["run_id"]
        if e.get("event") == "node_joined" and isinstance(p.get("node_id"), str):
            nodes.add(p["node_id"])
    out = []
    for e in entries:
        p = e.get("payload", {})
        r = p.get("round")
        if not p.get(MARK) or not isinstance(r, int):
            out.append(dict(e))
            continue
        back = {pseudonym(key, run_id, r, n): n for n in nodes}
        q = dict(p)
        if isinstance(q.get("nodes"), list):
            q["nodes"] = sorted(back.get(str(n), str(n)) for n in q["nodes"])
        if isinstance(q.get("node_id"), str):
            q["node_id"] = back.get(q["node_id"], q["node_id"])
        if isinstance(q.get("participants"), list):
            q["participants"] = [
                {**x, "node_id": back.get(str(x.get("node_id")), x.get("node_id"))}
                for x in q["participants"]
                if isinstance(x, Mapping)
            ]
        q.pop(MARK)
        out.append({**e, "payload": q})
    return out
