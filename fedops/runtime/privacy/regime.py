"""Under which DP a run's rounds ran, and the refusal of a resume that would change it.

A run's guarantee is one claim over all its rounds: ε composed from their events,
held against the parties its mode names. A resume under another mode (central
rounds claimed against the coordinator as distributed DP), without the seed that
made earlier rounds NOT private, with participants published after they were kept
secret (or the reverse), or with the other sampling would sign a claim some of
its rounds never had. So the regime is persisted in the ledger (``regime``) and a
resume that changes any part of it is refused before a round runs. Distributed DP's
rounds were accounted with the noise left once ``privacy.colluders`` sites subtract
theirs: a resume may lower it (those rounds had more noise than the claim needs), never
raise it.

What the run had is read from every record that tells: the committed ledger, the
signed audit log (each ``run_started`` holds the run's config, each
``privacy_spent`` the mechanism its round claimed) and the store's round metrics.
The log is signed with a key the holder of the run directory does not have, so an
edited ``state.sqlite`` cannot hide what it recorded; a ledger from before the
regime was persisted is judged by the other two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.privacy.privacy_settings import PrivacySettings
from fedops.runtime.store import StoreError

MODES = ("none", "central", "distributed", "local")
ADVICE = "or start a new run directory"
#: how a distributed-DP round's claim names its colluders (``DistributedPrivacy.mechanism``)
_COLLUDERS = re.compile(r"up to (\d+) colluding site")


class PrivacyResumeRefused(StoreError, ValueError):
    """A resume whose guarantee would not hold for every round of the run (a
    :class:`StoreError`, so both fronts print it as one line; a ``ValueError`` as the
    ledger refusals always were)."""


@dataclass(frozen=True, slots=True)
class Regime:
    """What a round's guarantee depends on besides its event; ``None``: not known."""

    mode: str
    seeded: bool | None = None  # central and distributed: NOT private when seeded
    publish_participants: bool | None = None  # central only
    sampling: str | None = None  # central with secret participants only
    colluders: int | None = None  # distributed only: the most its rounds were accounted for

    def relevant(self) -> Regime:
        """Only what the mode's guarantee depends on (local DP's is the sites')."""
        if self.mode in ("none", "local"):
            return Regime(self.mode)
        if self.mode == "distributed":
            return Regime(self.mode, seeded=self.seeded, colluders=self.colluders)
        sampling = None if self.publish_participants else self.sampling
        return Regime(self.mode, self.seeded, self.publish_participants, sampling)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "seeded": self.seeded,
            "publish_participants": self.publish_participants,
            "sampling": self.sampling,
            "colluders": self.colluders,
        }

    @classmethod
    def from_json(cls, raw: Any) -> Regime | None:
        if not isinstance(raw, Mapping) or raw.get("mode") not in MODES:
            return None
        return cls(
            mode=str(raw["mode"]),
            seeded=_flag(raw.get("seeded")),
            publish_participants=_flag(raw.get("publish_participants")),
            sampling=raw["sampling"] if isinstance(raw.get("sampling"), str) else None,
            colluders=_colluders(raw.get("colluders")),
        ).relevant()


def refused_guarantee(refusal: str) -> str:
    """What a run whose resume was refused says of its privacy: no claim."""
    return f"none claimed: the resume was refused before any round ran ({refusal})"


def regime_of(settings: PrivacySettings | None) -> Regime:
    """The regime a run configured with ``settings`` (None: no DP) runs its rounds under."""
    if settings is None:
        return Regime("none")
    return Regime(
        settings.mode,
        seeded=settings.seed is not None,
        publish_participants=settings.publish_participants,
        sampling=settings.sampling,
        colluders=settings.colluders,
    ).relevant()


def regime_of_config(section: Any) -> Regime | None:
    """From a run config's ``privacy`` section (both fronts store it so); None: not one."""
    if not isinstance(section, Mapping) or section.get("name") not in MODES:
        return None
    return Regime(
        str(section["name"]),
        seeded=section.get("seed") is not None,
        publish_participants=_flag(section.get("publish_participants")),
        sampling=section["sampling"] if isinstance(section.get("sampling"), str) else None,
        colluders=_colluders(section.get("colluders")),
    ).relevant()


def regime_of_spent(entry: Mapping[str, Any]) -> Regime | None:
    """From what a round claimed (a ``privacy_spent`` entry or its metrics); None where it
    names no mechanism. A row without one is no proof of a round without DP (an older
    fedops, a test's stub): that is the signed log's ``run_started`` config to say.
    Whether a round was seeded is not said there either (the run's config says it)."""
    mechanism = entry.get("privacy_mechanism")
    if not isinstance(mechanism, str):
        return None
    if "DP-SGD" in mechanism:
        return Regime("local")
    if "colluding site" in mechanism:
        found = _COLLUDERS.search(mechanism)
        return Regime("distributed", colluders=int(found[1]) if found else None)
    event = entry.get("privacy_event")
    sampling = event.get("sampling") if isinstance(event, Mapping) else None
    publish = mechanism.startswith("participants published") or sampling == "known"
    return Regime(
        "central",
        publish_participants=publish,
        sampling=sampling if sampling in ("poisson", "fixed") else None,
    ).relevant()


