"""The receive path's checks made chunk by chunk: the same digest, the same refusals."""

from __future__ import annotations

import gc

import blake3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.coordinator.intake import Received, read_result
from fedops.core.params import (
    InvalidUpdate,
    check_finite,
    digest,
    digest_header,
    le_bytes,
    model_digest,
    specs_of,
)
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec
from fedops.wire.buffers import MIN_POOLED_BYTES, BufferPool

SIZE = 2 * MIN_POOLED_BYTES


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((7, 5)).astype(np.float32),
        "n": np.arange(5, dtype=np.int64),
        "h": rng.standard_normal(9).astype(np.float16),
        "empty": np.zeros((0, 3), dtype=np.float64),
        "b": rng.standard_normal(13),
    }


def _cut(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        out.append(data[pos : pos + size])
        pos += size
    return [*out, data[pos:]] if pos < len(data) else out


def _payload(params: dict[str, np.ndarray]) -> bytes:
    return b"".join(bytes(le_bytes(a)) for a in params.values())


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 41), max_size=40))
def test_the_digest_hashed_per_chunk_equals_blake3_over_the_whole(sizes):
    params = _params()
    specs = specs_of(params)
    whole = "blake3:" + blake3.blake3(digest_header(specs) + _payload(params)).hexdigest()
    assembler = codec.Assembler(
        specs, max_bytes=1 << 20, hasher=codec.payload_hasher(specs), finite=True
    )
    for chunk in _cut(_payload(params), sizes):
        assembler.add(chunk)
    got = assembler.finish()
    assert assembler.digest() == whole == digest(params)
    for name, arr in params.items():
        np.testing.assert_array_equal(got[name], arr)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 37), max_size=30),
    where=st.sampled_from(["a", "h", "b"]),
    index=st.integers(0, 4),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_non_finite_values_anywhere_are_refused_as_check_finite_refuses(sizes, where, index, value):
    params = _params()
    params[where].reshape(-1)[index] = value
    params["b"].reshape(-1)[-1] = np.nan  # the very last element, in the last chunk
    with pytest.raises(InvalidUpdate) as whole:
        check_finite(params)
    specs = specs_of(params)
    assembler = codec.Assembler(specs, max_bytes=1 << 20, finite=True)
    for chunk in _cut(_payload(params), sizes):
        assembler.add(chunk)
    with pytest.raises(InvalidUpdate) as streamed:
        assembler.finish()
    assert str(streamed.value) == str(whole.value)


def test_a_nan_in_the_last_chunk_alone_is_refused():
    params = {"w": np.ones(1000, dtype=np.float32)}
    params["w"][-1] = np.nan
    specs = specs_of(params)
    assembler = codec.Assembler(specs, max_bytes=4000, finite=True)
    for chunk in codec.iter_chunks(params, 333):
        assembler.add(chunk)
    with pytest.raises(InvalidUpdate, match=r"tensor 'w' has 1 non-finite values \(NaN/Inf\)"):
        assembler.finish()


def test_a_truncated_payload_is_refused_as_truncated_before_its_values():
    params = {"w": np.full(8, np.nan, dtype=np.float32)}
    assembler = codec.Assembler(specs_of(params), max_bytes=32, finite=True)
    assembler.add(next(codec.iter_chunks(params))[:30])
    with pytest.raises(InvalidUpdate, match="payload truncated: 30 of 32"):
        assembler.finish()


def _header(params: dict[str, np.ndarray], kind: int = pb.TASK_KIND_FIT) -> pb.ResultHeader:
    specs = specs_of(params)
    return pb.ResultHeader(
        node_id="n",
        kind=kind,
        num_examples=3,
        tensors=codec.specs_to_proto(specs),
        total_bytes=sum(s.nbytes for s in specs),
    )


def test_read_result_reports_the_streamed_digest_with_chunks_of_odd_sizes():
    params = _params()
    chunks = _cut(_payload(params), [3, 5, 7, 11, 13, 17, 19, 23, 29, 31])
    received = Received()
    result = read_result(
        _header(params), pb.TASK_KIND_FIT, specs_of(params), iter(chunks), received=received
    )
    assert received.digest == digest(result.params) == digest(params)
    tampered = bytearray(_payload(params))
    tampered[-1] ^= 1  # one flipped bit in the last chunk: still finite, another digest
    again = Received()
    read_result(
        _header(params), pb.TASK_KIND_FIT, specs_of(params), iter([bytes(tampered)]), received=again
    )
    assert again.digest != received.digest


def test_read_result_refuses_a_non_finite_update_as_before():
    params = _params()
    params["b"][-1] = np.inf
    with pytest.raises(InvalidUpdate, match=r"tensor 'b' has 1 non-finite values"):
        read_result(
            _header(params),
            pb.TASK_KIND_FIT,
            specs_of(params),
            iter(_cut(_payload(params), [5] * 40)),
            received=Received(),
        )


def test_a_pooled_buffer_is_lent_again_only_once_nothing_views_it():
    pool = BufferPool(max_idle_bytes=4 * SIZE)
    first = pool.take(SIZE)
    address = first.__array_interface__["data"][0]
    decoded = np.frombuffer(first.data.cast("B"), dtype=np.float32)
    del first
    gc.collect()
    assert pool.idle_bytes() == 0  # a decoded array still views it
    other = pool.take(SIZE)
    assert other.__array_interface__["data"][0] != address
    del decoded
    gc.collect()
    assert pool.idle_bytes() == SIZE
    again = pool.take(SIZE - 8)  # a little smaller fits the same buffer
    assert again.__array_interface__["data"][0] == address
    assert len(again) == SIZE - 8
    assert pool.idle_bytes() == 0
    del other, again


def test_a_pool_keeps_no_more_than_its_idle_limit():
    pool = BufferPool(max_idle_bytes=2 * MIN_POOLED_BYTES)
    lent = [pool.take(MIN_POOLED_BYTES) for _ in range(5)]
    del lent
    gc.collect()
    assert pool.idle_bytes() == 2 * MIN_POOLED_BYTES
    assert len(pool.take(100)) == 100  # small payloads are not pooled


def test_a_model_is_hashed_once_while_it_is_the_same_model():
    params = {"w": np.arange(6, dtype=np.float32)}
    assert model_digest(params) == digest(params)
    params["w"] = np.arange(6, dtype=np.float32) + 1  # an array replaced: hashed anew
    assert model_digest(params) == digest(params)
    copy = dict(params)
    assert model_digest(copy) == digest(params)


def test_the_run_store_reuses_the_digest_the_transport_computed(tmp_path, monkeypatch):
    from fedops.core import params as core_params
    from fedops.runtime.store import RunStore

    model = {"w": np.arange(6, dtype=np.float32)}
    expected = digest(model)
    assert model_digest(model) == expected  # as the transport's dispatch does
    calls = []
    real = core_params.digest
    monkeypatch.setattr(core_params, "digest", lambda p: calls.append(1) or real(p))
    store = RunStore(tmp_path)
    store.open_run({"x": 1})
    assert store.save_round(0, model, {}) == expected
    assert calls == []  # not hashed again for the checkpoint
    assert store.model_digest(0) == expected
    monkeypatch.undo()
    np.testing.assert_array_equal(store.load_round(0)["w"], model["w"])
