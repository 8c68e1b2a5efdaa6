"""User-level ε of a run, from Opacus's accountants (never a hand-rolled RDP).

One federated round is one step of the subsampled Gaussian mechanism with
sampling rate q = sampled clients / population and noise multiplier σ. The
history is kept as ``(σ, q, steps)`` triples, so ε after 10,000 rounds costs
the same as after one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

ACCOUNTANTS = ("rdp", "prv")


@dataclass(slots=True)
class PrivacyLedger:
    """Every DP round of a run: ``[(noise_multiplier, sample_rate, rounds), …]``."""

    history: list[tuple[float, float, int]] = field(default_factory=list)

    def record(self, noise_multiplier: float, sample_rate: float, rounds: int = 1) -> None:
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            sigma, q, steps = self.history[-1]
            self.history[-1] = (sigma, q, steps + rounds)
        else:
            self.history.append((noise_multiplier, sample_rate, rounds))

    def epsilon(self, delta: float, accountant: str = "rdp") -> float:
        return epsilon(self.history, delta, accountant)

    @property
    def rounds(self) -> int:
        return sum(steps for _, _, steps in self.history)


def epsilon(history: list[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """ε at ``delta`` after the rounds in ``history`` (0 for none)."""
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    steps = [h for h in history if h[2] > 0]
    if not steps:
        return 0.0
    # Imported here, not at the top: importing opacus costs ~115 MB and ~1 s, which every
    # run without DP (and every client process) would pay for nothing.
    from opacus.accountants import PRVAccountant, RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    if accountant == "prv":
        acc = PRVAccountant()
        acc.history = list(steps)
        return float(acc.get_epsilon(delta))
    # RDPAccountant.get_epsilon, with each (σ, q)'s one-round RDP computed once per process:
    # RDP composes by addition (Opacus multiplies the one-round RDP by the steps), and the
    # ~150 orders cost ~65 ms per (σ, q), which every round of a DP run would pay again.
    rdp = sum(np.array(_rdp_one_round(sigma, q)) * n for sigma, q, n in steps)
    eps, _ = rdp_analysis.get_privacy_spent(
        orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta
    )
    return float(eps)


@functools.lru_cache(maxsize=1024)
def _rdp_one_round(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    """The RDP of one subsampled Gaussian round at Opacus's default orders."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    one = rdp_analysis.compute_rdp(
        q=sample_rate,
        noise_multiplier=noise_multiplier,
        steps=1,
        orders=RDPAccountant.DEFAULT_ALPHAS,
    )
    return tuple(float(v) for v in np.atleast_1d(one))


@functools.lru_cache(maxsize=256)
def noise_for_target(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    rounds: int,
    accountant: str = "rdp",
    rel_tol: float = 1e-3,
) -> float:
    """The smallest σ whose ε after ``rounds`` rounds is at most ``target_epsilon``.

    Bisection on σ (ε falls as σ grows) until ε is within ``rel_tol`` of the
    target from below.
    """
    if target_epsilon <= 0:
        raise ValueError(f"target epsilon must be > 0, got {target_epsilon}")

    def eps(sigma: float) -> float:
        return epsilon([(sigma, sample_rate, rounds)], delta, accountant)

    low, high = 0.05, 1.0
    while eps(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier up to 1e4 reaches ε={target_epsilon}")
    at_high = eps(high)
    for _ in range(100):
        if target_epsilon - at_high <= rel_tol * target_epsilon or math.isclose(low, high):
            break
        mid = (low + high) / 2
        at_mid = eps(mid)
        if at_mid > target_epsilon:
            low = mid
        else:
            high, at_high = mid, at_mid
    return high
