"""A client's model update as one integer vector, and the sum back as a model.

The vector holds ``w/W · clip(trained - start)`` quantized (``w``: the
client's example count, capped at ``W = max_weight``), then ``w`` itself as
one exact integer. Summed over the survivors, the last word is ``Σw`` and the
rest decodes to ``Σ w/W · Δ``, so ``start + W/Σw · that`` is FedAvg's
example-weighted mean, computed without seeing any single update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedops.core.params import InvalidUpdate, Params, check_specs_match, specs_of
from fedops.core.secagg.quantize import CHUNK, MODULUS, Quantizer

#: largest Skellam parameter a client samples: numpy's Poisson sampler is accurate well
#: beyond it, while far above (2^53) its samples are multiples of a power of two, so noise
#: that large would leave the low bits of a word noise-free
MAX_SKELLAM_MU = 1e10


@dataclass(frozen=True, slots=True, kw_only=True)
class Encoding:
    """How updates become integers this round (the server picks it, clients apply it)."""

    quantizer: Quantizer
    max_weight: int
    # distributed DP (privacy=distributed): L2-clip each update to l2_clip, weigh clients
    # equally, and add Skellam(noise_mu) integer noise to every word before masking
    l2_clip: float = 0.0
    noise_mu: float = 0.0
    #: no honest site signs, and so none reveals for, a survivor set smaller than this:
    #: every site checks its own floors (cohort, distributed-DP noise) against it
    min_survivors: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.max_weight < MODULUS:
            raise ValueError(f"max_weight must be in [1, 2^32), got {self.max_weight}")
        if not (math.isfinite(self.l2_clip) and self.l2_clip >= 0):
            raise ValueError(f"l2_clip must be >= 0, got {self.l2_clip}")
        if not (math.isfinite(self.noise_mu) and 0 <= self.noise_mu <= MAX_SKELLAM_MU):
            raise ValueError(
                f"noise_mu must be in [0, {MAX_SKELLAM_MU:g}] (numpy's Poisson samples are exact "
                f"there; far above, they are coarse in the low bits), got {self.noise_mu}"
            )
        if not 0 <= self.min_survivors < MODULUS:
            raise ValueError(f"min_survivors must be >= 0, got {self.min_survivors}")

    @property
    def private(self) -> bool:
        return self.l2_clip > 0


def round_encoding(
    *,
    summands: int,
    cohort: int,
    clip: float,
    max_examples: int,
    noise: tuple[float, float] | None,
    dimension: int = 0,
    min_survivors: int = 0,
) -> Encoding:
    """The grid for ``summands`` updates; with distributed DP ``noise=(σ, l2_clip)``,
    room for the noise the ``cohort`` clients add between them.

    Stochastic rounding moves a clipped update of ``S = levels/2`` words by up to
    ``√dimension`` more, so the noise is scaled to ``σ·(S + √dimension)`` words:
    σ is then the noise over the true sensitivity, as the sites' policy checks it.
    """
    n = summands
    if noise is None:
        max_weight = min(max_examples, (MODULUS - 1) // n)
        return Encoding(
            quantizer=Quantizer.for_summands(clip, n),
            max_weight=max_weight,
            min_survivors=min_survivors,
        )
    sigma, l2_clip = noise
    inflated = sigma  # σ·(1 + √d/S): the noise in units of the clip, rounding included
    for _ in range(3):  # the grid depends on the noise it must hold, and back: settle it
        # |signal| <= n·levels/2 and the noise stays within 8σ'·levels/2 (p < 1e-15), so
        # the centred sum fits in ±2^31 and is read exactly (_decode_private_sum)
        levels = max(1, int((MODULUS - 1) // (n + 8 * inflated)))
        if sigma > 0:  # keep µ where numpy's Poisson sampler is exact (its variance drifts
            # by percents above ~1e13); the grid stays far finer than the noise
            cap = 2 * math.sqrt(2 * cohort * MAX_SKELLAM_MU) / inflated
            levels = max(1, min(levels, int(cap)))
        inflated = sigma * (1 + math.sqrt(dimension) / (levels / 2))
    # every sampled client adds its share of Skellam noise: variance 2µ each, so the
    # sum over all sampled has std σ·(S + √d) words, S = levels/2 the clip in words
    mu = min((inflated * levels / 2) ** 2 / (2 * cohort), MAX_SKELLAM_MU)
    return Encoding(
        quantizer=Quantizer(clip=l2_clip, levels=levels),
        max_weight=1,
        l2_clip=l2_clip,
        noise_mu=mu,
        min_survivors=min_survivors,
    )


def vector_length(params: Params) -> int:
    """Words in an encoded update: every parameter, plus the weight."""
    return sum(int(a.size) for a in params.values()) + 1


def encode_update(
    start: Params,
    trained: Params,
    num_examples: int,
    encoding: Encoding,
    rng: np.random.Generator,
) -> tuple[NDArray[np.uint32], float]:
    """``(vector, fraction of values clipped)`` for one client's update."""
    check_specs_match(specs_of(start), specs_of(trained))
    weight = min(int(num_examples), encoding.max_weight)
    if weight < 1:
        raise InvalidUpdate(f"a training result needs at least one example, got {num_examples}")
    if encoding.private:
        return _encode_private(start, trained, encoding, rng)
    size = vector_length(start) - 1
    vector = np.empty(size + 1, dtype=np.uint32)
    buf = np.empty(min(CHUNK, max(size, 1)))
    clipped, offset = 0, 0
    for name, first in start.items():
        old, new = np.asarray(first).ravel(), np.asarray(trained[name]).ravel()
        for lo in range(0, old.size, CHUNK):
            hi = min(lo + CHUNK, old.size)
            delta = buf[: hi - lo]
            np.subtract(new[lo:hi], old[lo:hi], out=delta, dtype=np.float64)
            if not np.all(np.isfinite(delta)):
                raise InvalidUpdate(f"the trained model has NaN or Inf values in {name!r}")
            words = vector[offset + lo : offset + hi]
            clipped += encoding.quantizer.encode_into(
                delta, words, rng, scale=weight / encoding.max_weight
            )
        offset += old.size
    vector[-1] = weight
    return vector, clipped / max(size, 1)


