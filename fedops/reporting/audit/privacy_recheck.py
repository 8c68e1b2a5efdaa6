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

A round is charged (``privacy_charged``, its event and ε so far) before it is committed,
so a round a coordinator stopped in after its release is counted too; the round's
``privacy_spent`` entry confirms its charge and is not counted again.

The run's ε is one claim over all its rounds, so what each round's entries say it holds
against (``privacy_holds_against``) and its mechanism (``privacy_mechanism``) must not
change within the run: a change is a ``privacy_claim`` mismatch (a resume against more
colluding sites than earlier rounds were accounted for, or under another mechanism).
What may honestly change is not compared: the accountant named, the sampling rate, and
fewer colluders (earlier rounds had more noise than that claim needs).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fedops.core.privacy.accountant import PrivacyLedger, RoundEvent, epsilon, known_event

#: relative difference tolerated between a logged ε and its recomputation
TOLERANCE = 1e-6
SPENT = "privacy_spent"
CHARGED = "privacy_charged"
#: "up to 4 colluding sites" (distributed DP's claim)
_COLLUDERS = re.compile(r"up to (\d+) colluding site")
#: what a claim may honestly change between rounds: central DP's sampling rate, the accountant
_HONEST = (
    (re.compile(r" \((?:q=[^)]*|\d+ of \d+)\)"), ""),
    (re.compile(r"\b(?:PLD|RDP) accountant"), "accountant"),
    (_COLLUDERS, "up to c colluding site"),
)


def recheck_privacy(
    entries: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(a row per ε checked, the mismatches) for the coordinator log ``entries``."""
    spent = list(_privacy_entries(entries))
    events: list[RoundEvent] = []
    newest: dict[tuple[str, float, str], tuple[int, float, int]] = {}  # -> round, ε, events
    unconfirmed: dict[Any, RoundEvent] = {}  # round -> its charge no privacy_spent confirmed
    for kind, payload in spent:
        event = _event(payload)
        if event is None:
            continue  # (the logged ε then has nothing to be checked against)
        server_round = payload.get("round", -1)
        if kind == CHARGED:
            events.append(event)
            unconfirmed[server_round] = event
        elif unconfirmed.get(server_round) == event:
            del unconfirmed[server_round]  # confirms the charge counted above
        else:
            events.append(event)
        delta, accountant = _number(payload.get("delta")), payload.get("accountant")
        for key in ("epsilon", "epsilon_known_participants"):
            value = _number(payload.get(key))
            if value is not None and delta is not None and isinstance(accountant, str):
                newest[(key, delta, accountant)] = (server_round, value, len(events))
    rows, mismatches = _recomposed(events, newest)
    return rows, mismatches + _claim_changes(spent)


def _privacy_entries(
    entries: Sequence[Mapping[str, Any]],
) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for entry in entries:
        payload = entry.get("payload")
        if entry.get("event") in (SPENT, CHARGED) and isinstance(payload, Mapping):
            yield str(entry["event"]), payload


def _event(payload: Mapping[str, Any]) -> RoundEvent | None:
    """The round event an entry spent; None: it names none, or (distributed DP, its
    ``effective_noise_multiplier`` null) nothing was unmasked and nothing spent."""
    raw = payload.get("privacy_event")
    if not isinstance(raw, Mapping):
        return None
    if "effective_noise_multiplier" in payload and payload["effective_noise_multiplier"] is None:
        return None
    try:
        return RoundEvent.from_json(dict(raw))
    except (KeyError, TypeError, ValueError):
        return None


def _recomposed(
    events: list[RoundEvent], newest: Mapping[tuple[str, float, str], tuple[int, float, int]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each (key, δ, accountant)'s newest logged ε against its events composed again."""
    rows: list[dict[str, Any]] = []
    mismatches: list[dict[str, Any]] = []
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


def _claim_changes(spent: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """A ``privacy_claim`` mismatch for each change of what the run's rounds claim."""
    mismatches: list[dict[str, Any]] = []
    first: tuple[Any, str, str, str, str] | None = None  # round, its claim as compared, as said
    fewest: tuple[Any, int] | None = None  # the round accounted against the fewest colluders
    previous = None  # the colluders the entry before claimed
    for kind, payload in spent:
        mechanism, against = payload.get("privacy_mechanism"), payload.get("privacy_holds_against")
        if not (isinstance(mechanism, str) and isinstance(against, str)):
            continue
        server_round = payload.get("round", -1)
        found = _COLLUDERS.search(mechanism) or _COLLUDERS.search(against)
        now = int(found[1]) if found is not None else None
        if now is not None and fewest is not None and now > fewest[1] and now != previous:
            mismatches.append(_claim(
                f"round {server_round}'s {kind} claims its guarantee against up to {now} "
                f"colluding sites, but round {fewest[0]}'s noise was accounted against up to "
                f"{fewest[1]}: the run's ε composes both, and its claim does not hold for the "
                "rounds accounted against fewer"
            ))  # fmt: skip
        if now is not None and (fewest is None or now < fewest[1]):
            fewest = (server_round, now)
        previous = now
        claim = (server_round, _normalised(mechanism), _normalised(against), mechanism, against)
        if first is not None and claim[1:3] != first[1:3]:
            mismatches.append(_claim(
                f"round {server_round}'s {kind} claims {mechanism!r} against {against!r}, "
                f"but round {first[0]}'s claimed {first[3]!r} against {first[4]!r}: the run's "
                "one ε composes every round, so its claim must hold for each round's mechanism"
            ))  # fmt: skip
        if first is None or claim[1:3] != first[1:3]:
            first = claim
    return mismatches


def _normalised(text: str) -> str:
    for pattern, replacement in _HONEST:
        text = pattern.sub(replacement, text)
    return text


def _claim(message: str) -> dict[str, Any]:
    return {"kind": "privacy_claim", "message": message}


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
