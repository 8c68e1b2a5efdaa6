"""Gaussian noise from the OS's CSPRNG, for DP in deployment.

numpy's generators (PCG64) are fast but not cryptographic: whoever learns
enough of their output can predict the rest. DP noise must be unpredictable
to everyone, so a deployed coordinator draws it from ``secrets`` (the OS
CSPRNG) through the Box-Muller transform over 53-bit uniforms. Seeded numpy
generators remain for reproducible experiments, which are not private.
"""

from __future__ import annotations

import secrets
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


class NormalSource(Protocol):
    """What DP mechanisms draw noise from: ``numpy.random.Generator`` or :class:`SecureNormal`."""

    def normal(
        self, loc: float = 0.0, scale: float = 1.0, size: int | tuple[int, ...] | None = None
    ) -> NDArray[np.float64] | float: ...


def _uniforms(count: int) -> NDArray[np.float64]:
    """``count`` uniforms in (0, 1], 53 random bits each, from the OS CSPRNG."""
    words = np.frombuffer(secrets.token_bytes(8 * count), dtype=np.uint64)
    return ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53


class SecureNormal:
    """``normal(loc, scale, size)`` like numpy's, from the OS CSPRNG."""

    def normal(
        self, loc: float = 0.0, scale: float = 1.0, size: int | tuple[int, ...] | None = None
    ) -> NDArray[np.float64] | float:
        shape = () if size is None else (size,) if isinstance(size, int) else tuple(size)
        count = int(np.prod(shape, dtype=np.int64))
        half = (count + 1) // 2
        u1, u2 = _uniforms(half), _uniforms(half)
        radius = np.sqrt(-2.0 * np.log(u1))  # u1 > 0: log is finite
        angle = 2.0 * np.pi * u2
        pairs = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
        out = loc + scale * pairs.reshape(shape)
        return float(out) if size is None else out
