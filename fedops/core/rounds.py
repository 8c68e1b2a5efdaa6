"""The round as a state machine: who was asked, who answered, when it is over.

The runtime feeds it events (a result arrived, was rejected, a node dropped)
and asks whether the round is complete; it never waits or reads a clock
itself, so the same logic serves a gRPC coordinator and an in-memory
simulation.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from fedops.core.results import EvaluateResult, FitResult, StageResult


class Phase(StrEnum):
    FIT = "fit"
    EVALUATE = "evaluate"
    # the five round trips of secure aggregation, which replace FIT when it is on
    SECAGG_KEYS = "secagg_keys"
    SECAGG_SHARES = "secagg_shares"
    SECAGG_MASKED = "secagg_masked"
    SECAGG_CONSISTENCY = "secagg_consistency"
    SECAGG_UNMASK = "secagg_unmask"


class Outcome(StrEnum):
    PENDING = "pending"
    OK = "ok"
    REJECTED = "rejected"
    DROPPED = "dropped"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultArrived:
    node_id: str
    task_id: str
    result: FitResult | EvaluateResult | StageResult


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultRejected:
    node_id: str
    task_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDropped:
    node_id: str
    reason: str


Event = ResultArrived | ResultRejected | NodeDropped


def sample_clients(
    available: Sequence[str], count: int | None, *, seed: int, server_round: int
) -> list[str]:
    """Pick ``count`` of the available nodes (all when ``None``), reproducibly.

    The choice depends only on (seed, round) and the sorted node ids, never on
    arrival order, so a rerun with the same seed samples the same clients. Not
    for DP rounds: anyone who knows the seed knows the sample (see
    :func:`poisson_sample`).
    """
    ordered = sorted(available)
    if count is None or count >= len(ordered):
        return ordered
    rng = np.random.default_rng([seed, server_round])
    picked = rng.choice(len(ordered), size=count, replace=False)
    return [ordered[i] for i in sorted(picked.tolist())]


def poisson_sample(
    available: Sequence[str], rate: float, rng: np.random.Generator | None = None
) -> list[str]:
    """Each available node independently with probability ``rate`` (possibly none).

    The sampling that DP-FedAvg's amplification assumes (McMahan et al. 2018).
    Without ``rng`` the coins come from the OS's CSPRNG (``secrets``), so
    nobody, the coordinator's own seed included, can predict or replay who
    was sampled; ``rng`` is for reproducible simulations, which are not private.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"sampling rate must be in (0, 1], got {rate}")
    ordered = sorted(available)
    if rng is None:
        # 53-bit uniform coins from os.urandom: P(coin < rate) = rate up to 2^-53
        coins = [secrets.randbits(53) / 2**53 for _ in ordered]
    else:
        coins = rng.random(len(ordered)).tolist()
    return [node for node, coin in zip(ordered, coins, strict=True) if coin < rate]


def secret_fixed_sample(available: Sequence[str], count: int) -> list[str]:
    """``count`` of the available nodes uniformly without replacement, from the CSPRNG."""
    ordered = sorted(available)
    if count >= len(ordered):
        return ordered
    picked = secrets.SystemRandom().sample(range(len(ordered)), count)
    return [ordered[i] for i in sorted(picked)]


@dataclass(slots=True)
class RoundTracker:
    """Outcome of each selected node in one phase of one round."""

    server_round: int
    phase: Phase
    tasks: dict[str, str]  # node_id -> task_id
    outcomes: dict[str, Outcome] = field(init=False)
    reasons: dict[str, str] = field(init=False)
    results: list[FitResult | EvaluateResult | StageResult] = field(init=False)
    _waiting: int = field(init=False)  # kept, not counted: done is asked after every event

    def __post_init__(self) -> None:
        self.outcomes = {node: Outcome.PENDING for node in self.tasks}
        self.reasons = {}
        self.results = []
        self._waiting = len(self.outcomes)

    def apply(self, event: Event) -> bool:
        """Record an event; return False (and change nothing) if it is not for us."""
        node = event.node_id
        if self.outcomes.get(node) is not Outcome.PENDING:
            return False
        if isinstance(event, ResultArrived | ResultRejected) and event.task_id != self.tasks[node]:
            return False
        self._waiting -= 1
        if isinstance(event, ResultArrived):
            self.outcomes[node] = Outcome.OK
            self.results.append(event.result)
        elif isinstance(event, ResultRejected):
            self.outcomes[node] = Outcome.REJECTED
            self.reasons[node] = event.reason
        else:
            self.outcomes[node] = Outcome.DROPPED
            self.reasons[node] = event.reason
        return True

    def expire(self) -> None:
        """The deadline passed: every node still pending is a straggler."""
        for node, outcome in self.outcomes.items():
            if outcome is Outcome.PENDING:
                self.outcomes[node] = Outcome.TIMED_OUT
                self.reasons[node] = "no result before the round deadline"
        self._waiting = 0

    @property
    def pending(self) -> list[str]:
        return [n for n, o in self.outcomes.items() if o is Outcome.PENDING]

    @property
    def done(self) -> bool:
        return self._waiting == 0
