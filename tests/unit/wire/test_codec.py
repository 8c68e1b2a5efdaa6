"""Unit tests for fedops.wire.codec: chunking, reassembly and spec validation."""

from __future__ import annotations

import os
import re
import threading
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedops.core.params import (
    ALLOWED_DTYPES,
    InvalidUpdate,
    TensorSpec,
    digest,
    specs_of,
    total_bytes,
)
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec
from fedops.wire.codec import (
    Assembler,
    decode,
    iter_chunks,
    payload_hasher,
    specs_from_proto,
    specs_to_proto,
)

# --- hypothesis strategies --------------------------------------------------------------------


@st.composite
def _array(draw):
    name = draw(st.sampled_from(sorted(ALLOWED_DTYPES)))
    dtype = np.dtype(name)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(draw(st.sampled_from(["<", ">", "="])))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    return draw(hnp.arrays(dtype, shape))


_params = st.dictionaries(st.text(min_size=1, max_size=10), _array(), min_size=0, max_size=5)
_chunk = st.integers(1, 64) | st.integers(65, 1 << 16)


def _native_bytes(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")).tobytes()


def _assemble(params, chunk_bytes: int, max_bytes: int | None = None):
    specs = specs_of(params)
    asm = Assembler(specs, max_bytes=total_bytes(specs) if max_bytes is None else max_bytes)
    for chunk in iter_chunks(params, chunk_bytes):
        asm.add(chunk)
    return asm


def _assert_same(got, want) -> None:
    assert list(got) == list(want)
    for name, arr in want.items():
        assert got[name].dtype.name == arr.dtype.name, name
        assert got[name].dtype.isnative, name
        assert got[name].shape == arr.shape, name
        assert got[name].tobytes() == _native_bytes(arr), name


# --- iter_chunks ------------------------------------------------------------------------------


def test_iter_chunks_hand_computed_layout():
    params = {"a": np.array([1, 2], "<u2"), "b": np.array([3], ">u2"), "c": np.array([True])}
    chunks = list(iter_chunks(params, 2))
    # little-endian bytes of 1, 2, 3, then True; the last chunk is shorter
    assert chunks == [b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x01"]
    assert b"".join(iter_chunks(params, 100)) == b"\x01\x00\x02\x00\x03\x00\x01"


def test_iter_chunks_spans_tensor_boundaries():
    params = {"x": np.arange(3, dtype=np.int8), "y": np.arange(3, 6, dtype=np.int8)}
    assert list(iter_chunks(params, 4)) == [b"\x00\x01\x02\x03", b"\x04\x05"]


def test_iter_chunks_of_empty_params_yields_nothing():
    assert list(iter_chunks({}, 8)) == []
    assert list(iter_chunks({"e": np.zeros((0, 4), np.float32)}, 8)) == []


@settings(max_examples=200, deadline=None)
@given(params=_params, chunk_bytes=_chunk)
def test_roundtrip_reproduces_params_for_any_chunk_size(params, chunk_bytes):
    expected = total_bytes(specs_of(params))
    chunks = list(iter_chunks(params, chunk_bytes))
    assert sum(len(c) for c in chunks) == expected
    assert all(len(c) == chunk_bytes for c in chunks[:-1])
    assert all(0 < len(c) <= chunk_bytes for c in chunks)
    _assert_same(_assemble(params, chunk_bytes).finish(), params)


@settings(max_examples=100, deadline=None)
@given(params=_params, chunk_bytes=_chunk, extra=st.binary(min_size=1, max_size=16))
def test_assembler_refuses_excess_bytes(params, chunk_bytes, extra):
    asm = _assemble(params, chunk_bytes)
    with pytest.raises(InvalidUpdate, match="exceeds its declared size"):
        asm.add(extra)
    _assert_same(asm.finish(), params)  # the excess was not written


@settings(max_examples=100, deadline=None)
@given(params=_params, data=st.data())
def test_assembler_refuses_truncated_payloads(params, data):
    specs = specs_of(params)
    expected = total_bytes(specs)
    payload = b"".join(iter_chunks(params, 1 << 16))
    assume(expected > 0)
    cut = data.draw(st.integers(0, expected - 1), label="cut")
    step = data.draw(st.integers(1, 32), label="step")
    asm = Assembler(specs, max_bytes=expected)
    for i in range(0, cut, step):
        asm.add(payload[i : min(i + step, cut)])
    with pytest.raises(InvalidUpdate, match=f"payload truncated: {cut} of {expected}"):
        asm.finish()


def test_assembler_refuses_a_declaration_over_max_bytes_before_buffering():
    specs = [TensorSpec(name="w", dtype="float64", shape=(100,))]
    with pytest.raises(InvalidUpdate, match=r"payload of 800 bytes declared.*at most 799"):
        Assembler(specs, max_bytes=799)
    Assembler(specs, max_bytes=800)


def test_assembler_refuses_excess_split_across_a_chunk():
    params = {"w": np.arange(4, dtype=np.int16)}
    asm = Assembler(specs_of(params), max_bytes=8)
    asm.add(b"\x00" * 6)
    with pytest.raises(InvalidUpdate, match="more than 8 bytes"):
        asm.add(b"\x00" * 3)


def test_a_declaration_whose_size_overflows_is_refused():
    huge = [pb.TensorSpec(name="w", dtype="float32", shape=[2**32, 2**32])]
    with pytest.raises(InvalidUpdate, match="declares more than"):
        specs_from_proto(huge)
    big = specs_from_proto([pb.TensorSpec(name="w", dtype="float32", shape=[2**20, 2**20])])
    with pytest.raises(InvalidUpdate):
        Assembler(big, max_bytes=1 << 20).finish()


def _new_threads_after(before: set[threading.Thread], wait_s: float = 0.5) -> list[str]:
    deadline = time.monotonic() + wait_s
    for t in set(threading.enumerate()) - before:
        t.join(max(0.0, deadline - time.monotonic()))
    return sorted(t.name for t in set(threading.enumerate()) - before if t.is_alive())


def test_hashing_assemblers_share_a_small_pool_and_abandoned_ones_leave_none():
    params = {"w": np.arange(4, dtype=np.float32)}
    specs = specs_of(params)
    warm = Assembler(specs, max_bytes=16, hasher=payload_hasher(specs))
    warm.add(next(iter_chunks(params)))
    warm.finish()
    assert warm.digest() == digest(params)  # starts the shared hashing pool, if not yet
    before = set(threading.enumerate())
    for _ in range(50):
        finished = Assembler(specs, max_bytes=16, hasher=payload_hasher(specs))
        for chunk in iter_chunks(params, 3):
            finished.add(chunk)
        finished.finish()  # digest never asked for
        refused = Assembler(specs, max_bytes=16, hasher=payload_hasher(specs))
        with pytest.raises(InvalidUpdate):
            refused.add(b"x" * 17)
    # the pool may have grown to its few threads; nothing else was left running
    assert all(name.startswith("fedops-hash") for name in _new_threads_after(before))
    hashing = [t for t in threading.enumerate() if t.name.startswith("fedops-hash")]
    assert len(hashing) <= min(4, os.cpu_count() or 1)


def test_a_tampered_chunk_gives_another_digest_whatever_the_chunking():
    params = {"w": np.arange(1000, dtype=np.float32), "b": np.ones(3, np.float64)}
    specs = specs_of(params)
    for size in (1, 7, 64, 4000, 5000):
        chunks = [bytes(c) for c in iter_chunks(params, size)]
        honest = payload_hasher(specs)
        for chunk in chunks:
            honest.update(chunk)
        assert honest.hexdigest() == digest(params)
        for where in (0, len(chunks) // 2, len(chunks) - 1):
            tampered = list(chunks)
            flipped = bytearray(tampered[where])
            flipped[-1] ^= 0x01
            tampered[where] = bytes(flipped)
            hasher = payload_hasher(specs)
            for chunk in tampered:
                hasher.update(chunk)
            assert hasher.hexdigest() != digest(params)


def test_an_error_while_hashing_reaches_whoever_asks_for_the_digest():
    hasher = payload_hasher([])
    hasher.update(b"fine")
    hasher.update(object())  # type: ignore[arg-type]  # not a buffer: fails on the pool thread
    hasher.update(b"never hashed")
    with pytest.raises(TypeError):
        hasher.hexdigest()


def test_a_cancelled_hasher_drops_its_queue_takes_nothing_more_and_refuses_a_digest():
    specs = specs_of({"w": np.zeros(4, np.float32)})
    hasher = payload_hasher(specs)
    held = threading.Event()
    gate = threading.Event()
    hashing = hasher._hash  # the pool thread calls its update; hold it on the first chunk

    class Slow:
        def update(self, chunk):
            held.set()
            gate.wait(10)
            hashing.update(chunk)

        def hexdigest(self):
            return hashing.hexdigest()

    hasher._hash = Slow()
    queued = [memoryview(bytearray(8)) for _ in range(5)]
    for chunk in queued:
        hasher.update(chunk)
    assert held.wait(10)  # the first chunk is being hashed, four wait
    hasher.cancel()
    assert len(hasher._queue) == 0  # the waiting chunks are let go at once
    hasher.update(b"after")  # taken by no one
    assert len(hasher._queue) == 0
    gate.set()
    with pytest.raises(RuntimeError, match="cancelled"):
        hasher.hexdigest()  # returns once the chunk being hashed is done: no thread works on
    assert hasher._idle.is_set()


def test_an_abandoned_assembler_stops_hashing_and_leaves_no_thread():
    params = {"w": np.arange(1 << 16, dtype=np.float32)}
    specs = specs_of(params)
    before = set(threading.enumerate())
    for _ in range(20):
        asm = Assembler(specs, max_bytes=total_bytes(specs), hasher=payload_hasher(specs))
        chunks = iter_chunks(params, 1 << 12)
        for _ in range(5):
            asm.add(next(chunks))  # cut off here
        asm.cancel()
        with pytest.raises(RuntimeError, match="cancelled"):
            asm.digest()
    assert all(name.startswith("fedops-hash") for name in _new_threads_after(before))
    Assembler(specs, max_bytes=total_bytes(specs)).cancel()  # no hasher: nothing to stop


def test_assembler_digest_equals_params_digest_and_needs_a_hasher():
    params = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "b": np.array(3, np.int64)}
    specs = specs_of(params)
    asm = Assembler(specs, max_bytes=total_bytes(specs), hasher=payload_hasher(specs))
    for chunk in iter_chunks(params, 5):
        asm.add(chunk)
    got = asm.finish()
    assert asm.digest() == digest(params) == digest(got)
    bare = _assemble(params, 5)
    with pytest.raises(ValueError, match="without a hasher"):
        bare.digest()


# --- decode -----------------------------------------------------------------------------------


def test_decode_hand_computed():
    specs = [
        TensorSpec(name="a", dtype="int16", shape=(2,)),
        TensorSpec(name="b", dtype="float32", shape=()),
    ]
    out = decode(specs, b"\x01\x00\xff\xff" + np.float32(1.5).astype("<f4").tobytes())
    np.testing.assert_array_equal(out["a"], np.array([1, -1], np.int16))
    assert out["b"].shape == () and out["b"] == np.float32(1.5)


def test_decode_refuses_wrong_length():
    specs = [TensorSpec(name="a", dtype="int32", shape=(2,))]
    with pytest.raises(InvalidUpdate, match="payload is 7 bytes; the specs need 8"):
        decode(specs, b"\x00" * 7)


# --- specs on the wire ------------------------------------------------------------------------


def test_specs_proto_roundtrip():
    specs = [
        TensorSpec(name="w", dtype="float16", shape=(3, 0, 2)),
        TensorSpec(name="s", dtype="int64", shape=()),
    ]
    assert specs_from_proto(specs_to_proto(specs)) == specs


@pytest.mark.parametrize("dtype", ["complex64", "object", "float128", "<f4", ""])
def test_specs_from_proto_refuses_unsupported_dtypes(dtype):
    msg = pb.TensorSpec(name="layer.w", dtype=dtype, shape=[2])
    with pytest.raises(
        InvalidUpdate, match=re.escape(f"tensor 'layer.w' has unsupported dtype {dtype!r}")
    ):
        specs_from_proto([msg])


def test_specs_from_proto_refuses_negative_dimensions():
    msg = pb.TensorSpec(name="w", dtype="float32", shape=[2, -1])
    with pytest.raises(
        InvalidUpdate, match=re.escape("tensor 'w' has a negative dimension [2, -1]")
    ):
        specs_from_proto([msg])


def test_specs_from_proto_refuses_too_many_tensors():
    msgs = [pb.TensorSpec(name="t", dtype="uint8", shape=[1])] * (codec.MAX_TENSORS + 1)
    with pytest.raises(InvalidUpdate, match=f"{codec.MAX_TENSORS + 1} tensors declared"):
        specs_from_proto(msgs)
    assert len(specs_from_proto(msgs[: codec.MAX_TENSORS])) == codec.MAX_TENSORS
