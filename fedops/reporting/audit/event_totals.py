"""The compliance report's event counts: by event, by party and by category."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: report totals: event names containing any of the substrings
CATEGORIES: dict[str, tuple[str, ...]] = {
    "joins": ("join",),
    "rejections": ("reject",),
    "privacy": ("privacy", "epsilon", "dp_"),
    "drift": ("drift",),
    "fairness": ("fairness",),
    "alerts": ("alert",),
}


def event_totals(parties: Iterable[tuple[str, Sequence[Mapping[str, Any]]]]) -> dict[str, Any]:
    """Counts over ``(role, entries)`` of every party: the coordinator's and the sites'."""
    by_role: dict[str, Counter[str]] = {"coordinator": Counter(), "sites": Counter()}
    for role, entries in parties:
        side = "coordinator" if role == "coordinator" else "sites"
        by_role[side].update(e["event"] for e in entries)
    total = by_role["coordinator"] + by_role["sites"]
    categories = {
        name: sum(n for event, n in total.items() if any(s in event for s in needles))
        for name, needles in CATEGORIES.items()
    }
    return {
        "by_event": dict(sorted(total.items())),
        "coordinator": dict(sorted(by_role["coordinator"].items())),
        "sites": dict(sorted(by_role["sites"].items())),
        "categories": categories,
    }
