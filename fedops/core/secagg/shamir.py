"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A secret is the constant term of a random polynomial of degree t-1; a share
is the polynomial's value at the holder's index. Any t shares give the secret
back (Lagrange interpolation at 0); fewer reveal nothing about it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

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
    if not shares:
        raise ValueError("no shares to combine")
    if any(len(s) != SHARE_BYTES for s in shares.values()):
        raise ValueError("malformed share")
    secret = evaluate_many(shares, [0])[0]
    if secret >> (8 * SECRET_BYTES):
        raise ValueError("shares do not lie on one polynomial of a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


def evaluate(shares: Mapping[int, bytes], x: int) -> bytes:
    """The value at ``x`` of the polynomial through ``shares`` (to check other shares)."""
    return evaluate_many(shares, [x])[0].to_bytes(SHARE_BYTES, "big")


def evaluate_many(shares: Mapping[int, bytes], xs: Sequence[int]) -> list[int]:
    """Lagrange interpolation through ``shares`` at every ``x`` in ``xs``."""
    poly = Interpolant(shares)
    return [poly.at(x) for x in xs]


class Interpolant:
    """The polynomial through ``shares``, in Lagrange form, cheap to evaluate at small x.

    Holder indices are small, so every basis numerator ``∏(x - x_j)`` and
    denominator ``∏(x_i - x_j)`` is computed exactly in plain integers (a few
    hundred bits) instead of modulo the 521-bit prime; the denominators, which
    do not depend on ``x``, are inverted once, all together (Montgomery's
    trick), and folded into the share values. A point then costs ``t``
    products of a field element by a small integer and one reduction (the
    server's unmasking time was mostly reductions of 1042-bit products).
    """

    def __init__(self, shares: Mapping[int, bytes]) -> None:
        px = list(shares)
        py = [int.from_bytes(s, "big") for s in shares.values()]
        if (
            not px
            or any(y >= PRIME for y in py)
            or len(set(px)) != len(px)
            or any(not 0 < x < PRIME for x in px)
        ):
            raise ValueError("malformed share")
        dens = []
        for i, xi in enumerate(px):
            den = 1
            for j, xj in enumerate(px):
                if i != j:
                    den *= xi - xj
            dens.append(den % PRIME)
        self.xs, self.ys = px, py
        self.weights = [y * inv % PRIME for y, inv in zip(py, _invert_all(dens), strict=True)]

    def _numerators(self, x: int) -> list[int]:
        """``∏_{j≠i} (x - x_j)`` for every basis ``i``, exactly (prefix and suffix products)."""
        diffs = [x - xj for xj in self.xs]
        suffix = [1] * (len(diffs) + 1)
        for j in range(len(diffs) - 1, -1, -1):
            suffix[j] = suffix[j + 1] * diffs[j]
        out, before = [], 1
        for i in range(len(diffs)):
            out.append(before * suffix[i + 1])
            before *= diffs[i]
        return out

    def at(self, x: int) -> int:
        if x in self.xs:
            return self.ys[self.xs.index(x)]
        nums = self._numerators(x)
        return sum(w * n for w, n in zip(self.weights, nums, strict=True)) % PRIME


def _invert_all(values: Sequence[int]) -> list[int]:
    """Every modular inverse with a single inversion (Montgomery's trick)."""
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % PRIME)
    inv = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME
        inv = inv * values[i] % PRIME
    return out
