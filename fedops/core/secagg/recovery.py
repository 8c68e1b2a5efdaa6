"""Rebuilding one client's secret from revealed shares, some of which may be lies.

The server checks every candidate secret against what the owner committed to
(a hash of its self-mask seed, or the public half of its mask key), so a wrong
share can only cost a retry with another subset of holders; holders whose
revealed share disagrees with the rebuilt secret are named.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from fedops.core.secagg import shamir
from fedops.core.secagg.primitives import SecAggAborted

#: subsets of revealed shares tried when some are wrong: all of them up to this many
MAX_RECOVERY_TRIES = 4096


def recover(
    owner: int, shares: Mapping[int, bytes], threshold: int, valid: Callable[[bytes], bool]
) -> tuple[bytes, list[int]]:
    """``(owner's secret, holders whose share was wrong)`` from ``threshold`` consistent shares.

    Raises:
        SecAggAborted: too few shares, or no subset rebuilds a secret that ``valid`` accepts.
    """
    t = threshold
    if len(shares) < t:
        raise SecAggAborted(
            f"only {len(shares)} shares of client {owner}'s secret were revealed "
            f"(threshold {t}); the round is aborted and the model is unchanged"
        )
    holders = sorted(shares)
    for chosen in _subsets(holders, t, owner):
        subset = {x: shares[x] for x in chosen}
        spares = [x for x in holders if x not in subset]
        try:  # the secret (at 0) and what every other holder should have revealed
            at_zero, *expected = shamir.evaluate_many(subset, [0, *spares])
        except ValueError:
            continue
        if at_zero >> (8 * shamir.SECRET_BYTES):
            continue
        secret = at_zero.to_bytes(shamir.SECRET_BYTES, "big")
        if not valid(secret):
            continue
        liars = [
            x
            for x, y in zip(spares, expected, strict=True)
            if y.to_bytes(shamir.SHARE_BYTES, "big") != shares[x]
        ]
        return secret, liars
    raise SecAggAborted(
        f"the revealed shares of client {owner}'s secret are inconsistent; the round is "
        "aborted and the model is unchanged"
    )


def _subsets(holders: list[int], t: int, seed: int) -> Iterator[tuple[int, ...]]:
    """The first ``t`` holders, then every ``t``-subset (random ones if there are too many)."""
    yield tuple(holders[:t])
    if math.comb(len(holders), t) <= MAX_RECOVERY_TRIES:
        yield from itertools.combinations(holders, t)
        return
    rng = np.random.default_rng(seed)
    for _ in range(MAX_RECOVERY_TRIES):
        yield tuple(sorted(int(x) for x in rng.choice(holders, t, replace=False)))
