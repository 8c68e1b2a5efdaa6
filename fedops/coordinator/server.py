"""The gRPC server: thin handlers that turn transport logic into RPC statuses.

Handlers are registered by hand (not with the generated ``add_..._to_server``)
for one reason: requests are parsed by a tolerant deserializer, so garbage
bytes get ``INVALID_ARGUMENT`` with the parser's reason instead of gRPC's
generic "Exception deserializing request!".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from fedops.coordinator.aio import LoopServer, ParkedPolls
from fedops.coordinator.peers import PeerGate
from fedops.coordinator.results import Reject
from fedops.coordinator.transport import GrpcTransport
from fedops.core.params import InvalidUpdate
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import framing

log = logging.getLogger("fedops.coordinator")

SERVICE = "fedops.v1.Coordinator"
#: gRPC's own per-message limit: past it gRPC cuts the call before fedops sees it.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: fedops' limit for one payload chunk (clients are told to send 2 MiB chunks);
#: checked by fedops so that an oversized chunk rejects the update with a reason.
MAX_CHUNK_MESSAGE_BYTES = 8 * 1024 * 1024
#: calls that may wait for the server to pick them up before gRPC sheds new ones
MAX_PENDING_CALLS = 20_000


class Malformed:
    """Stands in for a request that did not parse."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(message_type: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Malformed(f"malformed {message_type.__name__} ({len(data)} bytes): {exc}")

    return parse


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, reason: str) -> None:
    context.abort(code, reason)


