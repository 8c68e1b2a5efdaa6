"""One client's side of a SecAgg+ round: a state machine over the five stages.

The client does not trust the coordinator. It derives its neighbours itself
from the cohort and a hash of the round (:func:`graph.neighbourhood`), refuses
parameters below its :class:`~fedops.core.secagg.policy.SecAggPolicy`, checks
that keys come from the site the cohort names at that index (signed, when sites
have identities), and before it reveals anything it checks the consistency of
the survivor set (Bonawitz et al. 2017, Fig. 4): it signs one set per round,
and reveals only once a quorum of the round's committee (``⌊(m + c)/2⌋ + 1`` of
its first ``m`` sites) signed the very same set, so no two sets can both be
revealed for. Which secret it
reveals for a neighbour (self-mask seed for a survivor, mask key otherwise)
follows from that one set, so no two honest sites can be told different stories.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from fedops.core.secagg import graph, shamir
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
    SurvivorSignature,
    UnmaskRequest,
    encoding_digest,
    signed_message,
    survivors_message,
)
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.primitives import (
    DecryptionFailed,
    ProtocolError,
    SecAggCrypto,
    Signer,
    Verifier,
)
from fedops.core.secagg.update import Encoding

KEY_BYTES = 32
SHARE_INFO = b"fedops-secagg share key"
MASK_INFO = b"fedops-secagg pairwise mask"


def pair_info(info: bytes, context: bytes, u: int, v: int) -> bytes:
    """The key-derivation info for the secret sites ``u`` and ``v`` agree (either order).

    The pair is bound in: a site that advertises another's public key as its own (or an
    alias of it: X25519 ignores the top bit, and low-order points multiply out) agrees a
    different secret with each neighbour, so no two of a site's pairwise masks can be
    equal and cancel, which would leave its input under its self mask alone.
    """
    low, high = sorted((u, v))
    return info + context + low.to_bytes(4, "big") + high.to_bytes(4, "big")


def share_aad(context: bytes, source: int, target: int) -> bytes:
    return context + source.to_bytes(4, "big") + target.to_bytes(4, "big")


def mask_sign(own: int, other: int) -> int:
    """+1 if ``own`` adds the pairwise mask it shares with ``other``, -1 if it subtracts."""
    return 1 if own < other else -1


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _stage(expected: int, name: str) -> Callable[[_Method], _Method]:
    """A stage method: it runs only at stage ``expected`` (moving to the next), and any
    error inside it fails the whole session, so nothing half-done is ever answered."""

    def wrap(method: _Method) -> _Method:
        @functools.wraps(method)
        def run(self: SecAggClient, *args: Any, **kwargs: Any) -> Any:
            self._advance(expected, name)
            try:
                return method(self, *args, **kwargs)
            except BaseException as exc:
                self.failed = f"{name}: {exc}"[:300]
                raise

        return cast(_Method, run)

    return wrap


def check_setup(
    setup: Setup, policy: SecAggPolicy | None = None, identity: str = ""
) -> tuple[int, ...]:
    """This client's neighbours, derived here; refuses a setup that breaks the policy."""
    policy = policy or SecAggPolicy()
    n = len(setup.cohort)
    if not 1 <= setup.index <= n:
        raise ProtocolError(f"client index {setup.index} is not in the cohort of {n}")
    if len(set(setup.cohort)) != n or any(not name for name in setup.cohort):
        raise ProtocolError("the cohort names a site twice, or an empty name")
    if identity and setup.cohort[setup.index - 1] != identity:
        raise ProtocolError(
            f"the cohort puts {setup.cohort[setup.index - 1]!r} at this site's index "
            f"{setup.index}; this site is {identity!r}"
        )
    if setup.degree < 1:
        raise ProtocolError(f"degree {setup.degree} is invalid")
    if not 0 <= setup.committee <= n:
        raise ProtocolError(f"a committee of {setup.committee} in a cohort of {n}")
    seed = graph.graph_seed(setup.bound_context())
    mine = graph.neighbourhood(setup.index, n, setup.degree, seed)
    policy.check_round(n, len(mine), setup.threshold)
    return mine


