"""The last stage of a SecAgg+ round at the server: rebuild the secrets, remove the masks.

Split from :mod:`fedops.core.secagg.server` (whose :class:`SecAggServer` it is the
base of) so that the stage that turns reveals into a sum, where a wrong share must
be named rather than summed, reads on its own. Only the shares an owner vouched for
(the digests it dealt them with) are used; a holder that revealed anything else is
excluded, with a reason that it was checked, not merely accused.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedops.core.secagg import recovery, shamir
from fedops.core.secagg.client import MASK_INFO, mask_sign
from fedops.core.secagg.messages import PublicKeys, Reveal, ShareKeys, UnmaskRequest
from fedops.core.secagg.primitives import ProtocolError, SecAggCrypto
from fedops.core.secagg.update import Encoding

SEED, KEY = 0, 1  # which of an owner's two secrets a share is of


@dataclass(frozen=True, slots=True, kw_only=True)
class SecureSum:
    total: NDArray[np.uint32]  # sum of the survivors' encoded updates, masks removed
    survivors: tuple[int, ...]
    encoding: Encoding


class Unmasking:
    """Stage 5 of :class:`~fedops.core.secagg.server.SecAggServer`; the state is the round's."""

    bound: bytes
    crypto: SecAggCrypto
    threshold: int
    vector_length: int
    encoding: Encoding | None
    excluded: dict[int, str]
    proven: dict[int, str]
    _keys: dict[int, PublicKeys]
    _shares: dict[int, ShareKeys]
    _u2: set[int]
    _u3: set[int]
    _held: dict[int, set[int]]
    _surviving_holders: Counter[int]
    _masked: dict[int, NDArray[np.uint32]]
    _reveals: dict[int, Reveal]
    _requests: dict[int, UnmaskRequest]
    _expect: Callable[[int, int, Container[int]], None]  # the round's stage bookkeeping
    _close: Callable[[int], None]

    def _masked_with(self, owner: int) -> bool:
        """Whether some survivor's input carries a mask shared with ``owner``."""
        return self._surviving_holders[owner] > 0

    def receive_reveal(self, index: int, reply: Reveal) -> None:
        self._expect(5, index, self._requests)
        held = self._held[index]
        if tuple(u for u, _ in reply.self_mask) != tuple(sorted(held & self._u3)) or tuple(
            u for u, _ in reply.mask_key
        ) != tuple(sorted(held - self._u3)):
            raise ProtocolError("revealed shares do not answer the unmask request")
        if any(len(s) != shamir.SHARE_BYTES for _, s in reply.self_mask + reply.mask_key):
            raise ProtocolError(f"shares must be {shamir.SHARE_BYTES} bytes")
        self._reveals[index] = reply

    def finish(self) -> SecureSum:
        """Remove every mask from the survivors' sum (or abort, saying why)."""
        self._close(5)
        assert self.encoding is not None
        seeds: dict[int, dict[int, bytes]] = {u: {} for u in self._u3}
        keys: dict[int, dict[int, bytes]] = {u: {} for u in self._u2 - self._u3}
        for v, reveal in sorted(self._reveals.items()):
            for u, s in reveal.self_mask:
                seeds[u][v] = s
            for u, s in reveal.mask_key:
                keys[u][v] = s
        total = np.zeros(self.vector_length, dtype=np.uint32)
        for v in sorted(self._u3):
            total += self._masked[v]
        for _, seed in sorted(self._recover(seeds, SEED, self._commits_to).items()):
            total -= self.crypto.expand(seed, self.vector_length)
        # only dropped clients with whom some survivor's input carries a mask
        dropped = {u: keys[u] for u in sorted(self._u2 - self._u3) if self._masked_with(u)}
        for u, secret in sorted(self._recover(dropped, KEY, self._opens).items()):
            for v in sorted(self._u3):
                if u not in self._held[v]:
                    continue  # v never masked with u
                pair = self.crypto.agree(secret, self._keys[v].mask_key, MASK_INFO + self.bound)
                if mask_sign(v, u) > 0:
                    total -= self.crypto.expand(pair, self.vector_length)
                else:
                    total += self.crypto.expand(pair, self.vector_length)
        return SecureSum(total=total, survivors=tuple(sorted(self._u3)), encoding=self.encoding)

    def _commits_to(self, owner: int, seed: bytes) -> bool:
        """Whether ``seed`` is the self-mask seed ``owner`` committed to."""
        commitment = self._shares[owner].commitment
        return hashlib.sha256(self.bound + seed).digest() == commitment

    def _opens(self, owner: int, private: bytes) -> bool:
        """Whether ``private`` is the mask key whose public half ``owner`` advertised."""
        return self.crypto.public_key(private) == self._keys[owner].mask_key

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
            dealt = {s.target: s.digests[part] for s in self._shares[owner].shares}
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
