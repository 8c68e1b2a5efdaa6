"""Hand framing produces and reads exactly protobuf's bytes for a lone data field."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.v1 import fedops_pb2 as pb
from fedops.wire.framing import frame_data, unframe_data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=70_000))
def test_frame_is_protobufs_serialization_and_unframes_back(chunk: bytes):
    framed = frame_data(chunk)
    assert framed == pb.PushResultRequest(data=chunk).SerializeToString()
    assert framed == pb.ModelChunk(data=chunk).SerializeToString()
    view = unframe_data(framed)
    assert view is not None and bytes(view) == chunk
    assert pb.PushResultRequest.FromString(framed).data == chunk


def test_anything_but_a_lone_data_field_falls_back_to_the_parser():
    header = pb.PushResultRequest(header=pb.ResultHeader(node_id="n")).SerializeToString()
    assert unframe_data(header) is None
    assert unframe_data(b"") is None
    assert unframe_data(b"\x12\x05ab") is None  # declared 5 bytes, has 2
    assert unframe_data(frame_data(b"abc") + b"\x08\x01") is None  # a trailing field
    assert unframe_data(b"\x12" + b"\xff" * 11) is None  # runaway varint


def test_framed_chunks_are_the_protobuf_messages_of_the_plain_chunks():
    import numpy as np

    from fedops.wire.codec import iter_chunks

    params = {"a": np.arange(1000, dtype=np.float32), "b": np.ones((7, 3), np.int64)}
    plain = list(iter_chunks(params, 777))
    framed = list(iter_chunks(params, 777, framed=True))
    assert framed == [pb.PushResultRequest(data=c).SerializeToString() for c in plain]
