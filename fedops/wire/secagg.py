"""SecAgg+ messages between their core values and protobuf: the only place that maps them.

Decoding never trusts the peer: out-of-range integers and missing stages
raise :class:`~fedops.core.params.InvalidUpdate` with the reason, which the
coordinator turns into a rejection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedops.core.params import InvalidUpdate, Params
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    EncryptedShare,
    MaskedInput,
    MaskRequest,
    NeighbourKeys,
    PublicKeys,
    Reply,
    Request,
    Reveal,
    Setup,
    ShareKeys,
    SignedSurvivors,
    SurvivorSignature,
    UnmaskRequest,
)
from fedops.core.secagg.quantize import Quantizer
from fedops.core.secagg.update import Encoding
from fedops.v1 import fedops_pb2 as pb

#: the name of the one tensor a masked-input result carries
MASKED_TENSOR = "masked"
#: a signing certificate is about 600 bytes; the coordinator relays each to k neighbours
MAX_CERTIFICATE_BYTES = 8192
#: an Ed25519 signature is 64 bytes
MAX_SIGNATURE_BYTES = 1024
#: sites in one secure-aggregation cohort, and bytes in one site's name
MAX_COHORT = 1 << 20
MAX_NAME_BYTES = 256


def _keys_to(k: PublicKeys) -> pb.SecAggPublicKeys:
    return pb.SecAggPublicKeys(
        index=k.index,
        cipher_key=k.cipher_key,
        mask_key=k.mask_key,
        num_examples=k.num_examples,
        identity=k.identity,
        signature=k.signature,
        certificate=k.certificate,
    )


def _keys_from(m: pb.SecAggPublicKeys) -> PublicKeys:
    if len(m.certificate) > MAX_CERTIFICATE_BYTES:
        raise InvalidUpdate(
            f"secagg keys of client {m.index}: a {len(m.certificate)}-byte certificate "
            f"(at most {MAX_CERTIFICATE_BYTES})"
        )
    return PublicKeys(
        index=m.index,
        cipher_key=m.cipher_key,
        mask_key=m.mask_key,
        num_examples=m.num_examples,
        identity=m.identity,
        signature=m.signature,
        certificate=m.certificate,
    )


def _shares_to(shares: Sequence[EncryptedShare]) -> list[pb.SecAggShare]:
    return [
        pb.SecAggShare(source=s.source, target=s.target, ciphertext=s.ciphertext, digests=s.digests)
        for s in shares
    ]


def _shares_from(shares: Sequence[pb.SecAggShare]) -> tuple[EncryptedShare, ...]:
    return tuple(
        EncryptedShare(source=s.source, target=s.target, ciphertext=s.ciphertext, digests=s.digests)
        for s in shares
    )


def _revealed(pairs: Sequence[tuple[int, bytes]]) -> list[pb.SecAggRevealedShare]:
    return [pb.SecAggRevealedShare(owner=owner, share=share) for owner, share in pairs]


def request_to_proto(request: Request) -> pb.SecAggRequest:
    if isinstance(request, Setup):
        return pb.SecAggRequest(
            setup=pb.SecAggSetup(
                context=request.context,
                index=request.index,
                cohort=request.cohort,
                degree=request.degree,
                threshold=request.threshold,
                committee=request.committee,
            )
        )
    if isinstance(request, NeighbourKeys):
        keys = pb.SecAggNeighbourKeys(keys=[_keys_to(k) for k in request.keys], terms=request.terms)
        if request.encoding is not None:
            q, e = request.encoding.quantizer, request.encoding
            keys.encoding.CopyFrom(
                pb.SecAggEncoding(
                    clip=q.clip,
                    levels=q.levels,
                    max_weight=e.max_weight,
                    l2_clip=e.l2_clip,
                    noise_mu=e.noise_mu,
                    min_survivors=e.min_survivors,
                )
            )
        return pb.SecAggRequest(keys=keys)
    if isinstance(request, MaskRequest):
        q = request.encoding.quantizer
        return pb.SecAggRequest(
            mask=pb.SecAggMaskRequest(
                shares=_shares_to(request.shares),
                clip=q.clip,
                levels=q.levels,
                max_weight=request.encoding.max_weight,
                l2_clip=request.encoding.l2_clip,
                noise_mu=request.encoding.noise_mu,
                min_survivors=request.encoding.min_survivors,
            )
        )
    if isinstance(request, ConsistencyRequest):
        return pb.SecAggRequest(
            consistency=pb.SecAggConsistencyRequest(survivors=request.survivors)
        )
    signatures = [
        pb.SecAggSignedSurvivors(index=s.index, signature=s.signature, certificate=s.certificate)
        for s in request.signatures
    ]
    return pb.SecAggRequest(
        unmask=pb.SecAggUnmaskRequest(survivors=request.survivors, signatures=signatures)
    )


def _encoding_from(m: pb.SecAggEncoding | pb.SecAggMaskRequest, where: str) -> Encoding:
    try:
        return Encoding(
            quantizer=Quantizer(clip=m.clip, levels=m.levels),
            max_weight=m.max_weight,
            l2_clip=m.l2_clip,
            noise_mu=m.noise_mu,
            min_survivors=m.min_survivors,
        )
    except ValueError as exc:
        raise InvalidUpdate(f"secagg {where}: {exc}") from exc


def request_from_proto(message: pb.SecAggRequest) -> Request:
    stage = message.WhichOneof("stage")
    if stage == "setup":
        s = message.setup
        if len(s.cohort) > MAX_COHORT or any(len(n.encode()) > MAX_NAME_BYTES for n in s.cohort):
            raise InvalidUpdate(
                f"secagg setup: at most {MAX_COHORT} sites of names up to {MAX_NAME_BYTES} bytes"
            )
        return Setup(
            context=s.context,
            index=s.index,
            cohort=tuple(s.cohort),
            degree=s.degree,
            threshold=s.threshold,
            committee=s.committee,
        )
    if stage == "keys":
        k = message.keys
        encoding = _encoding_from(k.encoding, "key request") if k.HasField("encoding") else None
        return NeighbourKeys(
            keys=tuple(_keys_from(x) for x in k.keys), encoding=encoding, terms=k.terms[:64]
        )
    if stage == "mask":
        m = message.mask
        return MaskRequest(
            shares=_shares_from(m.shares), encoding=_encoding_from(m, "mask request")
        )
    if stage == "consistency":
        return ConsistencyRequest(survivors=tuple(message.consistency.survivors))
    if stage == "unmask":
        u = message.unmask
        if any(
            len(s.signature) > MAX_SIGNATURE_BYTES or len(s.certificate) > MAX_CERTIFICATE_BYTES
            for s in u.signatures
        ):
            raise InvalidUpdate(
                f"secagg unmask: signatures of at most {MAX_SIGNATURE_BYTES} bytes, "
                f"certificates of at most {MAX_CERTIFICATE_BYTES}"
            )
        return UnmaskRequest(
            survivors=tuple(u.survivors),
            signatures=tuple(
                SignedSurvivors(index=s.index, signature=s.signature, certificate=s.certificate)
                for s in u.signatures
            ),
        )
    raise InvalidUpdate("secagg task names no stage")


def reply_to_proto(reply: Reply) -> tuple[pb.SecAggReply, Params]:
    """The reply header, and the arrays that travel as the payload (masked input only)."""
    if isinstance(reply, PublicKeys):
        return pb.SecAggReply(keys=_keys_to(reply)), {}
    if isinstance(reply, ShareKeys):
        shares = pb.SecAggShareKeys(shares=_shares_to(reply.shares), commitment=reply.commitment)
        return pb.SecAggReply(shares=shares), {}
    if isinstance(reply, MaskedInput):
        masked = pb.SecAggMasked(complaints=reply.complaints)
        return pb.SecAggReply(masked=masked), {MASKED_TENSOR: reply.vector}
    if isinstance(reply, SurvivorSignature):
        return pb.SecAggReply(signature=pb.SecAggSurvivorSignature(signature=reply.signature)), {}
    reveal = pb.SecAggReveal(
        self_mask=_revealed(reply.self_mask), mask_key=_revealed(reply.mask_key)
    )
    return pb.SecAggReply(reveal=reveal), {}


def reply_from_proto(message: pb.SecAggReply, payload: Params) -> Reply:
    stage = message.WhichOneof("stage")
    if stage != "masked" and payload:
        raise InvalidUpdate(f"a secagg {stage or 'empty'} reply carries no arrays")
    if stage == "keys":
        return _keys_from(message.keys)
    if stage == "shares":
        return ShareKeys(
            shares=_shares_from(message.shares.shares), commitment=message.shares.commitment
        )
    if stage == "masked":
        vector = payload.get(MASKED_TENSOR)
        if vector is None or vector.dtype != np.uint32 or vector.ndim != 1:
            raise InvalidUpdate(f"a masked input is one flat uint32 tensor {MASKED_TENSOR!r}")
        return MaskedInput(vector=vector, complaints=tuple(message.masked.complaints))
    if stage == "signature":
        if len(message.signature.signature) > MAX_SIGNATURE_BYTES:
            raise InvalidUpdate(f"a survivor-set signature is at most {MAX_SIGNATURE_BYTES} bytes")
        return SurvivorSignature(signature=message.signature.signature)
    if stage == "reveal":
        r = message.reveal
        return Reveal(
            self_mask=tuple((s.owner, s.share) for s in r.self_mask),
            mask_key=tuple((s.owner, s.share) for s in r.mask_key),
        )
    raise InvalidUpdate("secagg reply names no stage")