class SecAggClient:
    """Holds one round's keys and shares; call the stage methods in order.

    Args:
        setup: the round as the coordinator proposes it.
        crypto: key agreement, encryption and PRG.
        sign: the site's identity signer, if it has one (consortium mode).
        verify: checks neighbours' signatures; when given, unsigned keys and survivor
            sets are refused.
        identity: the site's name, sent with its keys and checked against the cohort.
        certificate: what vouches for the signing key (its consortium certificate), sent
            with the keys so that neighbours need no list of known keys.
        policy: the site's floors (cohort, degree, threshold, distributed-DP noise).
    """

    def __init__(
        self,
        setup: Setup,
        crypto: SecAggCrypto,
        *,
        sign: Signer | None = None,
        verify: Verifier | None = None,
        identity: str = "",
        certificate: bytes = b"",
        policy: SecAggPolicy | None = None,
    ) -> None:
        self.policy = policy or SecAggPolicy()
        self.neighbours = check_setup(setup, self.policy, identity)
        self.setup = setup
        self.context = setup.bound_context()
        self.crypto = crypto
        self.sign = sign
        self.verify = verify
        self.identity = identity
        self.certificate = certificate
        self.stage = 0
        #: why a stage failed; a failed session answers nothing more (red team 2026-12-07:
        #: a mask that failed after its stage advanced still signed survivor sets, which a
        #: coordinator then gathered across sessions into quorums for two different sets)
        self.failed = ""
        self.survivors: tuple[int, ...] | None = None  # the one set this client signed
        self._encoding: Encoding | None = None  # the round's, from the key request
        self._terms = b""  # what the round's sites train (round_terms), from the key request
        self._dimension = 0  # the update's length, known once it is masked
        self.sealed = b""  # bound context + encoding digest: share AAD, survivor signatures
        self._cipher_sk = b""
        self._mask_sk = b""
        self._seed = b""
        self._keys: dict[int, PublicKeys] = {}
        self._share_keys: dict[int, bytes] = {}
        self._held: dict[int, tuple[bytes, bytes]] = {}  # owner -> (self-mask share, key share)

    def _advance(self, expected: int, name: str) -> None:
        if self.failed:
            raise ProtocolError(
                f"{name}: this round's session failed ({self.failed}); it answers nothing more"
            )
        if self.stage != expected:
            raise ProtocolError(
                f"{name} is stage {expected + 1}, but this client is at stage {self.stage + 1}"
            )
        self.stage = expected + 1

    # -- stage 1 -----------------------------------------------------------
    @_stage(0, "advertising keys")
    def advertise(self, num_examples: int) -> PublicKeys:
        self._cipher_sk, cipher_pk = self.crypto.keypair()
        self._mask_sk, mask_pk = self.crypto.keypair()
        signature = b""
        if self.sign is not None:
            message = signed_message(self.context, self.setup.index, cipher_pk, mask_pk)
            signature = self.sign(message)
        return PublicKeys(
            index=self.setup.index,
            cipher_key=cipher_pk,
            mask_key=mask_pk,
            num_examples=num_examples,
            identity=self.identity,
            signature=signature,
            certificate=self.certificate if signature else b"",
        )

    # -- stage 2 -----------------------------------------------------------
    @_stage(1, "sharing keys")
    def share(self, request: NeighbourKeys) -> ShareKeys:
        own = {self.crypto.public_key(self._cipher_sk), self.crypto.public_key(self._mask_sk)}
        for keys in request.keys:
            self._accept_keys(keys, own)
        t = self.setup.threshold
        if len(self._keys) < t:
            raise ProtocolError(
                f"only {len(self._keys)} neighbours advertised keys; the threshold is {t}"
            )
        if request.encoding is None:
            raise ProtocolError("the key request names no encoding for the round")
        self.policy.check_encoding(request.encoding, len(self.setup.cohort))
        self._encoding = request.encoding
        self._terms = request.terms
        self.sealed = self.context + encoding_digest(request.encoding) + request.terms
        self._seed = self.crypto.random(KEY_BYTES)
        holders = sorted(self._keys)
        seed_shares, key_shares = shamir.split_many(
            [self._seed, self._mask_sk], t, holders, self.crypto.random
        )
        index, shares = self.setup.index, []
        for v in holders:
            key = self.crypto.agree(
                self._cipher_sk,
                self._keys[v].cipher_key,
                pair_info(SHARE_INFO, self.context, index, v),
            )
            self._share_keys[v] = key
            ciphertext = self.crypto.seal(
                key, seed_shares[v] + key_shares[v], share_aad(self.sealed, index, v)
            )
            digests = shamir.share_digest(
                self.context, index, v, b"seed", seed_shares[v]
            ) + shamir.share_digest(self.context, index, v, b"key", key_shares[v])
            shares.append(
                EncryptedShare(source=index, target=v, ciphertext=ciphertext, digests=digests)
            )
        commitment = hashlib.sha256(self.context + self._seed).digest()
        return ShareKeys(shares=tuple(shares), commitment=commitment)

    def _digests_of(self, owner: int, seed_share: bytes, key_share: bytes) -> bytes:
        index = self.setup.index
        return shamir.share_digest(
            self.context, owner, index, b"seed", seed_share
        ) + shamir.share_digest(self.context, owner, index, b"key", key_share)

    def _accept_keys(self, keys: PublicKeys, own: set[bytes]) -> None:
        if keys.index not in self.neighbours:
            raise ProtocolError(f"keys of client {keys.index}, who is not a neighbour")
        if keys.index in self._keys:
            raise ProtocolError(f"two sets of keys for client {keys.index}")
        if {keys.cipher_key, keys.mask_key} & own or keys.cipher_key == keys.mask_key:
            raise ProtocolError(f"client {keys.index} advertises reused keys")
        if len(keys.cipher_key) != KEY_BYTES or len(keys.mask_key) != KEY_BYTES:
            raise ProtocolError(f"client {keys.index} advertises keys of the wrong length")
        if self.verify is not None:
            named = self.setup.cohort[keys.index - 1]
            message = signed_message(self.context, keys.index, keys.cipher_key, keys.mask_key)
            if keys.identity != named or not self._signed(keys, message, keys.signature):
                raise ProtocolError(
                    f"keys of client {keys.index} are not signed by {named!r}, the site the "
                    "cohort names there: refusing to share secrets with them"
                )
        self._keys[keys.index] = keys

    def _signed(self, keys: PublicKeys, message: bytes, signature: bytes) -> bool:
        assert self.verify is not None
        return bool(signature) and self.verify(keys.identity, message, signature, keys.certificate)

    # -- stage 3 -----------------------------------------------------------
    def check_mask_request(self, request: MaskRequest, dimension: int, terms: bytes = b"") -> None:
        """What :meth:`mask` will check of the encoding, before the site trains: a request
        it would refuse must not cost a training round (nor, under local DP, budget)."""
        if self.failed:
            raise ProtocolError(f"this round's session failed ({self.failed})")
        if self.stage != 2:
            raise ProtocolError(
                f"a mask request, but this round's session is at stage {self.stage + 1}"
            )
        if request.encoding != self._encoding:
            raise ProtocolError(
                "the mask request's encoding is not the one this round's shares were sealed "
                "with: refusing to mask"
            )
        self._check_terms(terms)
        self.policy.check_encoding(request.encoding, len(self.setup.cohort), dimension)

    def _check_terms(self, terms: bytes) -> None:
        if terms != self._terms:
            raise ProtocolError(
                "this task's model or training settings are not the ones this round's shares "
                "were sealed with (every site of a round trains the same): refusing to train"
            )

    @_stage(2, "masking the input")
    def mask(
        self, request: MaskRequest, vector: NDArray[np.uint32], terms: bytes = b""
    ) -> MaskedInput:
        """Mask ``vector`` (the encoded update) with the self mask and one mask per neighbour.

        A share that does not decrypt is a complaint: this client does not mask with
        that neighbour, and the server leaves this client's input out of the sum.
        """
        if request.encoding != self._encoding:
            raise ProtocolError(
                "the mask request's encoding is not the one this round's shares were sealed "
                "with: refusing to mask"
            )
        self._check_terms(terms)  # ``vector`` was trained from exactly what was sealed
        # the update's length is known now: the floor is checked with the grid's rounding
        self._dimension = max(int(vector.size) - 1, 0)  # the last word is the weight
        self.policy.check_encoding(self._encoding, len(self.setup.cohort), self._dimension)
        index = self.setup.index
        complaints = []
        for share in request.shares:
            if share.target != index or share.source not in self._share_keys:
                raise ProtocolError(
                    f"share from client {share.source} to {share.target} was routed to "
                    f"client {index}"
                )
            if share.source in self._held or share.source in complaints:
                raise ProtocolError(f"two shares from client {share.source}")
            aad = share_aad(self.sealed, share.source, index)
            try:
                plain = self.crypto.open(self._share_keys[share.source], share.ciphertext, aad)
            except DecryptionFailed:
                complaints.append(share.source)
                continue
            held = (plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :])
            if len(plain) != 2 * shamir.SHARE_BYTES or share.digests != self._digests_of(
                share.source, *held
            ):  # not what its owner vouched for: revealing it would get this site blamed
                complaints.append(share.source)
                continue
            self._held[share.source] = held
        if len(self._held) < self.setup.threshold:
            raise ProtocolError(
                f"only {len(self._held)} neighbours are still in the round; the threshold is "
                f"{self.setup.threshold}"
            )
        if vector.dtype != np.uint32 or vector.ndim != 1:
            raise ProtocolError("the input to mask must be a flat uint32 vector")
        out = vector.copy()
        out += self.crypto.expand(self._seed, out.size)
        for v in sorted(self._held):
            seed = self.crypto.agree(
                self._mask_sk, self._keys[v].mask_key, pair_info(MASK_INFO, self.context, index, v)
            )
            if mask_sign(index, v) > 0:
                out += self.crypto.expand(seed, out.size)
            else:
                out -= self.crypto.expand(seed, out.size)
        return MaskedInput(vector=out, complaints=tuple(sorted(complaints)))

    # -- stage 4 -----------------------------------------------------------
    @_stage(3, "signing the survivor set")
    def sign_survivors(self, request: ConsistencyRequest) -> SurvivorSignature:
        """Sign the survivor set: the only one this client will ever reveal for this round."""
        survivors = self._check_survivors(request.survivors)
        self.survivors = survivors
        signature = b""
        if self.sign is not None:
            signature = self.sign(survivors_message(self.sealed, survivors))
        return SurvivorSignature(signature=signature)

    def _check_survivors(self, survivors: tuple[int, ...]) -> tuple[int, ...]:
        n, index = len(self.setup.cohort), self.setup.index
        if list(survivors) != sorted(set(survivors)) or any(not 1 <= u <= n for u in survivors):
            raise ProtocolError("the survivor set must list distinct cohort indices in order")
        if index not in survivors:
            raise ProtocolError(f"the survivor set leaves out this client ({index})")
        self.policy.check_survivors(len(survivors), self._encoding)
        # a neighbour called a survivor must be one this client masked with: otherwise its
        # pairwise mask is in one input only, and the server could split the sum around it
        strangers = set(survivors) & set(self.neighbours) - set(self._held)
        if strangers:
            raise ProtocolError(
                f"the survivor set names neighbours {sorted(strangers)} whose shares this "
                "client never received"
            )
        return tuple(survivors)

    # -- stage 5 -----------------------------------------------------------
    @_stage(4, "unmasking")
    def unmask(self, request: UnmaskRequest) -> Reveal:
        """Reveal shares for the set this client signed, once a committee quorum signed it."""
        if tuple(request.survivors) != self.survivors:
            raise ProtocolError(
                "the unmask request names another survivor set than the one this client "
                "signed: refusing to reveal (the coordinator shows sites different views)"
            )
        survivors = set(self.survivors)
        if self.verify is not None:
            self._check_quorum(request)
        return Reveal(
            self_mask=tuple((u, self._held[u][0]) for u in sorted(self._held) if u in survivors),
            mask_key=tuple((u, self._held[u][1]) for u in sorted(self._held) if u not in survivors),
        )

    def _check_quorum(self, request: UnmaskRequest) -> None:
        """More than half the committee (plus the colluders) signed this very set."""
        assert self.survivors is not None and self.verify is not None
        m = self.setup.committee_size
        need = self.policy.quorum(m)
        message = survivors_message(self.sealed, self.survivors)
        members, signed = set(self.survivors), set[int]()
        for entry in request.signatures:
            if len(signed) >= need:
                break  # enough: every further check is cost, not safety
            if entry.index in signed or entry.index not in members or entry.index > m:
                continue
            name = self.setup.cohort[entry.index - 1]
            if entry.signature and self.verify(name, message, entry.signature, entry.certificate):
                signed.add(entry.index)
        if len(signed) < need:
            raise ProtocolError(
                f"only {len(signed)} valid committee signatures over this survivor set; this "
                f"site reveals only when {need} of the round's committee of {m} signed the "
                "same set (more than half, plus the colluders it allows)"
            )
