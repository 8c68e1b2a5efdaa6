"""Central DP-FedAvg (McMahan et al. 2018): clip every update, noise the sum, average.

Each sampled client's update ``Δ_i`` is clipped to L2 norm ``C``; the server
adds ``N(0, σ²C²)`` to their sum and divides by the number of clients the
round *sampled* (a fixed denominator: dividing by how many answered would
let one client's presence change the scale). Clients are weighted equally:
example-weighting would let a large client's data weigh beyond ``C``.
The result is (ε, δ) user-level DP per the accountant; dropped clients only
add zeros, which keeps the guarantee.

Adaptive clipping (Andrew et al. 2021) tracks a quantile γ of the update
norms: ``C ← C·exp(−η(b̄ − γ))`` where ``b̄`` is the noised fraction of
clients whose norm was at most ``C``; the count's own noise σ_b is paid for by
raising the update noise so that the round's total noise multiplier stays σ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedops.core.params import Params
from fedops.core.privacy.clipping import clip, delta


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveClipping:
    target_quantile: float = 0.5  # γ
    learning_rate: float = 0.2  # η
    count_noise: float = 10.0  # σ_b, the noise multiplier of the clipped count

    def update_noise(self, sigma: float) -> float:
        """σ_Δ such that the update and the count together spend exactly σ."""
        if sigma == 0:
            return 0.0  # no noise at all: nothing to share out
        rest = sigma**-2 - (2 * self.count_noise) ** -2
        if rest <= 0:
            raise ValueError(
                f"noise multiplier {sigma} is too small for adaptive clipping with count "
                f"noise {self.count_noise}: need sigma < 2 * count_noise"
            )
        return float(rest**-0.5)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundNoise:
    """What one DP round did: its parameters and the next clip norm."""

    clip_norm: float
    noise_std: float  # of the noise added to the sum of clipped updates
    clipped_fraction: float  # of this round's updates
    next_clip_norm: float


def private_mean(
    current: Params,
    trained: Sequence[Params],
    *,
    sampled: int,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
    adaptive: AdaptiveClipping | None = None,
) -> tuple[Params, RoundNoise]:
    """``current`` + the clipped, noised mean update of ``trained`` over ``sampled`` clients."""
    if sampled < 1 or sampled < len(trained):
        raise ValueError(f"sampled ({sampled}) must be >= the {len(trained)} results")
    sigma = noise_multiplier if adaptive is None else adaptive.update_noise(noise_multiplier)
    total = {k: np.zeros(np.shape(v), np.float64) for k, v in current.items()}
    unclipped = 0
    for params in trained:
        clipped, norm = clip(delta(current, params), clip_norm)
        unclipped += norm <= clip_norm
        for k in total:
            total[k] += clipped[k]
    std = sigma * clip_norm
    new: Params = {}
    for k, arr in current.items():
        noised = total[k] + rng.normal(0.0, std, size=total[k].shape)
        new[k] = (np.asarray(arr, np.float64) + noised / sampled).astype(np.asarray(arr).dtype)
    next_clip = clip_norm
    if adaptive is not None:
        b = (unclipped + rng.normal(0.0, adaptive.count_noise)) / sampled
        next_clip = clip_norm * math.exp(-adaptive.learning_rate * (b - adaptive.target_quantile))
    clipped_fraction = 1 - unclipped / len(trained) if trained else 0.0
    return new, RoundNoise(
        clip_norm=clip_norm,
        noise_std=std,
        clipped_fraction=clipped_fraction,
        next_clip_norm=next_clip,
    )
