"""The four SecAgg+ round trips, as values. Requests go server → client.

1. :class:`Setup` → :class:`PublicKeys` (advertise keys)
2. :class:`NeighbourKeys` → :class:`ShareKeys` (Shamir shares, encrypted per neighbour)
3. :class:`MaskRequest` → :class:`MaskedInput` (train, quantize, mask)
4. :class:`UnmaskRequest` → :class:`Reveal` (shares that remove the masks)

Clients are numbered ``1 … n`` within a round (Shamir x-coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedops.core.secagg.update import Encoding


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    context: bytes  # binds keys, shares and signatures to one run and round
    index: int
    neighbours: tuple[int, ...]
    threshold: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicKeys:
    index: int
    cipher_key: bytes  # X25519: encrypts Shamir shares between neighbours
    mask_key: bytes  # X25519: agrees the pairwise mask seeds
    num_examples: int  # FedAvg weight (also reported in the clear without SecAgg)
    identity: str = ""  # the site, when sites have signing identities
    signature: bytes = b""  # identity's Ed25519 signature over (context, index, keys)
    certificate: bytes = b""  # what vouches for identity's signing key (consortium mode)


@dataclass(frozen=True, slots=True, kw_only=True)
class NeighbourKeys:
    keys: tuple[PublicKeys, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedShare:
    source: int
    target: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeys:
    shares: tuple[EncryptedShare, ...]
    commitment: bytes  # sha256(context ‖ self-mask seed): the server checks what it rebuilds


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskRequest:
    shares: tuple[EncryptedShare, ...]  # from the neighbours still in the round
    encoding: Encoding


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskedInput:
    vector: NDArray[np.uint32] = field(repr=False)
    complaints: tuple[int, ...] = ()  # neighbours whose shares did not decrypt


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskRequest:
    survivors: tuple[int, ...]  # reveal their self-mask shares
    dropped: tuple[int, ...]  # reveal their mask-key shares


@dataclass(frozen=True, slots=True, kw_only=True)
class Reveal:
    self_mask: tuple[tuple[int, bytes], ...]  # (owner, share of its self-mask seed)
    mask_key: tuple[tuple[int, bytes], ...]  # (owner, share of its mask private key)


Request = Setup | NeighbourKeys | MaskRequest | UnmaskRequest
Reply = PublicKeys | ShareKeys | MaskedInput | Reveal


def signed_message(context: bytes, index: int, cipher_key: bytes, mask_key: bytes) -> bytes:
    """What a site signs so a coordinator cannot substitute its keys."""
    return b"fedops-secagg-keys\x00" + context + index.to_bytes(4, "big") + cipher_key + mask_key
