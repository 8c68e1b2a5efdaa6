"""The ε a coordinator's log reports, recomputed from the round events it logged.

Every ``privacy_spent`` entry carries the round's DP event (``privacy_event``: σ, the
sampling, its rate) and the ε spent so far, at the entry's δ, by its accountant. An
auditor need not take that ε on trust: composing the logged events again gives it, and
a coordinator that reported less than its own events imply (a ledger rolled back, a
modified build) is caught from the signed log alone. More than they imply is honest: a
round run again after a crash is in the ledger twice and in the log once. Checked: each
(δ, accountant)'s newest ``epsilon``, and ``epsilon_known_participants`` (each event's
twin for a party that knows who took part). A distributed-DP round that unmasked nothing logs
``effective_noise_multiplier: null`` and spent nothing: its event is not counted.
Entries without an event (local DP: each site accounts for itself) are not checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedops.core.privacy.accountant import PrivacyLedger, RoundEvent, epsilon, known_event

#: relative difference tolerated between a logged ε and its recomputation
TOLERANCE = 1e-6
SPENT = "privacy_spent"


def recheck_privacy(
    entries: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(a row per ε checked, the mismatches) for the coordinator log ``entries``."""
    events: list[RoundEvent] = []
    newest: dict[tuple[str, float, str], tuple[int, float, int]] = {}  # -> round, ε, events
    for entry in entries:
        payload = entry.get("payload")
        if entry.get("event") != SPENT or not isinstance(payload, Mapping):
            continue
        raw = payload.get("privacy_event")
        if not isinstance(raw, Mapping):
            continue
        if (
            "effective_noise_multiplier" in payload
            and payload["effective_noise_multiplier"] is None
        ):
            continue  # distributed DP: nothing unmasked, nothing spent
        try:
            events.append(RoundEvent.from_json(dict(raw)))
        except (KeyError, TypeError, ValueError):
            continue  # (the logged ε then has nothing to be checked against)
        delta, accountant = _number(payload.get("delta")), payload.get("accountant")
        for key in ("epsilon", "epsilon_known_participants"):
            value = _number(payload.get(key))
            if value is not None and delta is not None and isinstance(accountant, str):
                newest[(key, delta, accountant)] = (
                    payload.get("round", -1),
                    value,
                    len(events),
                )
    rows, mismatches = [], []
    for (key, delta, accountant), (server_round, logged, count) in sorted(newest.items()):
        steps = events[:count]
        if key == "epsilon_known_participants":
            steps = [known_event(e) for e in steps]
        try:
            ledger = PrivacyLedger()  # consecutive equal rounds composed as the run's ledger does
            for event in steps:
                ledger.record(event)
            again = epsilon(ledger.history, delta, accountant)
        except ValueError as exc:  # an accountant, δ or event mix it cannot use: said
            again, why = math.nan, str(exc)
        else:
            why = ""
        same = _close(logged, again)
        rows.append(
            {"key": key, "round": server_round, "delta": delta, "accountant": accountant,
             "rounds": count, "logged": logged, "recomputed": again, "ok": same}
        )  # fmt: skip
        if not same:
            mismatches.append(
                {
                    "kind": "privacy_epsilon",
                    "message": (
                        f"round {server_round}'s {key} is {logged:.6g} at δ = {delta:g} "
                        f"({accountant}), but the {count} round events the log recorded "
                        f"compose to {again:.6g}{f' ({why})' if why else ''}"
                    ),
                }
            )
    return rows, mismatches


def _number(value: Any) -> float | None:
    if value == "inf":
        return math.inf
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _close(logged: float, again: float) -> bool:
    """Whether ``logged`` is no less than ``again``. More is honest: a coordinator killed
    after committing a round's ledger and before logging the round runs it again, and its
    ledger (and every ε logged after) counts the first run's release too, which the log
    names only once."""
    if math.isinf(again):
        return math.isinf(logged)
    return logged >= again - TOLERANCE * max(1.0, abs(again))
