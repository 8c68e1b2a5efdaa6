"""What a run's DP is configured with, and what one round sampled."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedops.core.privacy.central import AdaptiveClipping

SAMPLINGS = ("poisson", "fixed")


class BudgetExhausted(RuntimeError):
    """The next round would spend more ε than ``target_epsilon``; the run stops before it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacySettings:
    """``privacy.*`` keys (and the coordinator's ``--noise-multiplier`` etc.)."""

    noise_multiplier: float | None = 1.0  # None: derived from target_epsilon ("auto")
    clip_norm: float = 1.0
    delta: float = 1e-5
    target_epsilon: float | None = None
    accountant: str = "pld"  # the headline; the other is reported beside it
    adaptive: AdaptiveClipping | None = None
    #: None: noise and sampling from the OS's CSPRNG (deployment); a seed makes both
    #: reproducible for experiments, and the guarantee then says it is not private
    seed: int | None = None
    mode: str = "central"  # central | distributed (clients add noise under SecAgg+) | local
    sampling: str = "poisson"  # poisson | fixed (m of N without replacement)
    #: headline the bound for a party that knows who took part (no amplification by
    #: sampling): for runs whose participants are made public. Either way the operator's
    #: records (state, audit log, metrics) name them, and the known-participation ε is
    #: reported beside the headline
    publish_participants: bool = False
    colluders: int = 0  # distributed: sites that may pool their noise shares with the server
    min_survivors: int = 1  # distributed: the fewest noise shares a committed round can hold
    release_site_metrics: bool = False  # sites' losses and accuracies, outside the guarantee
    #: signs a round's charge into the run's audit log (``privacy_charged``) before its
    #: ledger is committed: :func:`fedops.runtime.records.run_recorded` sets it (None: the
    #: run keeps no signed log, e.g. a store driven alone in tests)
    sign_charge: Callable[[Mapping[str, Any]], None] | None = field(
        default=None, compare=False, repr=False
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundSample:
    """Who a round asked, out of how many, and what the mean divides by."""

    selected: list[str]
    population: int
    denominator: float  # central DP's fixed denominator: the expected cohort size
