"""What a coordinator's signed audit log vouches for: each round's checkpoint, as committed.

The run directory's ``state.sqlite`` names every round's checkpoint file with
its sha256 and model digest, but whoever holds the directory can edit it: a
resume that trusted it alone would train from (and sign the digest of) a model
nobody committed. The audit log is signed with a key the operator of the
directory does not hold, so a resume trusts a round's checkpoint only when the
log vouches for it: its ``round_committed`` entry (``initial_model`` for round
0) names the same ``checkpoint_sha256``, which covers the model and the
strategy state (FedAdam's moments) alike.

Each committed round also keeps what the log says of its DP: the ``privacy`` section of
the config its run started with (``run_started``) and what its ``privacy_spent`` entry
claimed, so a resume under other privacy settings is refused
(:mod:`fedops.runtime.privacy.regime`) whatever ``state.sqlite`` was edited to say.

A DP round is spent before it is committed: once its noised model is released (central
DP) or its sum unmasked (distributed DP), the coordinator signs a ``privacy_charged``
entry with the round's event before it commits its ledger to ``state.sqlite``. A crash
before the round is committed therefore still leaves the charge in the log, and a
ledger edited to forget it is caught. The round's ``privacy_spent`` entry later names
the same event: it confirms that charge and is not counted again.

Entries written before fedops recorded ``checkpoint_sha256`` carry the model
digest alone: for those rounds the model is checked, the strategy state cannot
be. A log with no ``initial_model`` entry (a run directory from before it was
recorded, or a coordinator that died between committing round 0 and logging
it) leaves round 0 unchecked, as before.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from fedops.core.privacy.accountant import RoundEvent

COMMIT_EVENT = "round_committed"
INITIAL_EVENT = "initial_model"
FALLBACK_EVENT = "checkpoint_fallback"
PRIVACY_EVENT = "privacy_spent"
CHARGE_EVENT = "privacy_charged"
START_EVENT = "run_started"
_EVENTS = (COMMIT_EVENT, INITIAL_EVENT, FALLBACK_EVENT, PRIVACY_EVENT, CHARGE_EVENT, START_EVENT)
#: what a round's ``privacy_spent`` entry says of its mechanism (kept per round)
_CLAIM_KEYS = ("privacy_mechanism", "privacy_holds_against", "privacy_event", "epsilon")


@dataclass(frozen=True, slots=True)
class Commitment:
    """One round's checkpoint as the log committed it."""

    model_digest: str | None
    checkpoint_sha256: str | None  # None: an entry from before fedops recorded it


