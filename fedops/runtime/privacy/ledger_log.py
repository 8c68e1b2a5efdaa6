"""A restored central- or distributed-DP ledger held to what the signed audit log charged.

``state.sqlite`` can be edited or put back by whoever holds the run directory: a ledger
rolled back would let the run spend its budget again, and one of other events can give
as much ε now and less after more rounds. The audit log is signed with a key that party
does not hold, so a resumed ledger must hold every round event the log charged (each
``privacy_charged`` entry, and each ``privacy_spent`` that confirms none), central DP's
each with its twin for a party that knows who took part, and account at least the most ε
the log recorded, at each entry's own δ by its own accountant (a resume may change δ or
the headline accountant, which changes ε, not what was spent).

A charge is signed before its ledger is committed, so a coordinator stopped between the
two honestly leaves a ledger without it: a charge no round commit confirmed that the
ledger lacks is charged again rather than refused.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fedops.core.privacy.accountant import PrivacyLedger, RoundEvent, known_event
from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.privacy.regime import PrivacyResumeRefused

if TYPE_CHECKING:
    from fedops.runtime.privacy.central_dp import CentralPrivacy

log = logging.getLogger("fedops.privacy")
ROLLED_BACK = "it was rolled back or edited; refusing to resume and spend the budget again"


def hold_to_log(privacy: CentralPrivacy, logged: Commitments) -> None:
    """Raise :class:`PrivacyResumeRefused` unless the restored ``privacy`` accounts for
    every round ``logged`` charged and at least the ε it recorded (unconfirmed charges the
    ledger lacks are charged again first)."""
    recover_charges(privacy, logged)
    if missing := privacy.missing_rounds(logged.privacy_events):
        raise PrivacyResumeRefused(
            f"the privacy ledger in state.sqlite lacks rounds the signed audit log recorded "
            f"({missing}): {ROLLED_BACK}"
        )
    for (delta, accountant), eps in logged.epsilon_spent.items():
        now = privacy.ledger.epsilon(delta, accountant)
        if now < eps * (1 - 1e-9):
            raise PrivacyResumeRefused(
                f"the privacy ledger in state.sqlite accounts for ε = {now:.6g} at δ = "
                f"{delta:g} ({accountant}), but the signed audit log recorded ε = {eps:.6g} "
                f"spent there: {ROLLED_BACK}"
            )


def only_unconfirmed(logged: Commitments) -> bool:
    """Whether every event the log charged is a charge no round commit confirmed (a
    coordinator stopped in its first DP round, perhaps before committing any ledger)."""
    return bool(logged.privacy_events) and logged.privacy_events == logged.unconfirmed_charges()


def recover_charges(privacy: CentralPrivacy, logged: Commitments) -> None:
    """Charge again what the signed log charged and no round commit confirmed, where the
    restored ledger lacks it."""
    held = counted(privacy.ledger)
    for text, count in logged.unconfirmed_charges().items():
        lack = min(count, logged.privacy_events[text] - held[text])
        if lack <= 0:
            continue
        event = RoundEvent.from_json(json.loads(text))
        privacy.ledger.record(event, lack)
        if privacy.KNOWN_TWINS:
            privacy.known.record(known_event(event), lack)
        log.warning(
            "the privacy ledger in state.sqlite lacks %d round(s) of %s that the signed audit "
            "log charged before the coordinator stopped: charged again",
            lack,
            text,
        )


def missing_rounds(
    ledger: PrivacyLedger, known: PrivacyLedger | None, logged: Mapping[str, int]
) -> str:
    """What ``ledger`` lacks of the rounds the signed log charged (``logged``: each round's
    event, JSON with sorted keys, counted), or ``""``. A ledger of other events can give as
    much ε now and less after more rounds: the events themselves must be there, and (where
    ``known`` is kept: central DP) each one's counterpart for a party that knows who took
    part."""
    held = counted(ledger)
    twins = Counter[str]()  # rounds of other events can share a twin: summed
    for text, count in logged.items():
        if held[text] < count:
            return f"{count - held[text]} of the {count} rounds of {text}"
        twins[known_event(RoundEvent.from_json(json.loads(text))).key()] += count
    if known is None:
        return ""
    have = counted(known)
    for twin, count in twins.items():
        if have[twin] < count:
            return f"{count - have[twin]} of the {count} known-participant rounds of {twin}"
    return ""


def counted(ledger: PrivacyLedger) -> Counter[str]:
    """The ledger's rounds, counted by event (JSON, keys sorted)."""
    found = Counter[str]()
    for event, n in ledger.history:
        found[event.key()] += n
    return found
