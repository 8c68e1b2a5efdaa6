"""The last stage of a SecAgg+ round at the server: rebuild the secrets, remove the masks.

Split from :mod:`fedops.core.secagg.server` so that the stage that turns reveals into a
sum, where a wrong share must be named rather than summed, reads on its own, over the
round's record it is handed (:class:`Unmasking`) and nothing else of the server's. Only
the shares an owner vouched for (the digests it dealt them with) are used; a holder that
revealed anything else is excluded, with a reason that it was checked, not merely accused.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedops.core.secagg import recovery, shamir
from fedops.core.secagg.client import MASK_INFO, mask_sign, pair_info
from fedops.core.secagg.messages import PublicKeys, Reveal, ShareKeys
from fedops.core.secagg.primitives import SecAggCrypto
from fedops.core.secagg.update import Encoding

SEED, KEY = 0, 1  # which of an owner's two secrets a share is of


@dataclass(frozen=True, slots=True, kw_only=True)
class SecureSum:
    total: NDArray[np.uint32]  # sum of the survivors' encoded updates, masks removed
    survivors: tuple[int, ...]
    encoding: Encoding


def masked_with(surviving_holders: Counter[int], owner: int) -> bool:
    """Whether some survivor's input carries a mask shared with ``owner``: only then must
    its masks be removed (stage 3 aborts when they cannot be, stage 5 removes them)."""
    return surviving_holders[owner] > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Unmasking:
    """Stage 5 over the record of a round that got through stage 4, handed over whole by
    :meth:`~fedops.core.secagg.server.SecAggServer.finish`, so that what the sum depends on
    is named in one place.

    The sets and maps are the round's own, only read here, except ``excluded`` and
    ``proven``: the round's record of exclusions, to which a holder that revealed a wrong
    share, or an owner that dealt shares of no single polynomial, is added.
    """

    bound: bytes
    crypto: SecAggCrypto
    threshold: int
    vector_length: int
    encoding: Encoding
    keys: Mapping[int, PublicKeys]  # stage 1: each client's advertised keys
    shares: Mapping[int, ShareKeys]  # stage 2: each owner's commitment and share digests
    shared: AbstractSet[int]  # U2: the clients that shared their keys
    survivors: AbstractSet[int]  # U3: the clients whose masked input is summed
    held: Mapping[int, AbstractSet[int]]  # holder -> owners whose shares it holds
    surviving_holders: Counter[int]  # owner -> survivors that hold its shares
    masked: Mapping[int, NDArray[np.uint32]]  # the survivors' masked inputs
    reveals: Mapping[int, Reveal]  # holder -> the shares it revealed
    excluded: dict[int, str]
    proven: dict[int, str]

    def total(self) -> SecureSum:
        """Remove every mask from the survivors' sum (or abort, saying why)."""
        seeds: dict[int, dict[int, bytes]] = {u: {} for u in self.survivors}
        keys: dict[int, dict[int, bytes]] = {u: {} for u in self.shared - self.survivors}
        for v, reveal in sorted(self.reveals.items()):
            for u, s in reveal.self_mask:
                seeds[u][v] = s
            for u, s in reveal.mask_key:
                keys[u][v] = s
        total = np.zeros(self.vector_length, dtype=np.uint32)
        for v in sorted(self.survivors):
            total += self.masked[v]
        for _, seed in sorted(self._recover(seeds, SEED, self._commits_to).items()):
            total -= self.crypto.expand(seed, self.vector_length)
        # only dropped clients with whom some survivor's input carries a mask
        dropped = {
            u: keys[u]
            for u in sorted(self.shared - self.survivors)
            if masked_with(self.surviving_holders, u)
        }
        for u, secret in sorted(self._recover(dropped, KEY, self._opens).items()):
            for v in sorted(self.survivors):
                if u not in self.held[v]:
                    continue  # v never masked with u
                pair = self.crypto.agree(
                    secret, self.keys[v].mask_key, pair_info(MASK_INFO, self.bound, u, v)
                )
                if mask_sign(v, u) > 0:
                    total -= self.crypto.expand(pair, self.vector_length)
                else:
                    total += self.crypto.expand(pair, self.vector_length)
        return SecureSum(
            total=total, survivors=tuple(sorted(self.survivors)), encoding=self.encoding
        )

    def _commits_to(self, owner: int, seed: bytes) -> bool:
        """Whether ``seed`` is the self-mask seed ``owner`` committed to."""
        commitment = self.shares[owner].commitment
        return hashlib.sha256(self.bound + seed).digest() == commitment

    def _opens(self, owner: int, private: bytes) -> bool:
        """Whether ``private`` is the mask key whose public half ``owner`` advertised."""
        return self.crypto.public_key(private) == self.keys[owner].mask_key

    def _recover(
        self,
        shares: Mapping[int, Mapping[int, bytes]],
        kind: int,
        valid: Callable[[int, bytes], bool],
    ) -> dict[int, bytes]:
        """Every owner's secret from the revealed shares its owner vouched for (the digests
        it dealt them with); a holder that revealed anything else is named and excluded."""
        digest = shamir.share_digester(self.bound, (b"seed", b"key")[kind])
        part = slice(kind * shamir.DIGEST_BYTES, (kind + 1) * shamir.DIGEST_BYTES)
        checked: dict[int, dict[int, bytes]] = {}
        for owner, revealed in shares.items():
            dealt = {s.target: s.digests[part] for s in self.shares[owner].shares}
            good = checked[owner] = {}
            for v, share in revealed.items():
                if digest(owner, v, share) == dealt[v]:
                    good[v] = share
                else:
                    why = f"revealed a wrong share of client {owner}'s secret"
                    self.excluded[v] = self.proven[v] = why
        try:
            return recovery.recover_all(checked, self.threshold, valid)
        except recovery.DealtBadly as exc:
            why = "dealt shares of no single polynomial (round aborted)"
            self.excluded[exc.owner] = self.proven[exc.owner] = why
            raise
