"""The agent's two payload calls (:mod:`fedops.client.calls`) against a loopback server.

A minimal gRPC server on 127.0.0.1 plays the coordinator's two streaming
methods (what it sends is chosen per test), so the agent's real code runs
over a real channel. Under test: a download is only returned when its digest
equals the one the task announced (computed with :func:`fedops.core.params.digest`,
not the streaming hasher); a stream without a header first, or with more or
fewer bytes than it declared, is refused; an upload's header carries what the
task and the site said, its payload is the parameters' bytes in spec order,
and the digest it returns is the model digest of what it sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest

from fedops.client.calls import (
    FETCH_MODEL,
    PUSH_RESULT,
    DigestMismatch,
    ModelRefused,
    Session,
    fetch_model,
    push_result,
)
from fedops.core.params import InvalidUpdate, digest, specs_of, total_bytes
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec, framing

PARAMS = {
    "w": np.arange(12, dtype=np.float32).reshape(3, 4),
    "b": np.array([-1.5, 0.0, 2.25], dtype=np.float64),
    "steps": np.array([7], dtype=np.int64),
}
SESSION = Session(node_id="n1", token="tok", run_id="run-A", heartbeat_s=2.0, chunk_bytes=16)


class _Coordinator:
    """What the fake coordinator serves and what it received."""

    def __init__(self) -> None:
        self.model: list[bytes] = []  # serialized ModelChunk messages, sent in order
        self.fetches: list[pb.FetchModelRequest] = []
        self.pushed: list[bytes] = []  # serialized PushResultRequest messages
        self.lock = threading.Lock()

    def fetch(self, request: pb.FetchModelRequest, context: Any) -> Iterator[bytes]:
        with self.lock:
            self.fetches.append(request)
        yield from self.model

    def push(self, requests: Iterator[bytes], context: Any) -> pb.PushResultResponse:
        got = list(requests)
        with self.lock:
            self.pushed = got
        return pb.PushResultResponse(accepted=True)


def _model_stream(params: dict[str, np.ndarray], *, total: int | None = None) -> list[bytes]:
    specs = specs_of(params)
    header = pb.ModelChunk(
        header=pb.ModelHeader(
            tensors=codec.specs_to_proto(specs),
            total_bytes=total_bytes(specs) if total is None else total,
        )
    )
    return [header.SerializeToString(), *codec.iter_chunks(params, 10, framed=True)]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[_Coordinator, grpc.Channel]]:
    coordinator = _Coordinator()
    handler = grpc.method_handlers_generic_handler(
        "fedops.v1.Coordinator",
        {
            "FetchModel": grpc.unary_stream_rpc_method_handler(
                coordinator.fetch,
                request_deserializer=pb.FetchModelRequest.FromString,
                response_serializer=lambda data: data,
            ),
            "PushResult": grpc.stream_unary_rpc_method_handler(
                coordinator.push,
                request_deserializer=lambda data: data,
                response_serializer=pb.PushResultResponse.SerializeToString,
            ),
        },
    )
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    grpc_server.add_generic_rpc_handlers((handler,))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield coordinator, channel
    finally:
        channel.close()
        grpc_server.stop(grace=None)


def _task(model_digest: str = "", **fields: Any) -> pb.Task:
    base: dict[str, Any] = {
        "kind": pb.TASK_KIND_FIT,
        "run_id": "run-A",
        "round": 4,
        "task_id": "t-4",
        "model_digest": model_digest,
    }
    return pb.Task(**(base | fields))


def test_the_method_paths_are_the_protos() -> None:
    service = pb.DESCRIPTOR.services_by_name["Coordinator"]
    assert f"/{service.full_name}/FetchModel" == FETCH_MODEL
    assert f"/{service.full_name}/PushResult" == PUSH_RESULT


def test_a_download_with_the_announced_digest_is_returned_with_it(server: Any) -> None:
    coordinator, channel = server
    coordinator.model = _model_stream(PARAMS)
    expected = digest(PARAMS)
    params, got = fetch_model(channel, SESSION, _task(expected))
    assert got == expected
    assert list(params) == ["w", "b", "steps"]
    for name, arr in PARAMS.items():
        assert params[name].dtype == arr.dtype
        np.testing.assert_array_equal(params[name], arr)
    request = coordinator.fetches[-1]
    assert (request.node_id, request.token, request.task_id) == ("n1", "tok", "t-4")


def test_a_download_reuses_the_agents_buffer(server: Any) -> None:
    coordinator, channel = server
    coordinator.model = _model_stream(PARAMS)
    buffer = bytearray()
    params, _ = fetch_model(channel, SESSION, _task(digest(PARAMS)), buffer=buffer)
    assert len(buffer) == total_bytes(specs_of(PARAMS))
    buffer[:4] = np.float32(99.0).tobytes()  # the arrays are views into the buffer
    assert params["w"][0, 0] == 99.0


def test_a_model_other_than_the_announced_one_is_refused(server: Any) -> None:
    coordinator, channel = server
    other = {**PARAMS, "b": np.array([-1.5, 0.0, 2.5])}
    coordinator.model = _model_stream(other)
    announced = digest(PARAMS)
    with pytest.raises(DigestMismatch) as info:
        fetch_model(channel, SESSION, _task(announced))
    assert str(info.value) == (
        f"model digest mismatch: the task announced {announced}, "
        f"the download hashes to {digest(other)}"
    )


def test_a_model_with_nan_or_inf_is_refused_even_when_announced(server: Any) -> None:
    """A coordinator that committed a non-finite model (or a hostile one) gets no site
    to train from it: the download is refused, naming the tensor."""
    coordinator, channel = server
    for bad in (np.inf, np.nan):
        poisoned = {**PARAMS, "b": np.array([-1.5, bad, 2.25])}
        coordinator.model = _model_stream(poisoned)
        with pytest.raises(ModelRefused, match=r"not finite: tensor 'b' has 1 non-finite"):
            fetch_model(channel, SESSION, _task(digest(poisoned)))


def test_the_right_models_sha256_digest_is_refused_on_the_wire(server: Any) -> None:
    """fedops.v1.4 speaks BLAKE3 only: a coordinator announcing the (correct) bare SHA-256
    digest of older run directories gets no model used, rather than a second algorithm
    to choose from."""
    coordinator, channel = server
    coordinator.model = _model_stream(PARAMS)
    with pytest.raises(DigestMismatch, match="model digest mismatch"):
        fetch_model(channel, SESSION, _task(digest(PARAMS, "sha256")))


def test_a_hostile_length_announced_digest_is_shown_cut_short(server: Any) -> None:
    coordinator, channel = server
    coordinator.model = _model_stream(PARAMS)
    with pytest.raises(DigestMismatch) as info:
        fetch_model(channel, SESSION, _task("blake3:" + "f" * 2_000_000))
    assert len(str(info.value)) < 300 and "2000007 chars" in str(info.value)


def test_one_flipped_bit_in_any_chunk_is_refused(server: Any) -> None:
    """The streamed hash sees every chunk: a bit flipped in the first, a middle or the last
    chunk (the same size, still finite) is a digest mismatch, never a model."""
    coordinator, channel = server
    honest = _model_stream(PARAMS)
    for where in (1, len(honest) // 2, len(honest) - 1):
        stream = list(honest)
        flipped = bytearray(stream[where])
        flipped[-1] ^= 0x01
        stream[where] = bytes(flipped)
        coordinator.model = stream
        with pytest.raises(DigestMismatch, match="model digest mismatch"):
            fetch_model(channel, SESSION, _task(digest(PARAMS)))


def test_a_download_refused_midway_stops_its_hashing(server: Any, monkeypatch) -> None:
    coordinator, channel = server
    coordinator.model = [*_model_stream(PARAMS), framing.frame_data(b"\x00" * 8)]
    hashers: list[codec.PayloadHasher] = []

    def noted(specs: Any) -> codec.PayloadHasher:
        hashers.append(codec.PayloadHasher(specs))
        return hashers[-1]

    monkeypatch.setattr(codec, "payload_hasher", noted)
    with pytest.raises(InvalidUpdate, match="payload exceeds its declared size"):
        fetch_model(channel, SESSION, _task(digest(PARAMS)))
    (hasher,) = hashers
    with pytest.raises(RuntimeError, match="cancelled"):
        hasher.hexdigest()  # cancelled, and nothing of it is still being hashed


def test_a_task_announcing_no_digest_takes_no_model(server: Any) -> None:
    coordinator, channel = server
    coordinator.model = _model_stream(PARAMS)
    with pytest.raises(DigestMismatch, match="the task announced , the download"):
        fetch_model(channel, SESSION, _task(""))


def test_a_stream_that_does_not_start_with_a_header_is_refused(server: Any) -> None:
    coordinator, channel = server
    coordinator.model = _model_stream(PARAMS)[1:]  # data first
    with pytest.raises(InvalidUpdate, match="did not start with a ModelHeader"):
        fetch_model(channel, SESSION, _task(digest(PARAMS)))


def test_more_bytes_than_declared_are_refused(server: Any) -> None:
    coordinator, channel = server
    coordinator.model = [*_model_stream(PARAMS), framing.frame_data(b"\x00" * 8)]
    with pytest.raises(InvalidUpdate, match="payload exceeds its declared size"):
        fetch_model(channel, SESSION, _task(digest(PARAMS)))


def test_fewer_bytes_than_declared_are_refused(server: Any) -> None:
    coordinator, channel = server
    coordinator.model = _model_stream(PARAMS)[:-1]
    with pytest.raises(InvalidUpdate, match="payload truncated"):
        fetch_model(channel, SESSION, _task(digest(PARAMS)))


def test_a_header_declaring_fewer_total_bytes_than_its_tensors_is_refused(server: Any) -> None:
    coordinator, channel = server
    coordinator.model = _model_stream(PARAMS, total=8)
    with pytest.raises(InvalidUpdate, match="at most 8 are accepted"):
        fetch_model(channel, SESSION, _task(digest(PARAMS)))


def _pushed(coordinator: _Coordinator) -> tuple[pb.ResultHeader, bytes]:
    first, *rest = coordinator.pushed
    header = pb.PushResultRequest.FromString(first)
    assert header.WhichOneof("part") == "header"
    data = b""
    for message in rest:  # parsed with protobuf, not the agent's framing
        part = pb.PushResultRequest.FromString(message)
        assert part.WhichOneof("part") == "data"
        data += part.data
    return header.header, data


def test_an_upload_carries_the_task_and_the_sites_answer(server: Any) -> None:
    coordinator, channel = server
    task = _task(kind=pb.TASK_KIND_EVALUATE, round=9, task_id="e-9", run_id="run-B")
    sent = push_result(
        channel,
        SESSION,
        task,
        PARAMS,
        120,
        {"loss": 0.5, "accuracy": np.float32(0.75)},
        audit_head=(6, "ab" * 32),
    )
    header, data = _pushed(coordinator)
    assert (header.node_id, header.token) == ("n1", "tok")
    assert (header.run_id, header.round, header.task_id) == ("run-B", 9, "e-9")
    assert header.kind == pb.TASK_KIND_EVALUATE
    assert header.num_examples == 120
    assert dict(header.metrics) == {"loss": 0.5, "accuracy": 0.75}
    assert codec.specs_from_proto(header.tensors) == specs_of(PARAMS)
    assert header.total_bytes == total_bytes(specs_of(PARAMS)) == len(data)
    assert (header.site_audit.seq, header.site_audit.hash) == (6, "ab" * 32)
    assert header.declined == "" and not header.HasField("secagg")
    assert not header.HasField("report")
    assert data == b"".join(
        np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes() for a in PARAMS.values()
    )
    assert len(coordinator.pushed) - 1 == -(-len(data) // SESSION.chunk_bytes)  # 16-byte chunks
    assert sent == digest(PARAMS)


def test_an_upload_without_hashing_returns_no_digest(server: Any) -> None:
    coordinator, channel = server
    assert push_result(channel, SESSION, _task(), PARAMS, 1, {}, digest=False) == ""
    header, data = _pushed(coordinator)
    assert len(data) == header.total_bytes


def test_a_declined_task_sends_its_reason_and_no_payload(server: Any) -> None:
    coordinator, channel = server
    sent = push_result(channel, SESSION, _task(), {}, 0, {}, declined="site policy: no")
    header, data = _pushed(coordinator)
    assert header.declined == "site policy: no"
    assert header.num_examples == 0 and header.total_bytes == 0 and data == b""
    assert not header.HasField("site_audit")
    assert len(coordinator.pushed) == 1
    assert sent == digest({})  # the digest of the empty model: its header alone
