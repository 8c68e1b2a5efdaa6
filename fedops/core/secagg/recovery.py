"""Rebuilding clients' secrets from revealed shares that were checked one by one.

Every revealed share was checked against the digest its owner dealt it with
(:func:`fedops.core.secagg.shamir.share_digest`), so the holders that lied are
already named and left out; what reaches :func:`recover_all` are shares their
owner vouched for. Any ``threshold`` of them rebuild the owner's secret, and
:func:`recover_all` interpolates the first ``threshold`` of every owner at once
(one vectorised pass over owners with the same count). A secret its owner's
commitment refuses can then only come from an owner that dealt shares of no
single polynomial: the round is aborted naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from fedops.core.secagg import shamir
from fedops.core.secagg.primitives import SecAggAborted

#: ``valid(owner, secret)``: whether ``secret`` opens what ``owner`` committed to
Valid = Callable[[int, bytes], bool]


class DealtBadly(SecAggAborted):
    """An owner's own shares (each as it vouched for it) rebuild no secret it committed to."""

    def __init__(self, owner: int) -> None:
        super().__init__(
            f"client {owner}'s shares rebuild no secret it committed to: it dealt shares "
            "of no single polynomial; the round is aborted and the model is unchanged"
        )
        self.owner = owner


def recover_all(
    shares: Mapping[int, Mapping[int, bytes]], threshold: int, valid: Valid
) -> dict[int, bytes]:
    """``{owner: secret}`` from each owner's checked shares (at least ``threshold`` each).

    Raises:
        SecAggAborted: an owner with too few checked shares, or whose shares rebuild no
            secret that ``valid`` accepts (the first such owner, in index order).
    """
    t = threshold
    for owner in sorted(shares):
        if len(shares[owner]) < t:
            raise SecAggAborted(
                f"only {len(shares[owner])} good shares of client {owner}'s secret were "
                f"revealed (threshold {t}); the round is aborted and the model is unchanged"
            )
    secrets: dict[int, bytes] = {}
    owners = sorted(shares)
    for start in range(0, len(owners), 4096):  # bounded temporaries for huge cohorts
        secrets.update(_rebuild(owners[start : start + 4096], shares, t))
    for owner in owners:
        secret = secrets.get(owner)
        if secret is None or not valid(owner, secret):
            raise DealtBadly(owner)
    return secrets


def _rebuild(
    owners: list[int], shares: Mapping[int, Mapping[int, bytes]], t: int
) -> dict[int, bytes]:
    """Each owner's secret from its first ``t`` shares (absent: no 32-byte secret)."""
    if not owners:
        return {}
    holders = [sorted(shares[u])[:t] for u in owners]
    flat = [shares[u][x] for u, xs in zip(owners, holders, strict=True) for x in xs]
    if any(len(share) != shamir.SHARE_BYTES for share in flat):
        raise SecAggAborted("a revealed share is not a share (the server checks their size)")
    ys = np.frombuffer(b"".join(flat), dtype="<u4").astype(np.int64)
    ys = ys.reshape(len(owners), t, shamir.LIMBS)
    dealt_badly: list[bool] = np.asarray((ys >= shamir.PRIME).any(axis=(1, 2))).tolist()
    xs = np.asarray(holders, dtype=np.int64)
    at = np.zeros((len(owners), 1), dtype=np.int64)
    limbs = shamir.interpolate(xs, ys, at)[:, 0].tolist()
    out = {}
    for owner, row, bad in zip(owners, limbs, dealt_badly, strict=True):
        secret = None if bad else shamir.from_limbs(row)
        if secret is not None:
            out[owner] = secret
    return out
