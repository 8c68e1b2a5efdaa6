"""Shamir secret sharing of 32-byte secrets, limb by limb over GF(2^31 - 1), in numpy.

A secret is cut into :data:`LIMBS` limbs of 30 bits; each limb is the
constant term of its own random polynomial of degree t-1 over the prime
field GF(p), p = 2^31 - 1, and a share is the polynomials' values at the
holder's index (:data:`SHARE_BYTES` bytes: one little-endian uint32 per
limb). Any t shares give every limb back (Lagrange interpolation at 0);
fewer reveal nothing about any limb, and the limbs' polynomials are drawn
independently, so nothing about the secret either. Field elements stay
below 2^31, so a product fits an int64 and a server interpolates thousands
of owners' polynomials at once (:func:`interpolate`) instead of one big
integer at a time (it was most of the server's unmasking time over
GF(2^521 - 1)).

Coefficients are 64 random bits reduced mod p: the bias is below 2^-32 per
coefficient, far below anything an observer of fewer than t shares could use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

#: the Mersenne prime 2^31 - 1: products of two elements fit in an int64
PRIME = (1 << 31) - 1
LIMB_BITS = 30
LIMBS = 9  # 9 x 30 bits >= 256
SECRET_BYTES = 32
SHARE_BYTES = 4 * LIMBS
#: bytes of a share's digest (second preimages of a truncated SHA-256: 2^128 work)
DIGEST_BYTES = 16
_P = np.int64(PRIME)
_LIMB_MASK = (1 << LIMB_BITS) - 1
_TOP_BITS = 8 * SECRET_BYTES - LIMB_BITS * (LIMBS - 1)  # the top limb holds 16 bits


def split(
    secret: bytes, threshold: int, holders: Iterable[int], random: Callable[[int], bytes]
) -> dict[int, bytes]:
    """Share ``secret`` so that any ``threshold`` of ``holders`` (indices > 0) recover it."""
    return split_many([secret], threshold, holders, random)[0]


def split_many(
    secrets: Sequence[bytes],
    threshold: int,
    holders: Iterable[int],
    random: Callable[[int], bytes],
) -> list[dict[int, bytes]]:
    """:func:`split` for several secrets among the same holders, in one pass."""
    if any(len(secret) != SECRET_BYTES for secret in secrets):
        raise ValueError(f"secrets are {SECRET_BYTES} bytes")
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold}")
    xs = list(holders)
    for x in xs:
        if not 0 < x < PRIME:
            raise ValueError(f"holder index {x} must be positive and below {PRIME}")
    width = LIMBS * len(secrets)  # every limb of every secret: one polynomial each
    noise = np.frombuffer(random(8 * width * (threshold - 1)), dtype="<u8")
    coeffs = (noise % np.uint64(PRIME)).astype(np.int64).reshape(threshold - 1, width)
    points = np.asarray(xs, dtype=np.int64)[:, None]
    values = np.zeros((len(xs), width), dtype=np.int64)
    for c in coeffs[::-1]:  # Horner, highest degree first, then the secrets' limbs
        values = (values * points + c) % _P
    constant = np.concatenate([to_limbs(secret) for secret in secrets])
    values = (values * points + constant) % _P
    raw = values.astype("<u4").tobytes()  # holder by holder, secret by secret
    row = SHARE_BYTES * len(secrets)
    return [
        {
            x: raw[i * row + j * SHARE_BYTES : i * row + (j + 1) * SHARE_BYTES]
            for i, x in enumerate(xs)
        }
        for j in range(len(secrets))
    ]


def share_digest(context: bytes, owner: int, holder: int, kind: bytes, share: bytes) -> bytes:
    """The owner's digest of the ``kind`` share it deals ``holder`` in the round ``context``.

    Sent beside the encrypted share: the holder checks what it decrypts against it (a
    mismatch is a complaint), the server checks what the holder later reveals, so a lying
    revealer is named for sure and never has to be outvoted by a search over subsets.
    """
    return share_digester(context, kind)(owner, holder, share)


def share_digester(context: bytes, kind: bytes) -> Callable[[int, int, bytes], bytes]:
    """:func:`share_digest` for one round and kind, its common prefix hashed once."""
    prefix = hashlib.sha256(b"fedops-secagg share digest\0" + kind + b"\0" + context)

    def digest(owner: int, holder: int, share: bytes) -> bytes:
        h = prefix.copy()
        h.update(owner.to_bytes(4, "big") + holder.to_bytes(4, "big") + share)
        return h.digest()[:DIGEST_BYTES]

    return digest


def to_limbs(secret: bytes) -> np.ndarray:
    """The secret's 30-bit limbs, least significant first."""
    value = int.from_bytes(secret, "big")
    return np.array([(value >> (LIMB_BITS * k)) & _LIMB_MASK for k in range(LIMBS)], np.int64)


