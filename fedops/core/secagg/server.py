"""The server's side of a SecAgg+ round: route messages, then unmask only the sum.

Stage by stage the server keeps the sets of Bonawitz et al.: ``U1`` advertised
keys, ``U2`` shared them, ``U3`` sent a masked input (the survivors), and the
dropped ``U2 \\ U3``. A client whose secrets could no longer be rebuilt (fewer
than ``threshold`` neighbours left) is excluded before it masks anything; a
client that complained about a share is left out of the sum (so a false
complaint costs only its sender). The survivors then sign the survivor set;
fewer signers than a majority of the committee, or too few survivors, abort the
round (:class:`SecAggAborted`) and nothing is aggregated. Every exclusion carries a
reason in :attr:`SecAggServer.excluded`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from fedops.core.secagg import graph, shamir
from fedops.core.secagg.client import KEY_BYTES
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    EncryptedShare,
    MaskedInput,
    MaskRequest,
    NeighbourKeys,
    PublicKeys,
    Reveal,
    Setup,
    ShareKeys,
    SignedSurvivors,
    SurvivorSignature,
    UnmaskRequest,
    bind,
)
from fedops.core.secagg.primitives import (
    ProtocolError,
    SecAggAborted,
    SecAggCrypto,
    weak_x25519,
)
from fedops.core.secagg.quantize import MODULUS
from fedops.core.secagg.unmasking import SecureSum, Unmasking, masked_with
from fedops.core.secagg.update import Encoding, round_encoding

__all__ = ["DEFAULT_COMMITTEE", "SecAggServer", "SecureSum"]

#: sites whose survivor-set signatures count: the first this many of the cohort. Each site
#: verifies about half of them (Ed25519, ~0.1 ms each here); a larger committee tolerates
#: more dropouts among its members, a smaller one costs less
DEFAULT_COMMITTEE = 64


class SecAggServer:
    """One round of SecAgg+ for the sites of ``cohort`` (indices ``1 … n``).

    Args:
        context: bytes unique to the run and round (bound with the cohort and parameters).
        cohort: the sites taking part; site ``cohort[i - 1]`` is client ``i``.
        degree: neighbours per client (``None``: ``2·⌈log2 n⌉``).
        threshold: shares needed to rebuild a secret (``None``: ``⌊k/2⌋ + 1``).
        vector_length: words in every client's encoded update.
        clip: the quantizer's clipping range.
        min_survivors: fewest inputs the server may sum (default ``max(3, threshold)``),
            raised to ``dp_min_survivors`` (the fewest noise shares distributed DP's
            accounting assumes). Sealed into the encoding: no honest site signs a smaller
            survivor set, so none reveals for one.
        committee: the first ``m`` sites, whose signatures over the survivor set count
            (default ``min(n, DEFAULT_COMMITTEE)``).
        terms: what every site of the round trains
            (:func:`~fedops.core.secagg.messages.round_terms`), sealed into the round.
        noise: ``(noise_multiplier, l2_clip)`` for distributed DP: clients clip their update
            and add Skellam noise so the sum over all clients carries ``N(0, (σ·clip)²)``.

    Stage 5's sum is :class:`~fedops.core.secagg.unmasking.Unmasking`'s, over the record
    :meth:`finish` hands it.
    """

    def __init__(
        self,
        *,
        context: bytes,
        cohort: Sequence[str],
        vector_length: int,
        clip: float,
        crypto: SecAggCrypto,
        degree: int | None = None,
        threshold: int | None = None,
        min_survivors: int | None = None,
        dp_min_survivors: int = 0,
        noise: tuple[float, float] | None = None,
        committee: int | None = None,
        terms: bytes = b"",
    ) -> None:
        n = len(cohort)
        if n < 2:
            raise ValueError(f"secure aggregation needs at least 2 clients, got {n}")
        self.cohort = tuple(cohort)
        clients = list(range(1, n + 1))
        k = graph.default_degree(n) if degree is None else min(int(degree), n - 1)
        k = max(k, 1)
        actual = graph.effective_degree(n, k)
        self.threshold = graph.default_threshold(actual) if threshold is None else int(threshold)
        if not actual / 2 < self.threshold <= actual:
            raise ValueError(
                f"secagg threshold {self.threshold} must be above half the neighbourhood size "
                f"{actual} and at most {actual}"
            )
        self.requested_degree = k
        self.committee = min(n, DEFAULT_COMMITTEE) if committee is None else int(committee)
        if not 1 <= self.committee <= n:
            raise ValueError(f"secagg committee must be in 1..{n}, got {self.committee}")
        self.context = context
        self.terms = terms
        self.bound = bind(context, self.cohort, k, self.threshold, self.committee)
        self.graph = graph.neighbours(clients, k, graph.graph_seed(self.bound))
        floor = max(3, self.threshold) if min_survivors is None else min_survivors
        self.min_survivors = max(floor, dp_min_survivors)
        self.vector_length = vector_length
        self.noise = noise
        self.clip = clip
        self.crypto = crypto
        self.clients = tuple(sorted(clients))
        self.excluded: dict[int, str] = {}
        #: misbehaviour the server checked itself (a revealed share against its digest, an
        #: owner's shares against its commitment), unlike a complaint, which only accuses
        self.proven: dict[int, str] = {}
        #: dealer -> the holders that complained about its shares. Not proof (a colluder may
        #: complain falsely), but a dealer many neighbours accuse is named for the operator:
        #: otherwise only the honest complainers, left out of the sum, would show
        self.accused: dict[int, set[int]] = {}
        self.stage = 1
        self._keys: dict[int, PublicKeys] = {}
        self._shares: dict[int, ShareKeys] = {}
        self._u1: set[int] = set()
        self._u2: set[int] = set()
        self._u3: set[int] = set()
        self._held: dict[int, set[int]] = {}  # holder -> owners whose shares it holds
        self._surviving_holders: Counter[int] = Counter()  # owner -> survivors with its shares
        self._masked: dict[int, NDArray[np.uint32]] = {}
        self._reveals: dict[int, Reveal] = {}
        self._signatures: dict[int, bytes] = {}
        self._requests: dict[int, UnmaskRequest] = {}
        self.encoding: Encoding | None = None

    @property
    def degree(self) -> int:
        return max(len(v) for v in self.graph.values())

    def _expect(self, stage: int, index: int, members: Container[int]) -> None:
        if self.stage != stage:
            raise ProtocolError(f"stage {stage} message, but the round is in stage {self.stage}")
        if index not in members:
            raise ProtocolError(f"client {index} is not part of stage {stage}")

    def _exclude(self, members: set[int], need: Callable[[int], int], why: str) -> None:
        """Drop members with fewer than ``threshold`` neighbours, until none is left."""
        changed = True
        while changed:
            changed = False
            for u in sorted(members):
                if need(u) < self.threshold:
                    members.discard(u)
                    self.excluded[u] = why.format(count=need(u), threshold=self.threshold)
                    changed = True

    def _alive(self, u: int, members: set[int]) -> int:
        return sum(1 for v in self.graph[u] if v in members)

    def _enough(self, members: set[int], stage: str) -> None:
        if len(members) < self.min_survivors:
            raise SecAggAborted(
                f"only {len(members)} clients are left after {stage}; secure aggregation "
                f"needs at least {self.min_survivors}: the round is aborted and the model "
                "is unchanged"
            )

    # -- stage 1: advertise keys --------------------------------------------
    def setup_for(self, index: int) -> Setup:
        return Setup(
            context=self.context,
            index=index,
            cohort=self.cohort,
            degree=self.requested_degree,
            threshold=self.threshold,
            committee=self.committee,
        )

    def receive_keys(self, index: int, keys: PublicKeys) -> None:
        self._expect(1, index, self.clients)
        if keys.index != index:
            raise ProtocolError(f"client {index} sent keys labelled as client {keys.index}")
        if len(keys.cipher_key) != KEY_BYTES or len(keys.mask_key) != KEY_BYTES:
            raise ProtocolError(f"public keys must be {KEY_BYTES} bytes")
        if keys.cipher_key == keys.mask_key:
            raise ProtocolError("the cipher key and the mask key must differ")
        if not 1 <= keys.num_examples < MODULUS:
            raise ProtocolError(f"num_examples {keys.num_examples} is out of range")
        for key in (keys.cipher_key, keys.mask_key):
            if weak_x25519(key):  # every secret agreed with it would be public
                raise ProtocolError("unusable X25519 public key: a small-order point")
        self._keys[index] = keys

    def _close(self, stage: int) -> None:
        if self.stage != stage:
            raise ProtocolError(f"cannot close stage {stage}: the round is in stage {self.stage}")
        self.stage = stage + 1

    def close_keys(self) -> dict[int, NeighbourKeys]:
        self._close(1)
        self._u1 = set(self._keys)
        for u in set(self.clients) - self._u1:
            self.excluded[u] = "did not advertise keys"
        self._exclude(
            self._u1,
            lambda u: self._alive(u, self._u1),
            "only {count} of its neighbours advertised keys (threshold {threshold})",
        )
        self._enough(self._u1, "advertising keys")
        self.encoding = self._encoding(self._u1)
        relayed = {v: replace(self._keys[v], num_examples=0) for v in self._u1}  # counts: ours
        return {
            u: NeighbourKeys(
                keys=tuple(relayed[v] for v in self.graph[u] if v in self._u1),
                encoding=self.encoding,
                terms=self.terms,
            )
            for u in sorted(self._u1)
        }

    # -- stage 2: share keys --------------------------------------------------
    def receive_shares(self, index: int, reply: ShareKeys) -> None:
        self._expect(2, index, self._u1)
        expected = {v for v in self.graph[index] if v in self._u1}
        targets = [s.target for s in reply.shares]
        if any(s.source != index for s in reply.shares):
            raise ProtocolError(f"client {index} sent shares labelled with another source")
        if len(set(targets)) != len(targets) or set(targets) != expected:
            raise ProtocolError(
                f"client {index} must send one share to each of its {len(expected)} "
                f"neighbours; got {len(targets)} for {sorted(set(targets) ^ expected)[:5]}…"
            )
        if len(reply.commitment) != 32:
            raise ProtocolError("the self-mask commitment must be 32 bytes")
        if any(len(s.digests) != 2 * shamir.DIGEST_BYTES for s in reply.shares):
            raise ProtocolError(f"share digests must be {2 * shamir.DIGEST_BYTES} bytes")
        self._shares[index] = reply

    def close_shares(self) -> dict[int, MaskRequest]:
        self._close(2)
        self._u2 = set(self._shares) & self._u1
        for u in self._u1 - self._u2:
            self.excluded.setdefault(u, "did not share its keys")
        self._exclude(
            self._u2,
            lambda u: self._alive(u, self._u2),
            "only {count} of its neighbours shared keys (threshold {threshold})",
        )
        self._enough(self._u2, "sharing keys")
        assert self.encoding is not None
        inbox: dict[int, list[EncryptedShare]] = {v: [] for v in self._u2}
        for u in sorted(self._u2):
            for share in self._shares[u].shares:
                if share.target in self._u2:
                    inbox[share.target].append(share)
        self._held = {v: {s.source for s in inbox[v]} for v in self._u2}
        return {
            v: MaskRequest(shares=tuple(inbox[v]), encoding=self.encoding) for v in sorted(self._u2)
        }

    def _encoding(self, members: set[int]) -> Encoding:
        """The grid for the ``members`` who may be summed, fixed once the keys are in,
        before any secret is shared, and the same for every client (they seal their
        shares and signatures with it)."""
        return round_encoding(
            summands=len(members),
            cohort=len(self.clients),
            clip=self.clip,
            max_examples=max(self._keys[u].num_examples for u in members),
            noise=self.noise,
            dimension=self.vector_length - 1,  # the last word is the weight
            min_survivors=self.min_survivors,
        )

    # -- stage 3: masked inputs ---------------------------------------------------
    def receive_masked(self, index: int, reply: MaskedInput) -> None:
        self._expect(3, index, self._u2)
        vec = reply.vector
        if vec.dtype != np.uint32 or vec.shape != (self.vector_length,):
            raise ProtocolError(
                f"masked input must be uint32 of shape ({self.vector_length},), "
                f"got {vec.dtype} {vec.shape}"
            )
        unknown = set(reply.complaints) - self._held[index]
        if unknown:
            raise ProtocolError(f"complaints about clients {sorted(unknown)} it holds no shares of")
        self._held[index] -= set(reply.complaints)
        for dealer in reply.complaints:
            self.accused.setdefault(dealer, set()).add(index)
        if reply.complaints:  # it masked without those neighbours: its input cannot be
            # unmasked in the sum, and only it can know whether the shares were bad
            self.excluded[index] = (
                f"could not decrypt the shares of clients {list(reply.complaints)}, or they "
                "were not what their owners vouched for; its input is left out of the sum"
            )
            return
        self._masked[index] = vec

    def close_masked(self) -> dict[int, ConsistencyRequest]:
        """The survivor set, the same for every survivor (they sign it next)."""
        self._close(3)
        self._u3 = set(self._masked) & self._u2
        for u in self._u2 - self._u3:
            self.excluded.setdefault(u, "sent no masked input")
        self._enough(self._u3, "masking")
        self._quorate(self._u3, "sent a masked input")
        # per owner, how many survivors hold its shares (0: no survivor masked with it)
        self._surviving_holders = Counter(u for v in self._u3 for u in self._held[v])
        for u in sorted(self._u2):
            holders = self._surviving_holders[u]
            if holders < self.threshold and (
                u in self._u3 or masked_with(self._surviving_holders, u)
            ):
                raise SecAggAborted(
                    f"client {u}'s masks cannot be removed: only {holders} of its neighbours "
                    f"survive (threshold {self.threshold}); the round is aborted and the model "
                    "is unchanged"
                )
        survivors = tuple(sorted(self._u3))
        return {v: ConsistencyRequest(survivors=survivors) for v in survivors}

    def _quorate(self, members: set[int], what: str) -> None:
        """Abort unless more than half the committee is among ``members``."""
        present = sum(1 for u in members if u <= self.committee)
        need = self.committee // 2 + 1
        if present < need:
            raise SecAggAborted(
                f"only {present} of the {self.committee} committee sites {what}; sites reveal "
                f"only for a survivor set that at least {need} of them signed: the round is "
                "aborted and the model is unchanged"
            )

    # -- stage 4: consistency check ------------------------------------------------
    def receive_signature(self, index: int, reply: SurvivorSignature) -> None:
        self._expect(4, index, self._u3)
        if len(reply.signature) > 1024:
            raise ProtocolError("a survivor-set signature is at most 1024 bytes")
        self._signatures[index] = reply.signature

    def close_consistency(self) -> dict[int, UnmaskRequest]:
        """The signers' unmask requests: the set again, with every signature over it.

        A survivor that did not sign stays a survivor (its input is in the sum; its
        neighbours reveal its self mask); it is just not asked to reveal.
        """
        self._close(4)
        signers = sorted(self._signatures)
        self._quorate(set(signers), "signed the survivor set")
        survivors = tuple(sorted(self._u3))
        signatures = tuple(
            SignedSurvivors(
                index=w, signature=self._signatures[w], certificate=self._keys[w].certificate
            )
            for w in signers
            if w <= self.committee
        )
        self._requests = {
            v: UnmaskRequest(survivors=survivors, signatures=signatures) for v in signers
        }
        return dict(self._requests)

    # -- stage 5: unmasking ----------------------------------------------------------
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
        return Unmasking(
            bound=self.bound,
            crypto=self.crypto,
            threshold=self.threshold,
            vector_length=self.vector_length,
            encoding=self.encoding,
            keys=self._keys,
            shares=self._shares,
            shared=self._u2,
            survivors=self._u3,
            held=self._held,
            surviving_holders=self._surviving_holders,
            masked=self._masked,
            reveals=self._reveals,
            excluded=self.excluded,
            proven=self.proven,
        ).total()
