"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A secret is the constant term of a random polynomial of degree t-1; a share
is the polynomial's value at the holder's index. Any t shares give the secret
back (Lagrange interpolation at 0); fewer reveal nothing about it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

#: a Mersenne prime larger than any 32-byte secret
PRIME = (1 << 521) - 1
SHARE_BYTES = 66
SECRET_BYTES = 32


def split(
    secret: bytes, threshold: int, holders: Iterable[int], random: Callable[[int], bytes]
) -> dict[int, bytes]:
    """Share ``secret`` so that any ``threshold`` of ``holders`` (indices > 0) recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secrets are {SECRET_BYTES} bytes, got {len(secret)}")
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold}")
    coeffs = [int.from_bytes(secret, "big")] + [
        int.from_bytes(random(80), "big") % PRIME for _ in range(threshold - 1)
    ]
    shares = {}
    for x in holders:
        if not 0 < x < PRIME:
            raise ValueError(f"holder index {x} must be positive")
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        shares[x] = y.to_bytes(SHARE_BYTES, "big")
    return shares


def combine(shares: Mapping[int, bytes]) -> bytes:
    """The secret behind ``shares`` (exactly as many as the threshold, or more)."""
    points = [(x, int.from_bytes(s, "big")) for x, s in shares.items()]
    if not points:
        raise ValueError("no shares to combine")
    if any(len(s) != SHARE_BYTES for s in shares.values()) or any(y >= PRIME for _, y in points):
        raise ValueError("malformed share")
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >> (8 * SECRET_BYTES):
        raise ValueError("shares do not lie on one polynomial of a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


def evaluate(shares: Mapping[int, bytes], x: int) -> bytes:
    """The value at ``x`` of the polynomial through ``shares`` (to check other shares)."""
    points = [(xi, int.from_bytes(s, "big")) for xi, s in shares.items()]
    y = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (x - xj) % PRIME
                den = den * (xi - xj) % PRIME
        y = (y + yi * num * pow(den, -1, PRIME)) % PRIME
    return y.to_bytes(SHARE_BYTES, "big")