def from_limbs(limbs: np.ndarray | Sequence[int]) -> bytes | None:
    """The secret whose limbs are ``limbs``, or ``None`` when no 32-byte secret has them."""
    values = limbs.tolist() if isinstance(limbs, np.ndarray) else list(limbs)
    if len(values) != LIMBS or any(not 0 <= v <= _LIMB_MASK for v in values):
        return None
    if values[-1] >> _TOP_BITS:
        return None
    value = 0
    for v in reversed(values):
        value = (value << LIMB_BITS) | v
    return value.to_bytes(SECRET_BYTES, "big")


def parse(shares: Sequence[bytes]) -> np.ndarray:
    """Shares as an ``(len, LIMBS)`` int64 array; ValueError for any that is malformed."""
    if any(len(s) != SHARE_BYTES for s in shares):
        raise ValueError("malformed share")
    values = np.frombuffer(b"".join(shares), dtype="<u4").astype(np.int64)
    if (values >= PRIME).any():
        raise ValueError("malformed share")
    return values.reshape(len(shares), LIMBS)


def combine(shares: Mapping[int, bytes]) -> bytes:
    """The secret behind ``shares`` (exactly as many as the threshold, or more)."""
    if not shares:
        raise ValueError("no shares to combine")
    limbs = _through(shares, [0])[0]
    secret = from_limbs(limbs)
    if secret is None:
        raise ValueError("shares do not lie on one polynomial of a 32-byte secret")
    return secret


def evaluate(shares: Mapping[int, bytes], x: int) -> bytes:
    """The share at ``x`` of the polynomials through ``shares`` (to check other shares)."""
    share: bytes = _through(shares, [x])[0].astype("<u4").tobytes()
    return share


def _through(shares: Mapping[int, bytes], at: Sequence[int]) -> np.ndarray:
    xs = list(shares)
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("malformed share")
    ys = parse(list(shares.values()))
    points = np.asarray([xs], dtype=np.int64)
    values: np.ndarray = interpolate(points, ys[None], np.asarray([at], dtype=np.int64))[0]
    return values


def interpolate(xs: np.ndarray, ys: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Many polynomials at once: through ``xs`` ``(m, t)`` with values ``ys`` ``(m, t, L)``,
    evaluated at ``at`` ``(m, s)``; returns ``(m, s, L)``.

    Lagrange form: ``f(z) = Σ_i y_i · ∏_{j≠i} (z - x_j) / (x_i - x_j)``. The
    denominators are inverted together (Fermat, one vectorised exponentiation);
    the numerators come from prefix and suffix products, so a point costs
    O(t) vector operations for every polynomial together. Points within one
    row must be distinct (the caller checks).
    """
    m, t = xs.shape
    xs = xs % _P
    diff = (xs[:, :, None] - xs[:, None, :]) % _P  # x_i - x_j
    diff[:, np.arange(t), np.arange(t)] = 1
    den = np.ones((m, t), dtype=np.int64)
    for j in range(t):
        den = den * diff[:, :, j] % _P
    weights = ys % _P * _inverse(den)[:, :, None] % _P  # (m, t, L)
    gaps = (at[:, :, None] - xs[:, None, :]) % _P  # z - x_j: (m, s, t)
    prefix = np.ones_like(gaps)
    suffix = np.ones_like(gaps)
    for j in range(1, t):
        prefix[:, :, j] = prefix[:, :, j - 1] * gaps[:, :, j - 1] % _P
        suffix[:, :, t - 1 - j] = suffix[:, :, t - j] * gaps[:, :, t - j] % _P
    numerators = prefix * suffix % _P  # ∏_{j≠i} (z - x_j): (m, s, t)
    out = np.zeros((m, at.shape[1], ys.shape[2]), dtype=np.int64)
    for i in range(t):
        out = (out + numerators[:, :, i, None] * weights[:, None, i, :]) % _P
    return out


def _inverse(values: np.ndarray) -> np.ndarray:
    """Elementwise inverse mod p (values non-zero mod p), by ``v^(p-2)``."""
    result = np.ones_like(values)
    base = values % _P
    exponent = PRIME - 2
    while exponent:
        if exponent & 1:
            result = result * base % _P
        base = base * base % _P
        exponent >>= 1
    return result