def _unary(
    transport: GrpcTransport,
    fn: Callable[[Any], Any],
    method: str,
    gate: PeerGate | None,
) -> Callable[[Any, Any], Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if isinstance(request, Malformed):
                raise _malformed(transport, request)
            if gate is not None:
                _check_peer(gate, context, method, request)
            return fn(request)
        except Reject as exc:
            _abort(context, exc.code, exc.reason)

    return handler


def _check_peer(gate: PeerGate, context: grpc.ServicerContext, method: str, request: Any) -> None:
    """mTLS: the certificate names the site; a registration takes that name, nothing else."""
    if method != "Register":
        gate.check_node(context, method, request.node_id)
        return
    name = gate.caller(context, method)
    if request.site_name and request.site_name != name:
        raise Reject(
            grpc.StatusCode.PERMISSION_DENIED,
            f"the certificate names {name!r}; the registration claims {request.site_name[:64]!r}",
        )
    request.site_name = name


def _push_part(data: bytes) -> Any:
    """A payload chunk without parsing (see :mod:`fedops.wire.framing`), else a message."""
    if len(data) > MAX_CHUNK_MESSAGE_BYTES:
        return Malformed(
            f"a message of {len(data)} bytes exceeds the {MAX_CHUNK_MESSAGE_BYTES}-byte chunk limit"
        )
    chunk = framing.unframe_data(data)
    return chunk if chunk is not None else _tolerant(pb.PushResultRequest)(data)


def _malformed(transport: GrpcTransport, request: Malformed) -> Reject:
    transport.on_rejection(0, "?", "INVALID_ARGUMENT", request.reason)
    return Reject(grpc.StatusCode.INVALID_ARGUMENT, request.reason)


def _split_push(
    transport: GrpcTransport, requests: Iterator[Any]
) -> tuple[pb.ResultHeader, Iterator[bytes | memoryview]]:
    """The leading header, and the payload chunks after it (anything else is refused).

    A stream that gRPC cut off (a message over the size limit, a cancelled
    call, a client that died) ends like a finished one; the header's declared
    size tells them apart, so a cut stream is refused as truncated, never
    taken as a complete result.
    """
    first = next(requests, None)
    if isinstance(first, Malformed):
        raise _malformed(transport, first)
    if not isinstance(first, pb.PushResultRequest) or first.WhichOneof("part") != "header":
        transport.on_rejection(0, "?", "INVALID_ARGUMENT", "no leading ResultHeader")
        raise Reject(
            grpc.StatusCode.INVALID_ARGUMENT, "the first PushResult message must be a ResultHeader"
        )

    def chunks() -> Iterator[bytes | memoryview]:
        # Past the header the result is attributable: anything wrong rejects the update.
        try:
            for request in requests:
                if isinstance(request, memoryview):
                    yield request
                elif isinstance(request, Malformed):
                    raise InvalidUpdate(request.reason)
                elif request.WhichOneof("part") == "data":
                    yield request.data
                else:
                    raise InvalidUpdate("a second header arrived inside the payload")
        except grpc.RpcError as exc:  # gRPC cut the stream (cancelled, over its size limit)
            raise InvalidUpdate(f"the upload was cut off before its end ({exc})") from exc

    return first.header, chunks()


def _pull(
    transport: GrpcTransport, gate: PeerGate | None, parked: ParkedPolls
) -> Callable[[Any, Any], Any]:
    """``PullTask`` as a coroutine: a long-poll waits on the event loop, not on a thread."""

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if isinstance(request, Malformed):
                raise _malformed(transport, request)
            if gate is not None:
                _check_peer(gate, context, "PullTask", request)
            task = await parked.wait(
                request.node_id, transport.poll_wait_s(request), lambda: transport.poll(request)
            )
        except Reject as exc:
            await context.abort(exc.code, exc.reason)
        return task if task is not None else transport.idle_task()

    return handler


def _push(transport: GrpcTransport, gate: PeerGate | None) -> Callable[[Any, Any], Any]:
    def handler(requests: Iterator[Any], context: grpc.ServicerContext) -> pb.PushResultResponse:
        try:
            header, chunks = _split_push(transport, requests)
            if gate is not None:
                gate.check_node(context, "PushResult", header.node_id)
            return transport.push(header, chunks)
        except Reject as exc:
            _abort(context, exc.code, exc.reason)
        raise AssertionError("unreachable")

    return handler


def _fetch(transport: GrpcTransport, gate: PeerGate | None) -> Callable[[Any, Any], Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[pb.ModelChunk]:
        try:
            if isinstance(request, Malformed):
                raise _malformed(transport, request)
            if gate is not None:
                gate.check_node(context, "FetchModel", request.node_id)
            yield from transport.model_chunks(request)
        except Reject as exc:
            _abort(context, exc.code, exc.reason)

    return handler


def _serialize(message: Any) -> bytes:
    # model chunks arrive pre-serialized (fedops.wire.framing); the rest are messages
    return message if isinstance(message, bytes) else message.SerializeToString()


def build_server(
    transport: GrpcTransport, *, max_workers: int = 64, gate: PeerGate | None = None
) -> LoopServer:
    """A gRPC server with the Coordinator service; the caller binds and starts it.

    With ``gate`` (consortium mode, mTLS) every call is checked against the
    caller's certificate first. ``max_workers`` bounds the threads that run
    the blocking handlers; parked ``PullTask`` polls hold none.
    """
    server = LoopServer(
        max_workers=max_workers,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # agents ping every 20 s (fedops.client.channel.KEEPALIVE_MS), also while idle
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            # gRPC sheds calls as CANCELLED once 1000 wait to be picked up (its default);
            # a thousand agents all start a call when a round's tasks go out
            ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
        ],
    )
    parked = ParkedPolls(server.loop)
    transport.on_task_posted(parked.wake)
    handlers = {
        "Register": grpc.unary_unary_rpc_method_handler(
            _unary(transport, transport.register, "Register", gate),
            request_deserializer=_tolerant(pb.RegisterRequest),
            response_serializer=_serialize,
        ),
        "PullTask": grpc.unary_unary_rpc_method_handler(
            _pull(transport, gate, parked),
            request_deserializer=_tolerant(pb.PullTaskRequest),
            response_serializer=_serialize,
        ),
        "Heartbeat": grpc.unary_unary_rpc_method_handler(
            _unary(transport, transport.heartbeat, "Heartbeat", gate),
            request_deserializer=_tolerant(pb.HeartbeatRequest),
            response_serializer=_serialize,
        ),
        "FetchModel": grpc.unary_stream_rpc_method_handler(
            _fetch(transport, gate),
            request_deserializer=_tolerant(pb.FetchModelRequest),
            response_serializer=_serialize,
        ),
        "PushResult": grpc.stream_unary_rpc_method_handler(
            _push(transport, gate), request_deserializer=_push_part, response_serializer=_serialize
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return server
