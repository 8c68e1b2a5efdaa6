"""Rebuilding clients' secrets from revealed shares, some of which may be lies.

The server checks every candidate secret against what the owner committed to
(a hash of its self-mask seed, or the public half of its mask key), so a wrong
share can only cost a retry with another subset of holders; holders whose
revealed share disagrees with the rebuilt secret are named.

:func:`recover_all` does the common case for every owner at once: it
interpolates each owner's first ``threshold`` shares at 0 (the secret) and at
the other holders' indices (what they should have revealed), in one
vectorised pass over owners with the same number of holders. Only an owner
whose first subset does not give a secret its commitment accepts goes on to
the subset search of :func:`recover`.
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

#: ``valid(owner, secret)``: whether ``secret`` opens what ``owner`` committed to
Valid = Callable[[int, bytes], bool]


def recover_all(
    shares: Mapping[int, Mapping[int, bytes]], threshold: int, valid: Valid
) -> tuple[dict[int, bytes], dict[int, list[int]]]:
    """``({owner: secret}, {owner: holders whose share was wrong})`` for every owner.

    Raises:
        SecAggAborted: an owner with too few shares, or whose shares rebuild no
            secret that ``valid`` accepts (the first such owner, in index order).
    """
    for owner in sorted(shares):
        _enough(owner, shares[owner], threshold)
    groups: dict[int, list[int]] = {}
    for owner in sorted(shares):
        groups.setdefault(len(shares[owner]), []).append(owner)
    secrets: dict[int, bytes] = {}
    liars: dict[int, list[int]] = {}
    for owners in groups.values():
        found = _first_subsets(owners, shares, threshold, valid)
        secrets.update((u, s) for u, (s, _) in found.items())
        liars.update((u, lied) for u, (_, lied) in found.items())
    for owner in sorted(shares):
        if owner not in secrets:  # a lie among the first holders: search the subsets
            secrets[owner], liars[owner] = recover(owner, shares[owner], threshold, valid)
    return secrets, liars


def _enough(owner: int, shares: Mapping[int, bytes], t: int) -> None:
    if len(shares) < t:
        raise SecAggAborted(
            f"only {len(shares)} shares of client {owner}'s secret were revealed "
            f"(threshold {t}); the round is aborted and the model is unchanged"
        )


def _first_subsets(
    owners: list[int], shares: Mapping[int, Mapping[int, bytes]], t: int, valid: Valid
) -> dict[int, tuple[bytes, list[int]]]:
    """Owners (all with the same number of holders) whose first ``t`` holders rebuild a
    valid secret, each with the other holders whose share disagrees."""
    holders = [sorted(shares[u]) for u in owners]
    flat = [shares[u][x] for u, xs in zip(owners, holders, strict=True) for x in xs]
    if any(len(s) != shamir.SHARE_BYTES for s in flat):
        return {}  # a malformed share somewhere: each owner goes the careful way
    h = len(holders[0])
    ys = np.frombuffer(b"".join(flat), dtype="<u4").astype(np.int64)
    ys = ys.reshape(len(owners), h, shamir.LIMBS)
    careful = np.asarray((ys >= shamir.PRIME).any(axis=(1, 2)))  # an out-of-field share
    xs = np.asarray(holders, dtype=np.int64)
    at = np.concatenate([np.zeros((len(owners), 1), np.int64), xs[:, t:]], axis=1)
    values = shamir.interpolate(xs[:, :t], ys[:, :t], at)
    wrong = (values[:, 1:] != ys[:, t:]).any(axis=2)  # (owners, h - t)
    lied = wrong.any(axis=1).tolist()
    found = {}
    for row, (owner, limbs, skip) in enumerate(
        zip(owners, values[:, 0].tolist(), careful.tolist(), strict=True)
    ):
        secret = None if skip else shamir.from_limbs(limbs)
        if secret is not None and valid(owner, secret):
            liars = [holders[row][t + j] for j in np.flatnonzero(wrong[row])] if lied[row] else []
            found[owner] = (secret, liars)
    return found


def recover(
    owner: int, shares: Mapping[int, bytes], threshold: int, valid: Valid
) -> tuple[bytes, list[int]]:
    """``(owner's secret, holders whose share was wrong)`` from ``threshold`` consistent shares.

    Raises:
        SecAggAborted: too few shares, or no subset rebuilds a secret that ``valid`` accepts.
    """
    t = threshold
    _enough(owner, shares, t)
    holders = sorted(shares)
    for chosen in _subsets(holders, t, owner):
        subset = {x: shares[x] for x in chosen}
        spares = [x for x in holders if x not in subset]
        try:  # the secret (at 0) and what every other holder should have revealed
            secret = shamir.combine(subset)
        except ValueError:
            continue
        if not valid(owner, secret):
            continue
        liars = [x for x in spares if shamir.evaluate(subset, x) != shares[x]]
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
