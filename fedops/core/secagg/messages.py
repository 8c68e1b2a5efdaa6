"""The five SecAgg+ round trips, as values. Requests go server → client.

1. :class:`Setup` → :class:`PublicKeys` (advertise keys)
2. :class:`NeighbourKeys` → :class:`ShareKeys` (the round's encoding; Shamir shares,
   encrypted per neighbour)
3. :class:`MaskRequest` → :class:`MaskedInput` (train, quantize, mask; the same encoding)
4. :class:`ConsistencyRequest` → :class:`SurvivorSignature` (sign the one survivor set)
5. :class:`UnmaskRequest` → :class:`Reveal` (shares that remove the masks)

Clients are numbered ``1 … n`` within a round (Shamir x-coordinates); client
``i`` is the site ``Setup.cohort[i - 1]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedops.core.secagg.update import Encoding
from fedops.core.train_settings import TrainSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """The round as the coordinator proposes it; every site derives the same graph from it."""

    context: bytes  # the run and round
    index: int
    cohort: tuple[str, ...]  # the sites taking part, by index (client i is cohort[i - 1])
    degree: int  # requested neighbours per client (the graph rounds it up to even)
    threshold: int
    committee: int = 0  # the first m sites, whose survivor-set signatures count; 0: all

    @property
    def committee_size(self) -> int:
        return self.committee or len(self.cohort)

    def bound_context(self) -> bytes:
        """What every key, share and signature of the round is bound to (see :func:`bind`)."""
        return bind(self.context, self.cohort, self.degree, self.threshold, self.committee_size)


def round_context(run_id: str, server_round: int) -> bytes:
    """The context of one round of one run; a site refuses a setup naming any other."""
    return f"{run_id}:{server_round}".encode()


def bind(
    context: bytes, cohort: tuple[str, ...], degree: int, threshold: int, committee: int = 0
) -> bytes:
    """A digest of the run, round, cohort and parameters.

    Keys are signed over it and shares are encrypted with it as associated data,
    so a coordinator that shows two sites different cohorts or parameters makes
    their keys unverifiable to each other: one round, one view of who is in it.
    """
    h = hashlib.sha256(b"fedops-secagg-round\x00")
    for part in (context, *(name.encode() for name in cohort)):
        h.update(len(part).to_bytes(8, "big") + part)
    h.update(len(cohort).to_bytes(8, "big") + degree.to_bytes(8, "big", signed=True))
    h.update(threshold.to_bytes(8, "big", signed=True))
    h.update((committee or len(cohort)).to_bytes(8, "big", signed=True))
    return h.digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicKeys:
    index: int
    cipher_key: bytes  # X25519: encrypts Shamir shares between neighbours
    mask_key: bytes  # X25519: agrees the pairwise mask seeds
    num_examples: int  # FedAvg weight: for the coordinator only (zeroed when relayed)
    identity: str = ""  # the site, when sites have signing identities
    signature: bytes = b""  # identity's Ed25519 signature over (context, index, keys)
    certificate: bytes = b""  # what vouches for identity's signing key (consortium mode)


@dataclass(frozen=True, slots=True, kw_only=True)
class NeighbourKeys:
    keys: tuple[PublicKeys, ...]
    # the round's one encoding, fixed before any secret is shared: sealed into every share
    # (associated data) and every survivor-set signature, so sites told different encodings
    # can neither decrypt each other's shares nor count each other's signatures
    encoding: Encoding | None = None
    #: what every site of the round trains (:func:`round_terms`), sealed the same way: a
    #: site masks only an update trained from exactly that
    terms: bytes = b""


def round_terms(
    model_digest: str, train: TrainSettings | None, config: Mapping[str, float]
) -> bytes:
    """What a round's sites train: the model (its digest), the training settings and the
    training config, hashed.

    Sealed into the round with the encoding, so every honest site that signs a survivor
    set trained the same thing. Otherwise a coordinator could give every site but one a
    learning rate of 1e-30 (or a model whose gradients vanish): their updates are zero,
    every check of the protocol passes, and the unmasked sum is one site's update (red
    team 2026-12-07; the model-inconsistency attack of Pasquini et al. 2022).
    """
    settings = None
    if train is not None:
        settings = [
            int(train.epochs),
            int(train.batch_size),
            float(train.lr).hex(),
            str(train.optimizer),
            float(train.momentum).hex(),
        ]
    # JSON, not joined text: a config key holding a separator must not make two different
    # configs hash alike
    terms = {
        "model": model_digest,
        "train": settings,
        "config": sorted([str(k), float(v).hex()] for k, v in config.items()),
    }
    return hashlib.sha256(json.dumps(terms, separators=(",", ":")).encode()).digest()


def encoding_digest(encoding: Encoding) -> bytes:
    """Every parameter of an encoding, hashed: what shares and signatures are sealed with."""
    q = encoding.quantizer
    fields = (
        float(q.clip).hex(),
        str(q.levels),
        str(encoding.max_weight),
        float(encoding.l2_clip).hex(),
        float(encoding.noise_mu).hex(),
        str(encoding.min_survivors),
    )
    return hashlib.sha256(b"fedops-secagg-encoding\x00" + "|".join(fields).encode()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedShare:
    source: int
    target: int
    ciphertext: bytes
    #: the owner's digests of the two shares inside (:func:`share_digests`): the holder checks
    #: what it decrypts against them, the server checks what the holder reveals
    digests: bytes


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
class ConsistencyRequest:
    survivors: tuple[int, ...]  # every client whose masked input is in the sum


@dataclass(frozen=True, slots=True, kw_only=True)
class SurvivorSignature:
    signature: bytes  # over (bound context, survivors); empty for a site without identity


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedSurvivors:
    """One survivor's signature over the set, with what vouches for its key."""

    index: int
    signature: bytes
    certificate: bytes = b""  # the signer's signing certificate (consortium mode)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskRequest:
    """The survivor set again, with the signatures the survivors made over it.

    The client reveals self-mask shares of the survivors it holds shares of and
    mask-key shares of the others it holds shares of: which is which follows
    from ``survivors`` alone, never from a per-client list the server could vary.
    """

    survivors: tuple[int, ...]
    signatures: tuple[SignedSurvivors, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reveal:
    self_mask: tuple[tuple[int, bytes], ...]  # (owner, share of its self-mask seed)
    mask_key: tuple[tuple[int, bytes], ...]  # (owner, share of its mask private key)


Request = Setup | NeighbourKeys | MaskRequest | ConsistencyRequest | UnmaskRequest
Reply = PublicKeys | ShareKeys | MaskedInput | SurvivorSignature | Reveal


def signed_message(context: bytes, index: int, cipher_key: bytes, mask_key: bytes) -> bytes:
    """What a site signs so a coordinator cannot substitute its keys (``context``: bound)."""
    return b"fedops-secagg-keys\x00" + context + index.to_bytes(4, "big") + cipher_key + mask_key


def survivors_message(context: bytes, survivors: tuple[int, ...]) -> bytes:
    """What a site signs in the consistency check: the one survivor set of the round."""
    digest = hashlib.sha256(b"".join(i.to_bytes(4, "big") for i in sorted(survivors))).digest()
    return b"fedops-secagg-survivors\x00" + context + len(survivors).to_bytes(4, "big") + digest