def _encode_private(
    start: Params, trained: Params, encoding: Encoding, rng: np.random.Generator
) -> tuple[NDArray[np.uint32], float]:
    """Distributed DP: clip to L2 norm ``l2_clip``, quantize, add Skellam noise, weight 1."""
    names = list(start)
    deltas = [
        np.asarray(trained[k], np.float64).ravel() - np.asarray(start[k], np.float64).ravel()
        for k in names
    ]
    if not all(np.all(np.isfinite(d)) for d in deltas):
        raise InvalidUpdate("the trained model has NaN or Inf values")
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in deltas))  # not BLAS (see clipping)
    scale = min(1.0, encoding.l2_clip / norm) if norm > 0 else 1.0
    flat = np.concatenate(deltas) * scale if deltas else np.zeros(0)
    words, _ = encoding.quantizer.encode(flat, rng)
    if encoding.noise_mu > 0:
        for lo in range(0, words.size, CHUNK):
            hi = min(lo + CHUNK, words.size)
            noise = rng.poisson(encoding.noise_mu, hi - lo) - rng.poisson(
                encoding.noise_mu, hi - lo
            )  # Skellam: the difference of two Poissons; sums of Skellams are Skellam
            words[lo:hi] = (words[lo:hi].astype(np.int64) + noise) % MODULUS
    vector = np.empty(words.size + 1, dtype=np.uint32)
    vector[:-1] = words
    vector[-1] = 1
    return vector, float(norm > encoding.l2_clip)


def _decode_private_sum(total: NDArray[np.uint32], count: int, q: Quantizer) -> NDArray[np.float64]:
    """Σ of ``count`` clipped updates plus noise, reading the words as signed around zero.

    Noise may push the sum below the offset or past 2^32; the levels leave room for it
    (see ``SecAggServer``), so the centred reading modulo 2^32 is exact.
    """
    twice_offset = count * q.levels  # each client's zero sits at levels / 2
    offset = twice_offset // 2
    centred = (total.astype(np.int64) - offset) % MODULUS
    centred[centred >= MODULUS // 2] -= MODULUS
    return (centred.astype(np.float64) - (twice_offset - 2 * offset) / 2) * q.step


def decode_mean(
    start: Params, total: NDArray[np.uint32], count: int, encoding: Encoding
) -> tuple[Params, int]:
    """``(start + weighted mean update, Σ weights)`` from the unmasked sum of ``count``."""
    if total.shape != (vector_length(start),):
        raise ValueError(f"sum has shape {total.shape}, expected ({vector_length(start)},)")
    weight = int(total[-1])
    if weight < 1:
        raise ValueError("the unmasked sum carries no weight")
    if encoding.private:  # equal weights: the mean over the clients summed
        mean = _decode_private_sum(total[:-1], count, encoding.quantizer) / count
    else:
        mean = encoding.quantizer.decode_sum(total[:-1], count) * (encoding.max_weight / weight)
    out: Params = {}
    offset = 0
    for name, arr in start.items():
        n = int(arr.size)
        new = np.asarray(arr, np.float64) + mean[offset : offset + n].reshape(arr.shape)
        if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
            new = np.rint(new)
        out[name] = new.astype(arr.dtype)
        offset += n
    return out, weight
