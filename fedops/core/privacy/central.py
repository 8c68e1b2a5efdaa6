"""Central DP-FedAvg (McMahan et al. 2018): clip every update, noise the sum, average.

Each sampled client's update ``Δ_i`` is clipped to L2 norm ``C``; the server
adds ``N(0, σ²C²)`` to their sum and divides by a fixed denominator, the
expected number of sampled clients ``qN`` (dividing by how many were sampled
or answered would let one client's presence change the scale). Clients are weighted equally:
example-weighting would let a large client's data weigh beyond ``C``.
The result is (ε, δ) user-level DP per the accountant; dropped clients only
add zeros, which keeps the guarantee.

Adaptive clipping (Andrew et al. 2021) tracks a quantile γ of the update
norms: ``C ← C·exp(−η(b̄ − γ))`` where ``b̄`` is the noised fraction of
clients whose norm was at most ``C``. The count is summed *centred*,
``Σ(b_i − ½) + N(0, σ_b²)``, so one client moves it by at most ½ and the
count is a Gaussian mechanism with noise multiplier ``2σ_b``; with the
update's ``σ_Δ`` chosen so that ``σ_Δ⁻² + (2σ_b)⁻² = σ⁻²`` the pair spends
exactly what one Gaussian round at σ does. (Summing the uncentred
``b_i ∈ {0, 1}`` has sensitivity 1 and would spend far more than σ.)
The exact clipped fraction is never released: only the noised ``b̄`` is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedops.core.params import Params
from fedops.core.privacy.clipping import clip, delta
from fedops.core.privacy.noise import NormalSource


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
    next_clip_norm: float
    #: adaptive clipping's noised fraction of updates within the clip (None without it)
    noised_unclipped_fraction: float | None = None


def private_mean(
    current: Params,
    trained: Sequence[Params],
    *,
    denominator: float,
    clip_norm: float,
    noise_multiplier: float,
    rng: NormalSource,
    adaptive: AdaptiveClipping | None = None,
) -> tuple[Params, RoundNoise]:
    """``current`` + (Σ clipped updates of ``trained`` + noise) / ``denominator``."""
    if not (math.isfinite(denominator) and denominator > 0):
        raise ValueError(f"the denominator must be > 0, got {denominator}")
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
        new[k] = (np.asarray(arr, np.float64) + noised / denominator).astype(np.asarray(arr).dtype)
    next_clip, b = clip_norm, None
    if adaptive is not None:
        centred = unclipped - len(trained) / 2  # Σ(b_i − ½): sensitivity ½
        b = (centred + float(rng.normal(0.0, adaptive.count_noise))) / denominator + 0.5
        next_clip = clip_norm * math.exp(-adaptive.learning_rate * (b - adaptive.target_quantile))
    return new, RoundNoise(
        clip_norm=clip_norm,
        noise_std=std,
        next_clip_norm=next_clip,
        noised_unclipped_fraction=b,
    )