def check_resume(
    current: Regime,
    *,
    saved: Any,
    metrics: Sequence[Mapping[str, Any]],
    logged: Commitments | None,
    seed: int | None = None,
) -> None:
    """Raise :class:`PrivacyResumeRefused` if a round of the run ran under another regime
    than ``current``. ``saved``: the committed ledger; ``metrics``: the store's rounds;
    ``logged``: what the signed audit log recorded; ``seed``: the one now configured."""
    for had, rounds in _had(saved, metrics, logged):
        refusal = _refusal(had, current, rounds, seed)
        if refusal:
            raise PrivacyResumeRefused(refusal)


def _had(
    saved: Any, metrics: Sequence[Mapping[str, Any]], logged: Commitments | None
) -> Iterable[tuple[Regime, int]]:
    """Each regime the records say some rounds ran under, with how many."""
    if isinstance(saved, Mapping):
        regime = Regime.from_json(saved.get("regime"))
        if regime is None and "events" not in saved:  # from before it was kept: local DP's
            regime = Regime("local")
        rounds = _ledger_rounds(saved)
        if regime is not None and rounds:
            yield regime, rounds
    yield from _counted(regime_of_spent(row) for row in metrics)
    if logged is not None:
        yield from _counted(
            _logged(config, spent) for config, spent in logged.round_privacy.values()
        )


def _logged(config: Any, spent: Mapping[str, Any] | None) -> Regime | None:
    """A logged round's regime: its run's config (exact), else what the round claimed."""
    regime = regime_of_config(config)
    if regime is not None:
        return regime
    return regime_of_spent(spent) if spent is not None else None  # nothing tells


def _counted(regimes: Iterable[Regime | None]) -> Iterable[tuple[Regime, int]]:
    counts: dict[Regime, int] = {}
    for regime in regimes:
        if regime is not None:
            counts[regime] = counts.get(regime, 0) + 1
    return counts.items()


def _ledger_rounds(saved: Mapping[str, Any]) -> int:
    events = saved.get("events")
    if isinstance(events, list):
        return sum(e["rounds"] for e in events if isinstance(e, dict) and _count(e.get("rounds")))
    return int(saved["rounds"]) if _count(saved.get("rounds")) else 0


def _refusal(had: Regime, now: Regime, rounds: int, seed: int | None) -> str:
    """Why a run whose ``rounds`` ran under ``had`` cannot go on under ``now`` ("": it can)."""
    spent = f"this run spent {rounds} round{'s' if rounds != 1 else ''} under {had.mode} DP"
    if had.mode != now.mode:
        return _mode_refusal(had.mode, now.mode, rounds, spent)
    if None not in (had.seeded, now.seeded) and had.seeded != now.seeded:
        if had.seeded:
            return (
                f"privacy.seed: {spent} with a privacy.seed (noise and sampling reproducible: "
                "NOT private); resuming without one would claim a guarantee those rounds "
                f"never had: keep the seed, {ADVICE}"
            )
        return (
            f"privacy.seed: {spent} without a seed; resuming with privacy.seed={seed} would "
            "make the run's noise reproducible (NOT private) under its one guarantee: "
            f"resume without privacy.seed, {ADVICE}"
        )
    if had.colluders is not None and now.colluders is not None and now.colluders > had.colluders:
        return _colluders_refusal(had.colluders, now.colluders, spent)
    for key, old, new in (
        ("publish_participants", had.publish_participants, now.publish_participants),
        ("sampling", had.sampling, now.sampling),
    ):
        if None not in (old, new) and old != new:
            return (
                f"privacy.{key}: {spent} with privacy.{key}={_text(old)}; resuming with "
                f"{_text(new)} would put them under a claim for another mechanism than they "
                f"ran: keep privacy.{key}={_text(old)}, {ADVICE}"
            )
    return ""


def _colluders_refusal(had: int, now: int, spent: str) -> str:
    """A resume against more colluders than some rounds' noise was accounted for."""
    return (
        f"privacy.colluders: {spent} accounted against up to {had} colluding "
        f"site{'s' if had != 1 else ''}; resuming with privacy.colluders={now} would claim "
        f"them against {now}, which their noise was never accounted for: keep "
        f"privacy.colluders at most {had}, {ADVICE}"
    )


def _mode_refusal(had: str, now: str, rounds: int, spent: str) -> str:
    if had == "none":
        ran = f"this run's {rounds} round{'s' if rounds != 1 else ''} ran without DP"
        released = "their models" if rounds != 1 else "its model"
        return (
            f"privacy.name: {ran} and released {released} unnoised; resuming under {now} "
            f"DP would claim a guarantee over rounds that never had one: keep privacy=none, "
            f"{ADVICE}"
        )
    if now == "none":
        return (
            f"privacy.name: {spent}; resuming without DP (privacy=none) would release "
            f"models outside its guarantee: keep privacy={had}, {ADVICE}"
        )
    return (
        f"privacy.name: {spent}; resuming under {now} DP would claim a guarantee those "
        f"rounds never had: keep privacy={had}, {ADVICE}"
    )


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _colluders(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