@dataclass(slots=True)
class Commitments:
    """``{round: Commitment}`` from a verified log, the newest entry of each round.

    A ``checkpoint_fallback`` entry forgets the rounds after the one it resumed
    from, as the store did: their old entries vouch for checkpoints that the run
    no longer continues from (a copy put back later must not pass).
    """

    rounds: dict[int, Commitment] = field(default_factory=dict)
    #: the largest ε ``privacy_spent`` entries recorded, per (δ, accountant) they were
    #: computed at: spending is never undone (a fallback keeps the forgotten rounds'
    #: releases), so a resumed ledger owes at least as much at that δ, by that accountant
    epsilon_spent: dict[tuple[float, str], float] = field(default_factory=dict)
    #: each ``privacy_event`` (JSON, keys sorted) the log charged, counted: every
    #: ``privacy_charged`` entry, and every ``privacy_spent`` entry that confirms none (an
    #: older log's; a distributed round that unmasked nothing spent nothing and is not
    #: counted): the rounds a central- or distributed-DP ledger must hold at least
    privacy_events: Counter[str] = field(default_factory=Counter)
    #: round -> the event of its newest charge no ``privacy_spent`` entry confirmed yet (a
    #: coordinator stopped between the two): a ledger may honestly lack it (the charge is
    #: signed before the ledger is committed), and a resume charges it again
    unconfirmed: dict[int, str] = field(default_factory=dict)
    #: every round the log committed (never forgotten: a fallback keeps what was released)
    #: -> (the ``privacy`` config section its run started with, or None where the entry
    #: held none; what its ``privacy_spent`` entry claimed, or None: no DP that round)
    round_privacy: dict[int, tuple[Any, dict[str, Any] | None]] = field(default_factory=dict)
    _started: Any = None  # the newest run_started's privacy section

    @classmethod
    def from_lines(cls, lines: Iterable[bytes]) -> Commitments:
        """The commitments of a log's lines, which the caller has just verified."""
        found = cls()
        for line in lines:
            if not any(event.encode() in line for event in _EVENTS):
                continue  # a site's thousands of reports are not parsed twice
            entry = json.loads(line)
            found.observe(entry.get("event", ""), entry.get("payload", {}))
        return found

    def observe(self, event: str, payload: Mapping[str, Any]) -> None:
        """Take in one entry (read back, or just signed): a commit, or a fallback."""
        server_round = payload.get("round")
        if event == START_EVENT:
            config = payload.get("config")
            self._started = config.get("privacy") if isinstance(config, Mapping) else None
        elif event in (PRIVACY_EVENT, CHARGE_EVENT):
            self._spent(event, payload)
            if _is_round(server_round):
                claim = {k: payload[k] for k in _CLAIM_KEYS if k in payload}
                if event == PRIVACY_EVENT or server_round not in self.round_privacy:
                    # a charged round that never committed still ran under its config
                    self.round_privacy[server_round] = (self._started, claim)
        elif event == FALLBACK_EVENT:
            kept = payload.get("resumed_from")
            if _is_round(kept):
                self.rounds = {r: c for r, c in self.rounds.items() if r <= kept}
        elif event in (COMMIT_EVENT, INITIAL_EVENT) and _is_round(server_round):
            self.rounds[server_round] = Commitment(
                model_digest=_text(payload.get("model_digest")),
                checkpoint_sha256=_text(payload.get("checkpoint_sha256")),
            )
            if event == COMMIT_EVENT and server_round > 0:  # its privacy_spent comes next
                self.round_privacy[server_round] = (self._started, None)

    def _spent(self, kind: str, payload: Mapping[str, Any]) -> None:
        eps, delta, accountant = (payload.get(k) for k in ("epsilon", "delta", "accountant"))
        if eps == "inf":  # no noise: no guarantee left to keep
            eps = math.inf
        if not (_is_number(eps) and _is_number(delta) and isinstance(accountant, str)):
            return  # a local-DP round's entry (sites account), or one from an older fedops
        key = (float(delta), accountant)
        self.epsilon_spent[key] = max(self.epsilon_spent.get(key, 0.0), float(eps))
        event = charged_event(payload)
        if event is None:
            return  # no event to hold a ledger to (or nothing unmasked): its ε still is
        server_round = payload.get("round")
        if kind == CHARGE_EVENT:
            self.privacy_events[event] += 1
            if _is_round(server_round):  # an earlier unconfirmed charge stays counted
                self.unconfirmed[server_round] = event
        elif _is_round(server_round) and self.unconfirmed.get(server_round) == event:
            del self.unconfirmed[server_round]  # the charge it confirms was counted
        else:
            self.privacy_events[event] += 1

    def unconfirmed_charges(self) -> Counter[str]:
        """The events of the charges no round commit confirmed, counted."""
        return Counter(self.unconfirmed.values())

    def refusal(
        self, server_round: int, checkpoint_sha256: str | None, model_digest: str | None
    ) -> str | None:
        """Why the log does not vouch for a round's checkpoint as ``state.sqlite`` names it
        (its file's sha256, its model digest); ``None`` when it does."""
        committed = self.rounds.get(server_round)
        if committed is None:
            if server_round == 0:
                return None  # a log from before initial_model was recorded: see above
            return (
                f"the audit log does not vouch for round {server_round}'s checkpoint: it "
                f"records no commit of round {server_round} (a coordinator stopped before "
                "logging it, or a round added to state.sqlite)"
            )
        if committed.checkpoint_sha256 is not None:
            same = committed.checkpoint_sha256 == checkpoint_sha256
            what = f"sha256 {checkpoint_sha256}, the log's {committed.checkpoint_sha256}"
        else:  # an older entry: the model only
            same = committed.model_digest == model_digest
            what = f"model {model_digest}, the log's {committed.model_digest}"
        if same:
            return None
        return (
            f"the audit log does not vouch for round {server_round}'s checkpoint: "
            f"state.sqlite names one it did not commit ({what})"
        )

    def vouches_model(self, server_round: int, model_digest: str | None) -> bool:
        """Whether the log committed ``model_digest`` as round ``server_round``'s model (a
        round 0 it never recorded passes, as on resume)."""
        committed = self.rounds.get(server_round)
        if committed is None:
            return server_round == 0
        return committed.model_digest == model_digest


def charged_event(payload: Mapping[str, Any]) -> str | None:
    """The key of the round event a ``privacy_spent``/``privacy_charged`` entry spent, as the
    ledger writes it back (σ 2 and 2.0 are one event); None: it names none, or it is a
    distributed round aborted before its sum was unmasked
    (``effective_noise_multiplier: null``), which spent nothing."""
    if "effective_noise_multiplier" in payload and payload["effective_noise_multiplier"] is None:
        return None
    raw = payload.get("privacy_event")
    try:
        return RoundEvent.from_json(dict(raw) if isinstance(raw, Mapping) else raw).key()
    except (KeyError, TypeError, ValueError):
        return None


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _is_round(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
