"""Unit tests for fedops.wire.secagg: SecAgg+ messages to protobuf and back.

Every request and reply survives encoding, serialization to bytes and
decoding unchanged (the masked vector also crosses the chunked payload
codec, as it does on the wire). Decoding refuses what a peer must not send
with :class:`InvalidUpdate` and a reason, both in the codec and in the
coordinator's intake of a stage result.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.coordinator.intake import read_result
from fedops.core.params import InvalidUpdate, TensorSpec, specs_of, total_bytes
from fedops.core.results import StageResult
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
)
from fedops.core.secagg.quantize import MODULUS, Quantizer
from fedops.core.secagg.update import Encoding
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec
from fedops.wire.secagg import (
    MASKED_TENSOR,
    MAX_CERTIFICATE_BYTES,
    MAX_COHORT,
    MAX_NAME_BYTES,
    MAX_SIGNATURE_BYTES,
    reply_from_proto,
    reply_to_proto,
    request_from_proto,
    request_to_proto,
)

INT32_MAX = (1 << 31) - 1


# -- helpers ------------------------------------------------------------------------------
def _over_the_wire_request(request):
    message = request_to_proto(request)
    assert isinstance(message, pb.SecAggRequest)
    data = message.SerializeToString()
    # inside a task, as the agent pulls it
    task = pb.Task.FromString(pb.Task(kind=pb.TASK_KIND_SECAGG, secagg=message).SerializeToString())
    assert task.secagg == pb.SecAggRequest.FromString(data)
    return request_from_proto(pb.SecAggRequest.FromString(data))


def _over_the_wire_reply(reply, *, chunk_bytes: int = 7):
    """Header through bytes; payload through the chunked tensor codec, like an upload."""
    message, payload = reply_to_proto(reply)
    assert isinstance(message, pb.SecAggReply)
    header = pb.ResultHeader(
        kind=pb.TASK_KIND_SECAGG,
        tensors=codec.specs_to_proto(specs_of(payload)),
        total_bytes=total_bytes(specs_of(payload)),
    )
    header.secagg.CopyFrom(message)
    header = pb.ResultHeader.FromString(header.SerializeToString())
    specs = codec.specs_from_proto(header.tensors)
    assembler = codec.Assembler(specs, max_bytes=total_bytes(specs))
    for chunk in codec.iter_chunks(payload, chunk_bytes):
        assembler.add(chunk)
    return reply_from_proto(header.secagg, assembler.finish())


def _share(source: int, target: int, size: int = 60) -> EncryptedShare:
    rng = np.random.default_rng([source, target])
    return EncryptedShare(
        source=source, target=target, ciphertext=rng.bytes(size), digests=rng.bytes(32)
    )


def _keys(index: int, **kw) -> PublicKeys:
    rng = np.random.default_rng(index)
    return PublicKeys(
        index=index,
        cipher_key=rng.bytes(32),
        mask_key=rng.bytes(32),
        num_examples=kw.pop("num_examples", 100 + index),
        **kw,
    )


ENCODING = Encoding(quantizer=Quantizer.for_summands(4.0, 7), max_weight=1234)

REQUESTS = {
    "setup": Setup(
        context=b"run-1:3\x00\xff",
        index=2,
        cohort=("hospital-a", "hospital-ä", "lab 3"),
        degree=4,
        threshold=3,
    ),
    "setup-large-indices": Setup(
        context=b"", index=INT32_MAX, cohort=("x",), degree=INT32_MAX, threshold=2
    ),
    "setup-negative": Setup(context=b"", index=-1, cohort=(), degree=-3, threshold=-2),
    "keys": NeighbourKeys(
        keys=(
            _keys(1),
            _keys(3, identity="hospital-ä", signature=b"\x01" * 64),
            _keys(5, num_examples=(1 << 40)),
        )
    ),
    "keys-none": NeighbourKeys(keys=()),
    "mask": MaskRequest(shares=(_share(1, 2), _share(3, 2), _share(9, 2, 0)), encoding=ENCODING),
    "mask-no-shares": MaskRequest(
        shares=(),
        encoding=Encoding(
            quantizer=Quantizer(clip=1e-3, levels=MODULUS - 1), max_weight=MODULUS - 1
        ),
    ),
    "consistency": ConsistencyRequest(survivors=(1, 3, 4, INT32_MAX)),
    "consistency-empty": ConsistencyRequest(survivors=()),
    "unmask": UnmaskRequest(
        survivors=(1, 3, 4),
        signatures=(
            SignedSurvivors(index=1, signature=b"\x01" * 64, certificate=b"-----BEGIN"),
            SignedSurvivors(index=4, signature=b"\x04" * 64),
        ),
    ),
    "unmask-unsigned": UnmaskRequest(
        survivors=(1,), signatures=(SignedSurvivors(index=3, signature=b""),)
    ),
    "unmask-nothing": UnmaskRequest(survivors=(), signatures=()),
}

REPLIES = {
    "keys": _keys(4, identity="site-4", signature=b"sig"),
    "keys-unsigned": _keys(1),
    "shares": ShareKeys(shares=tuple(_share(2, t) for t in (1, 3, 5)), commitment=bytes(range(32))),
    "shares-empty": ShareKeys(shares=(), commitment=b""),
    "reveal": Reveal(
        self_mask=((1, b"\x02" * 66), (3, b"\x03" * 66)), mask_key=((5, b"\x05" * 66),)
    ),
    "reveal-empty": Reveal(self_mask=(), mask_key=()),
    "signature": SurvivorSignature(signature=bytes(range(64))),
    "signature-empty": SurvivorSignature(signature=b""),
}


# -- round trips --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_every_request_round_trips(name: str):
    request = REQUESTS[name]
    back = _over_the_wire_request(request)
    assert type(back) is type(request)
    assert back == request


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_every_plain_reply_round_trips_without_a_payload(name: str):
    reply = REPLIES[name]
    message, payload = reply_to_proto(reply)
    assert payload == {}
    back = reply_from_proto(pb.SecAggReply.FromString(message.SerializeToString()), {})
    assert type(back) is type(reply)
    assert back == reply
    assert _over_the_wire_reply(reply) == reply


@pytest.mark.parametrize("complaints", [(), (3,), (1, 4, 9)])
def test_masked_input_round_trips_as_one_uint32_tensor(complaints: tuple[int, ...]):
    rng = np.random.default_rng(0)
    vector = rng.integers(0, MODULUS, size=651, dtype=np.uint32)
    vector[:3] = [0, MODULUS - 1, 1 << 31]  # the extremes of Z_2^32
    reply = MaskedInput(vector=vector, complaints=complaints)
    message, payload = reply_to_proto(reply)
    assert list(payload) == [MASKED_TENSOR]
    assert payload[MASKED_TENSOR].dtype == np.uint32
    assert message.WhichOneof("stage") == "masked"
    back = _over_the_wire_reply(reply)
    assert isinstance(back, MaskedInput)
    assert back.complaints == complaints
    assert back.vector.dtype == np.uint32 and back.vector.shape == (651,)
    np.testing.assert_array_equal(back.vector, vector)


def test_masked_input_survives_a_big_endian_sender():
    vector = np.arange(10, dtype=">u4") * 0x01020304
    message, _ = reply_to_proto(MaskedInput(vector=np.arange(1, dtype=np.uint32)))
    payload = {MASKED_TENSOR: vector}
    specs = specs_of({MASKED_TENSOR: vector.astype(np.uint32)})
    assembler = codec.Assembler(specs, max_bytes=total_bytes(specs))
    for chunk in codec.iter_chunks(payload, 16):  # sent little-endian whatever the host
        assembler.add(chunk)
    back = reply_from_proto(message, assembler.finish())
    np.testing.assert_array_equal(back.vector, vector.astype(np.uint32))


_ints = st.integers(1, INT32_MAX)
_bytes = st.binary(max_size=80)
_share_st = st.builds(EncryptedShare, source=_ints, target=_ints, ciphertext=_bytes)
_keys_st = st.builds(
    PublicKeys,
    index=_ints,
    cipher_key=_bytes,
    mask_key=_bytes,
    num_examples=st.integers(0, (1 << 63) - 1),
    identity=st.text(max_size=20),
    signature=_bytes,
)
_index_tuple = st.lists(_ints, max_size=12).map(tuple)
_names = st.lists(st.text(max_size=12), max_size=6).map(tuple)
_signatures = st.lists(
    st.builds(SignedSurvivors, index=_ints, signature=_bytes, certificate=_bytes), max_size=5
).map(tuple)
_encoding_st = st.builds(
    Encoding,
    quantizer=st.builds(
        Quantizer,
        clip=st.floats(1e-12, 1e12, allow_nan=False),
        levels=st.integers(1, MODULUS - 1),
    ),
    max_weight=st.integers(1, MODULUS - 1),
)
_request_st = st.one_of(
    st.builds(Setup, context=_bytes, index=_ints, cohort=_names, degree=_ints, threshold=_ints),
    st.builds(NeighbourKeys, keys=st.lists(_keys_st, max_size=5).map(tuple)),
    st.builds(
        MaskRequest, shares=st.lists(_share_st, max_size=5).map(tuple), encoding=_encoding_st
    ),
    st.builds(ConsistencyRequest, survivors=_index_tuple),
    st.builds(UnmaskRequest, survivors=_index_tuple, signatures=_signatures),
)
_revealed = st.lists(st.tuples(_ints, _bytes), max_size=5).map(tuple)
_reply_st = st.one_of(
    _keys_st,
    st.builds(ShareKeys, shares=st.lists(_share_st, max_size=5).map(tuple), commitment=_bytes),
    st.builds(Reveal, self_mask=_revealed, mask_key=_revealed),
    st.builds(SurvivorSignature, signature=_bytes),
)


@settings(max_examples=150, deadline=None)
@given(_request_st)
def test_any_request_round_trips(request):
    assert _over_the_wire_request(request) == request


@settings(max_examples=150, deadline=None)
@given(_reply_st)
def test_any_plain_reply_round_trips(reply):
    assert _over_the_wire_reply(reply) == reply


# -- refusals -----------------------------------------------------------------------------
def _invalid(fn, *args) -> str:
    with pytest.raises(InvalidUpdate) as info:
        fn(*args)
    message = str(info.value)
    assert message.strip(), "an InvalidUpdate must say why"
    return message


def test_reply_with_no_stage_is_refused():
    assert "no stage" in _invalid(reply_from_proto, pb.SecAggReply(), {})
    empty = pb.SecAggReply.FromString(b"")
    assert "no stage" in _invalid(reply_from_proto, empty, {})


def test_reply_with_no_stage_but_a_payload_is_refused():
    payload = {MASKED_TENSOR: np.zeros(4, np.uint32)}
    assert "no arrays" in _invalid(reply_from_proto, pb.SecAggReply(), payload)


def test_request_with_no_stage_is_refused():
    assert "no stage" in _invalid(request_from_proto, pb.SecAggRequest())


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"other": np.zeros(4, np.uint32)},
        {MASKED_TENSOR: np.zeros(4, np.float32)},
        {MASKED_TENSOR: np.zeros(4, np.float64)},
        {MASKED_TENSOR: np.zeros(4, np.int32)},
        {MASKED_TENSOR: np.zeros(4, np.uint8)},
        {MASKED_TENSOR: np.zeros((2, 2), np.uint32)},
        {MASKED_TENSOR: np.zeros((), np.uint32)},
    ],
    ids=["missing", "misnamed", "float32", "float64", "int32", "uint8", "2-d", "0-d"],
)
def test_masked_reply_needs_one_flat_uint32_tensor(payload):
    message = pb.SecAggReply(masked=pb.SecAggMasked())
    assert MASKED_TENSOR in _invalid(reply_from_proto, message, payload)


@pytest.mark.parametrize(
    "message",
    [
        pb.SecAggReply(keys=pb.SecAggPublicKeys(index=1)),
        pb.SecAggReply(shares=pb.SecAggShareKeys()),
        pb.SecAggReply(reveal=pb.SecAggReveal()),
        pb.SecAggReply(signature=pb.SecAggSurvivorSignature()),
    ],
    ids=["keys", "shares", "reveal", "signature"],
)
@pytest.mark.parametrize(
    "payload",
    [{MASKED_TENSOR: np.zeros(3, np.uint32)}, {"fc.weight": np.ones((2, 2), np.float32)}],
    ids=["masked-vector", "float-params"],
)
def test_non_masked_reply_with_a_payload_is_refused(message, payload):
    stage = message.WhichOneof("stage")
    reason = _invalid(reply_from_proto, message, payload)
    assert stage in reason and "no arrays" in reason


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"clip": 1.0, "levels": 0, "max_weight": 10}, "levels"),
        ({"clip": 1.0, "levels": -5, "max_weight": 10}, "levels"),
        ({"clip": 1.0, "levels": MODULUS, "max_weight": 10}, "levels"),
        ({"clip": 0.0, "levels": 100, "max_weight": 10}, "clip"),
        ({"clip": -1.0, "levels": 100, "max_weight": 10}, "clip"),
        ({"clip": float("nan"), "levels": 100, "max_weight": 10}, "clip"),
        ({"clip": float("inf"), "levels": 100, "max_weight": 10}, "clip"),
        ({"clip": 1.0, "levels": 100, "max_weight": 0}, "max_weight"),
        ({"clip": 1.0, "levels": 100, "max_weight": MODULUS}, "max_weight"),
    ],
)
def test_mask_request_with_an_unusable_encoding_is_refused(fields, word):
    message = pb.SecAggRequest(mask=pb.SecAggMaskRequest(**fields))
    message = pb.SecAggRequest.FromString(message.SerializeToString())
    reason = _invalid(request_from_proto, message)
    assert reason.startswith("secagg mask request: ") and word in reason


def test_a_setup_with_too_large_a_cohort_is_refused():
    names = pb.SecAggRequest(setup=pb.SecAggSetup(cohort=["a", "b" * (MAX_NAME_BYTES + 1)]))
    assert "names up to" in _invalid(request_from_proto, names)
    ok = pb.SecAggRequest(setup=pb.SecAggSetup(cohort=["a", "é" * (MAX_NAME_BYTES // 2)]))
    assert request_from_proto(ok).cohort == ("a", "é" * (MAX_NAME_BYTES // 2))
    wide = pb.SecAggRequest(setup=pb.SecAggSetup(cohort=["s"] * (MAX_COHORT + 1)))
    assert f"at most {MAX_COHORT} sites" in _invalid(request_from_proto, wide)


def test_oversized_survivor_set_signatures_and_certificates_are_refused():
    big = b"s" * (MAX_SIGNATURE_BYTES + 1)
    fine = b"s" * MAX_SIGNATURE_BYTES
    reply = pb.SecAggReply(signature=pb.SecAggSurvivorSignature(signature=big))
    assert "at most" in _invalid(reply_from_proto, reply, {})
    reply = pb.SecAggReply(signature=pb.SecAggSurvivorSignature(signature=fine))
    assert reply_from_proto(reply, {}) == SurvivorSignature(signature=fine)
    cert, big_cert = b"c" * MAX_CERTIFICATE_BYTES, b"c" * (MAX_CERTIFICATE_BYTES + 1)
    for signature, certificate, ok in (
        (fine, cert, True),
        (big, b"", False),
        (fine, big_cert, False),
    ):
        relayed = pb.SecAggSignedSurvivors(index=2, signature=signature, certificate=certificate)
        message = pb.SecAggRequest(
            unmask=pb.SecAggUnmaskRequest(survivors=[1], signatures=[relayed])
        )
        if ok:
            (entry,) = request_from_proto(message).signatures
            assert entry == SignedSurvivors(index=2, signature=fine, certificate=cert)
        else:
            reason = _invalid(request_from_proto, message)
            assert f"signatures of at most {MAX_SIGNATURE_BYTES} bytes" in reason


def test_the_retired_fields_are_not_read():
    """``neighbours`` (setup) and ``dropped`` (unmask) are reserved: the bytes an old
    coordinator sends for them are skipped, never taken as the new fields."""
    old_setup = pb.SecAggSetup(index=1, threshold=2).SerializeToString() + bytes([0x1A, 2, 5, 6])
    setup = request_from_proto(pb.SecAggRequest(setup=pb.SecAggSetup.FromString(old_setup)))
    assert setup == Setup(context=b"", index=1, cohort=(), degree=0, threshold=2)
    old_unmask = pb.SecAggUnmaskRequest(survivors=[1]).SerializeToString() + bytes([0x12, 1, 7])
    unmask = request_from_proto(
        pb.SecAggRequest(unmask=pb.SecAggUnmaskRequest.FromString(old_unmask))
    )
    assert unmask == UnmaskRequest(survivors=(1,), signatures=())


# -- the coordinator's intake of a stage result ---------------------------------------------
def _stage_header(reply, payload) -> pb.ResultHeader:
    message, _ = reply_to_proto(reply)
    header = pb.ResultHeader(
        node_id="n1",
        kind=pb.TASK_KIND_SECAGG,
        num_examples=5,
        metrics={"train_loss": 0.5},
        tensors=codec.specs_to_proto(specs_of(payload)),
        total_bytes=total_bytes(specs_of(payload)),
    )
    header.secagg.CopyFrom(message)
    return header


def _chunks(payload):
    return iter(list(codec.iter_chunks(payload, 64)))


MASKED_SPEC = (TensorSpec(name=MASKED_TENSOR, dtype="uint32", shape=(16,)),)


def test_intake_reads_a_masked_stage_result():
    vector = np.arange(16, dtype=np.uint32) * 0x10001
    payload = {MASKED_TENSOR: vector}
    reply = MaskedInput(vector=vector, complaints=(2,))
    result = read_result(
        _stage_header(reply, payload), pb.TASK_KIND_SECAGG, MASKED_SPEC, _chunks(payload)
    )
    assert isinstance(result, StageResult)
    assert (result.node_id, result.num_examples, dict(result.metrics)) == (
        "n1",
        5,
        {"train_loss": 0.5},
    )
    assert isinstance(result.reply, MaskedInput) and result.reply.complaints == (2,)
    np.testing.assert_array_equal(result.reply.vector, vector)


def test_intake_reads_a_key_stage_result_without_payload():
    reply = REPLIES["keys"]
    result = read_result(_stage_header(reply, {}), pb.TASK_KIND_SECAGG, (), iter(()))
    assert isinstance(result, StageResult) and result.reply == reply


@pytest.mark.parametrize(
    "payload",
    [
        {MASKED_TENSOR: np.zeros(16, np.float32)},
        {MASKED_TENSOR: np.zeros(17, np.uint32)},
        {"fc.weight": np.zeros(16, np.float32)},
    ],
    ids=["float", "wrong-length", "model-params"],
)
def test_intake_refuses_a_masked_result_that_is_not_the_uint32_vector(payload):
    reply = MaskedInput(vector=np.zeros(16, np.uint32))
    header = _stage_header(reply, payload)
    _invalid(read_result, header, pb.TASK_KIND_SECAGG, MASKED_SPEC, _chunks(payload))


def test_intake_refuses_parameters_smuggled_into_a_key_stage():
    params = {"fc.weight": np.ones(8, np.float32)}
    header = _stage_header(REPLIES["keys"], params)
    _invalid(read_result, header, pb.TASK_KIND_SECAGG, (), _chunks(params))
    # undeclared bytes after a header that declares no tensors
    header = _stage_header(REPLIES["keys"], {})
    reason = _invalid(read_result, header, pb.TASK_KIND_SECAGG, (), iter([b"\x00" * 8]))
    assert "no payload" in reason


def test_intake_refuses_a_stage_result_with_a_bad_example_count():
    header = _stage_header(REPLIES["shares"], {})
    header.num_examples = -1
    assert "num_examples" in _invalid(read_result, header, pb.TASK_KIND_SECAGG, (), iter(()))
