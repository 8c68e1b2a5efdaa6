"""Audit heads anchored in the other party's log: truncation that a local head cannot show.

A party's ``audit.head`` is rebuilt from the last line of a truncated log with
no key (every line carries its own signature), so it guards against accidents,
not against whoever can write the run directory. The other party can: the
coordinator sends its head with every task and each site records it in its own
``model_received`` entry (``coordinator_head``); each site sends its head with
every result and the coordinator records it in ``update_received``
(``site_head``). A log that no longer holds an entry another party anchored
was truncated or rewritten: ``fedops audit export`` checks every anchor
(:func:`missing_anchors`), and a site refuses a coordinator whose head goes
back (:class:`HeadWatch`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    hash: str

    def payload(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}


def anchor_of(seq: object, digest: object) -> Anchor | None:
    """An anchor from a peer's message, or None when it is not one (never trusted further)."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return None
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        return None
    return Anchor(seq, digest)


def anchor_in(payload: Mapping[str, Any], key: str) -> Anchor | None:
    value = payload.get(key)
    return anchor_of(value.get("seq"), value.get("hash")) if isinstance(value, Mapping) else None


class HeadWatch:
    """The last head a party showed, per run: it may only move forward along one chain.

    Each task that carries a model must show a head past the previous such task's (red
    team, issue 17): between two model dispatches the coordinator logs at least the
    first one's ``model_sent``, so an honest head always advances, and a coordinator
    that kept showing one old, real head would anchor nothing after it.
    """

    def __init__(self) -> None:
        self._last: dict[str, Anchor] = {}  # run -> the last head seen
        self._model: dict[str, tuple[Anchor, str]] = {}  # run -> (head, task) of the last model

    def regress(self, run_id: str, head: Anchor, *, task_id: str = "", strict: bool = False) -> str:
        """Why ``head`` cannot follow the last one seen in ``run_id`` ("" when it can);
        ``strict``: it must be past it (the same task shown again excepted)."""
        last = self._last.get(run_id)
        if last is not None and (
            head.seq < last.seq or (head.seq == last.seq and head.hash != last.hash)
        ):
            return (
                f"the coordinator's audit log went from entry {last.seq} back to entry "
                f"{head.seq}{' with another hash' if head.seq == last.seq else ''}: it was "
                "truncated or replaced"
            )
        model = self._model.get(run_id)
        if strict and model is not None and head.seq <= model[0].seq and task_id != model[1]:
            return (
                f"the coordinator's audit head is still entry {head.seq} for a new model: "
                "an honest coordinator's log grows between two (it records each model it "
                "sends), so this head anchors nothing"
            )
        self._last[run_id] = head
        if strict:
            self._model[run_id] = (head, task_id)
        return ""


def missing_anchors(
    entries: Sequence[Mapping[str, Any]], anchors: Iterable[tuple[Anchor, str]]
) -> list[str]:
    """One message per ``(anchor, where it was recorded)`` that ``entries`` do not hold."""
    hashes = {e.get("seq"): e.get("hash") for e in entries}
    last = max((s for s in hashes if isinstance(s, int)), default=-1)
    out = []
    for anchor, where in anchors:
        held = hashes.get(anchor.seq)
        if held == anchor.hash:
            continue
        if anchor.seq > last:
            why = f"it ends at entry {last}: entries were cut off its end"
        else:
            why = "that entry has another hash: the log was rewritten"
        out.append(f"{where} anchored entry {anchor.seq} ({anchor.hash[:16]}…), but {why}")
    return out
