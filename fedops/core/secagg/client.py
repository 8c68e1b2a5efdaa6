"""One client's side of a SecAgg+ round: a state machine over the four stages.

The client protects itself against a curious server: it checks that keys come
from its own neighbours (and are signed, when sites have identities), refuses
to go on with fewer than ``threshold`` neighbours, and in the last stage never
reveals both secrets of the same neighbour, so the server can rebuild either
a survivor's self-mask or a dropped client's mask key, never both.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray

from fedops.core.secagg import shamir
from fedops.core.secagg.messages import (
    EncryptedShare,
    MaskedInput,
    MaskRequest,
    NeighbourKeys,
    PublicKeys,
    Reveal,
    Setup,
    ShareKeys,
    UnmaskRequest,
    signed_message,
)
from fedops.core.secagg.primitives import (
    DecryptionFailed,
    ProtocolError,
    SecAggCrypto,
    Signer,
    Verifier,
)

KEY_BYTES = 32
SHARE_INFO = b"fedops-secagg share key"
MASK_INFO = b"fedops-secagg pairwise mask"


def share_aad(context: bytes, source: int, target: int) -> bytes:
    return context + source.to_bytes(4, "big") + target.to_bytes(4, "big")


def mask_sign(own: int, other: int) -> int:
    """+1 if ``own`` adds the pairwise mask it shares with ``other``, -1 if it subtracts."""
    return 1 if own < other else -1


def check_setup(setup: Setup) -> None:
    k = len(setup.neighbours)
    if setup.index < 1 or setup.index in setup.neighbours:
        raise ProtocolError(f"client index {setup.index} is invalid for this neighbourhood")
    if len(set(setup.neighbours)) != k or any(v < 1 for v in setup.neighbours):
        raise ProtocolError("neighbour indices must be distinct and positive")
    if not (k / 2 < setup.threshold <= k):
        raise ProtocolError(
            f"threshold {setup.threshold} must be above half of the {k} neighbours and at "
            f"most {k}, or the server could learn both secrets of one client"
        )


class SecAggClient:
    """Holds one round's keys and shares; call the stage methods in order.

    Args:
        setup: this client's index, neighbours and threshold.
        crypto: key agreement, encryption and PRG.
        sign: the site's identity signer, if it has one (consortium mode).
        verify: checks neighbours' signatures; when given, unsigned keys are refused.
        identity: the site's name, sent with its keys.
        certificate: what vouches for the signing key (its consortium certificate), sent
            with the keys so that neighbours need no list of known keys.
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
    ) -> None:
        check_setup(setup)
        self.setup = setup
        self.crypto = crypto
        self.sign = sign
        self.verify = verify
        self.identity = identity
        self.certificate = certificate
        self.stage = 0
        self._cipher_sk = b""
        self._mask_sk = b""
        self._seed = b""
        self._keys: dict[int, PublicKeys] = {}
        self._share_keys: dict[int, bytes] = {}
        self._held: dict[int, tuple[bytes, bytes]] = {}  # owner -> (self-mask share, key share)

    def _advance(self, expected: int, name: str) -> None:
        if self.stage != expected:
            raise ProtocolError(
                f"{name} is stage {expected + 1}, but this client is past stage {self.stage}"
            )
        self.stage = expected + 1

    # -- stage 1 -----------------------------------------------------------
    def advertise(self, num_examples: int) -> PublicKeys:
        self._advance(0, "advertising keys")
        self._cipher_sk, cipher_pk = self.crypto.keypair()
        self._mask_sk, mask_pk = self.crypto.keypair()
        signature = b""
        if self.sign is not None:
            message = signed_message(self.setup.context, self.setup.index, cipher_pk, mask_pk)
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
    def share(self, request: NeighbourKeys) -> ShareKeys:
        self._advance(1, "sharing keys")
        setup = self.setup
        neighbours = set(setup.neighbours)
        own = {self.crypto.public_key(self._cipher_sk), self.crypto.public_key(self._mask_sk)}
        identities: set[str] = set()
        for keys in request.keys:
            if keys.index not in neighbours:
                raise ProtocolError(f"keys of client {keys.index}, who is not a neighbour")
            if keys.index in self._keys:
                raise ProtocolError(f"two sets of keys for client {keys.index}")
            if {keys.cipher_key, keys.mask_key} & own or keys.cipher_key == keys.mask_key:
                raise ProtocolError(f"client {keys.index} advertises reused keys")
            if len(keys.cipher_key) != KEY_BYTES or len(keys.mask_key) != KEY_BYTES:
                raise ProtocolError(f"client {keys.index} advertises keys of the wrong length")
            if self.verify is not None:
                message = signed_message(setup.context, keys.index, keys.cipher_key, keys.mask_key)
                if not keys.signature or not self.verify(
                    keys.identity, message, keys.signature, keys.certificate
                ):
                    raise ProtocolError(
                        f"keys of client {keys.index} ({keys.identity or 'no identity'}) are not "
                        "signed by that site: refusing to share secrets with them"
                    )
                if keys.identity in identities:
                    raise ProtocolError(
                        f"site {keys.identity!r} signed keys for two neighbours: refusing to "
                        "share secrets (one site must be one client)"
                    )
                identities.add(keys.identity)
            self._keys[keys.index] = keys
        if len(self._keys) < setup.threshold:
            raise ProtocolError(
                f"only {len(self._keys)} neighbours advertised keys; the threshold is "
                f"{setup.threshold}"
            )
        self._seed = self.crypto.random(KEY_BYTES)
        holders = sorted(self._keys)
        seed_shares = shamir.split(self._seed, setup.threshold, holders, self.crypto.random)
        key_shares = shamir.split(self._mask_sk, setup.threshold, holders, self.crypto.random)
        shares = []
        for v in holders:
            key = self.crypto.agree(
                self._cipher_sk, self._keys[v].cipher_key, SHARE_INFO + setup.context
            )
            self._share_keys[v] = key
            plaintext = seed_shares[v] + key_shares[v]
            aad = share_aad(setup.context, setup.index, v)
            shares.append(
                EncryptedShare(
                    source=setup.index, target=v, ciphertext=self.crypto.seal(key, plaintext, aad)
                )
            )
        commitment = hashlib.sha256(setup.context + self._seed).digest()
        return ShareKeys(shares=tuple(shares), commitment=commitment)

    # -- stage 3 -----------------------------------------------------------
    def mask(self, request: MaskRequest, vector: NDArray[np.uint32]) -> MaskedInput:
        """Mask ``vector`` (the encoded update) with the self mask and one mask per neighbour."""
        self._advance(2, "masking the input")
        setup = self.setup
        complaints = []
        for share in request.shares:
            if share.target != setup.index or share.source not in self._share_keys:
                raise ProtocolError(
                    f"share from client {share.source} to {share.target} was routed to "
                    f"client {setup.index}"
                )
            if share.source in self._held or share.source in complaints:
                raise ProtocolError(f"two shares from client {share.source}")
            aad = share_aad(setup.context, share.source, setup.index)
            try:
                plain = self.crypto.open(self._share_keys[share.source], share.ciphertext, aad)
            except DecryptionFailed:
                complaints.append(share.source)
                continue
            if len(plain) != 2 * shamir.SHARE_BYTES:
                complaints.append(share.source)
                continue
            self._held[share.source] = (plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :])
        if len(self._held) < setup.threshold:
            raise ProtocolError(
                f"only {len(self._held)} neighbours are still in the round; the threshold is "
                f"{setup.threshold}"
            )
        if vector.dtype != np.uint32 or vector.ndim != 1:
            raise ProtocolError("the input to mask must be a flat uint32 vector")
        out = vector.copy()
        out += self.crypto.expand(self._seed, out.size)
        for v in sorted(self._held):
            seed = self.crypto.agree(
                self._mask_sk, self._keys[v].mask_key, MASK_INFO + setup.context
            )
            if mask_sign(setup.index, v) > 0:
                out += self.crypto.expand(seed, out.size)
            else:
                out -= self.crypto.expand(seed, out.size)
        return MaskedInput(vector=out, complaints=tuple(sorted(complaints)))

    # -- stage 4 -----------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> Reveal:
        self._advance(3, "unmasking")
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise ProtocolError(
                f"the server calls clients {sorted(survivors & dropped)} both survivors and "
                "dropped: refusing to reveal both of their secrets"
            )
        unknown = (survivors | dropped) - set(self._held)
        if unknown:
            raise ProtocolError(f"no shares held for clients {sorted(unknown)}")
        if len(survivors) + 1 < self.setup.threshold:
            raise ProtocolError(
                f"only {len(survivors) + 1} clients of this neighbourhood survive; the "
                f"threshold is {self.setup.threshold}"
            )
        return Reveal(
            self_mask=tuple((u, self._held[u][0]) for u in sorted(survivors)),
            mask_key=tuple((u, self._held[u][1]) for u in sorted(dropped)),
        )
