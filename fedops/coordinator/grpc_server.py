"""The gRPC server: thin handlers that turn transport logic into RPC statuses.

Handlers are registered by hand (not with the generated ``add_..._to_server``)
for one reason: requests are parsed by a tolerant deserializer, so garbage
bytes get ``INVALID_ARGUMENT`` with the parser's reason instead of gRPC's
generic "Exception deserializing request!".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from fedops.coordinator.aio import LoopServer, ParkedPolls
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.coordinator.peer_guard import (
    HEADER_DEADLINE_S,
    MAX_CALLS_PER_SITE,
    MAX_UPLOADS_PER_ADDRESS,
    MAX_UPLOADS_PER_SITE,
    PEER,
    CallLimits,
    PeerSlots,
    address_of,
    certified_or_address,
)
from fedops.coordinator.peers import PeerGate
from fedops.coordinator.result_intake import Reject
from fedops.coordinator.upload import push_handler
from fedops.core.params import InvalidUpdate
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import framing

log = logging.getLogger("fedops.coordinator")

SERVICE = "fedops.v1.Coordinator"
#: fedops' limit for one payload chunk (clients are told to send 2 MiB chunks);
#: checked by fedops so that an oversized chunk rejects the update with a reason.
MAX_CHUNK_MESSAGE_BYTES = 8 * 1024 * 1024
#: gRPC's own per-message limit: past it gRPC cuts the call before fedops sees it. No
#: request is larger than a chunk; gRPC holds a message whole before any handler runs, so
#: this bounds what one unfinished call can make the coordinator buffer (red team
#: 2026-12-07: 64 MiB let 100 stalled calls hold 6 GB).
MAX_MESSAGE_BYTES = MAX_CHUNK_MESSAGE_BYTES + 64 * 1024
#: what the coordinator sends in one message (model chunks are ``max_chunk_bytes``)
MAX_SEND_MESSAGE_BYTES = 64 * 1024 * 1024
#: calls open at once on one connection (HTTP/2 MAX_CONCURRENT_STREAMS; gRPC's default is
#: unbounded). An agent has at most a poll, a heartbeat, a download and two uploads open;
#: a client past it queues its calls, it is not refused.
MAX_STREAMS_PER_CONNECTION = 16
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
    open_calls: PeerSlots,
) -> Callable[[Any, Any], Any]:
    peer_of = _peer_key(gate)

    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        # a pool thread's own context: set per call, reset so it never leaks to the next
        peer = peer_of(context)
        who = PEER.set(peer)
        try:
            if gate is not None:  # the certificate first: nobody unknown gets the parser's work
                gate.caller(context, method)
            with open_calls.hold(peer):
                if isinstance(request, Malformed):
                    raise _malformed(transport, request)
                if gate is not None:
                    _check_peer(gate, context, method, request)
                return fn(request)
        except Reject as exc:
            _abort(context, exc.code, exc.reason)
        finally:
            PEER.reset(who)

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


def _first_header(transport: GrpcTransport, first: Any) -> pb.ResultHeader:
    """The upload's leading message as its header; anything else is refused."""
    if isinstance(first, Malformed):
        raise _malformed(transport, first)
    if not isinstance(first, pb.PushResultRequest) or first.WhichOneof("part") != "header":
        transport.on_rejection(0, "?", "INVALID_ARGUMENT", "no leading ResultHeader")
        raise Reject(
            grpc.StatusCode.INVALID_ARGUMENT, "the first PushResult message must be a ResultHeader"
        )
    return first.header


def _payload_part(request: Any) -> bytes | memoryview:
    """A message after the header: payload bytes (past the header, a bad one rejects the update)."""
    if isinstance(request, memoryview):
        return request
    if isinstance(request, Malformed):
        raise InvalidUpdate(request.reason)
    if request.WhichOneof("part") == "data":
        return request.data
    raise InvalidUpdate("a second header arrived inside the payload")


def _peer_key(gate: PeerGate | None) -> Callable[[Any], str]:
    """Who a call comes from: its certificate's name with a kit, its address without."""
    return certified_or_address if gate is not None else address_of


def _parsed_and_owned(
    transport: GrpcTransport, gate: PeerGate | None, context: Any, method: str, request: Any
) -> None:
    """After the certificate: the request parsed, and (kit mode) its node the caller's."""
    if isinstance(request, Malformed):
        raise _malformed(transport, request)
    if gate is not None:
        _check_peer(gate, context, method, request)


def _heartbeat(
    transport: GrpcTransport, gate: PeerGate | None, open_calls: PeerSlots
) -> Callable[[Any, Any], Any]:
    """``Heartbeat`` on the event loop: it only authenticates and notes the node alive,
    so it is served even while every pool thread is busy (uploads, a flood of them)."""
    peer_of = _peer_key(gate)

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        peer = peer_of(context)
        PEER.set(peer)  # this call's task has its own context
        try:
            if gate is not None:
                gate.caller(context, "Heartbeat")
            with open_calls.hold(peer):
                _parsed_and_owned(transport, gate, context, "Heartbeat", request)
                return transport.heartbeat(request)
        except Reject as exc:
            await context.abort(exc.code, exc.reason)

    return handler


def _pull(
    transport: GrpcTransport, gate: PeerGate | None, parked: ParkedPolls, polls: PeerSlots
) -> Callable[[Any, Any], Any]:
    """``PullTask`` as a coroutine: a long-poll waits on the event loop, not on a thread."""
    peer_of = _peer_key(gate)

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        peer = peer_of(context)
        PEER.set(peer)  # this call's task has its own context
        try:
            if gate is not None:
                gate.caller(context, "PullTask")
            _parsed_and_owned(transport, gate, context, "PullTask", request)
            with polls.hold(peer):
                task = await parked.wait(
                    request.node_id, transport.poll_wait_s(request), lambda: transport.poll(request)
                )
        except Reject as exc:
            await context.abort(exc.code, exc.reason)
        return task if task is not None else transport.idle_task()

    return handler


def _fetch(
    transport: GrpcTransport, gate: PeerGate | None, server: LoopServer, downloads: PeerSlots
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    """``FetchModel`` as an async generator: a slow reader waits on the loop, not on a thread.

    A pool-thread generator blocks its thread while the peer does not read
    (HTTP/2 flow control), so a few stalled downloads starved every other
    call. Here each chunk is built on the pool (one copy of at most a chunk)
    and written from the loop; a peer that stops reading holds one chunk.
    """
    peer_of = _peer_key(gate)

    def checked(request: Any, context: Any) -> tuple[Any, Iterator[Any]]:
        if gate is not None:
            gate.caller(context, "FetchModel")
        if isinstance(request, Malformed):
            raise _malformed(transport, request)
        if gate is not None:
            gate.check_node(context, "FetchModel", request.node_id)
        chunks = transport.model_chunks(request)
        return next(chunks), chunks  # the first step authenticates and checks the task

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        peer = peer_of(context)
        PEER.set(peer)  # this call's task has its own context
        try:
            with downloads.hold(peer):
                try:
                    header, chunks = await server.in_pool(checked, request, context)
                except Reject as exc:
                    await context.abort(exc.code, exc.reason)
                yield header
                while (chunk := await server.in_pool(next, chunks, None)) is not None:
                    yield chunk
        except Reject as exc:  # past this peer's open downloads
            await context.abort(exc.code, exc.reason)

    return handler


def _serialize(message: Any) -> bytes:
    # model chunks arrive pre-serialized (fedops.wire.framing); the rest are messages
    return message if isinstance(message, bytes) else message.SerializeToString()


def build_server(
    transport: GrpcTransport,
    *,
    max_workers: int = 64,
    gate: PeerGate | None = None,
    header_deadline_s: float = HEADER_DEADLINE_S,
    max_uploads_per_peer: int | None = None,
    slots: PeerSlots | None = None,
    limits: CallLimits | None = None,
) -> LoopServer:
    """A gRPC server with the Coordinator service; the caller binds and starts it.

    With ``gate`` (consortium mode, mTLS) every call is checked against the
    caller's certificate first. ``max_workers`` bounds the threads that run
    the blocking handlers; parked ``PullTask`` polls and uploads waiting for
    their header (at most ``header_deadline_s``) hold none. Each peer (a
    certificate with a kit, an address without) may have at most
    ``max_uploads_per_peer`` uploads open (default: see
    :mod:`fedops.coordinator.peer_guard`); ``slots`` counts them (given: shared).
    ``limits`` caps its other open calls (default: a few per certificate with a
    kit, as many as uploads per address without one, where agents share hosts).
    """
    server = new_server(max_workers)
    service = coordinator_service(
        transport,
        server,
        gate=gate,
        header_deadline_s=header_deadline_s,
        max_uploads_per_peer=max_uploads_per_peer,
        slots=slots,
        limits=limits,
    )
    server.add_generic_rpc_handlers((service,))
    return server


def new_server(max_workers: int = 64) -> LoopServer:
    """An unbound, unstarted server with the options a coordinator needs."""
    return LoopServer(max_workers=max_workers, options=_server_options())


def coordinator_service(
    transport: GrpcTransport,
    server: LoopServer,
    *,
    gate: PeerGate | None = None,
    header_deadline_s: float = HEADER_DEADLINE_S,
    max_uploads_per_peer: int | None = None,
    slots: PeerSlots | None = None,
    limits: CallLimits | None = None,
) -> grpc.GenericRpcHandler:
    """The Coordinator service of one run on ``server`` (see :func:`build_server`); a
    standing federation (:mod:`fedops.coordinator.standing`) swaps one in per run."""
    if slots is None:
        if max_uploads_per_peer is None:
            max_uploads_per_peer = MAX_UPLOADS_PER_SITE if gate else MAX_UPLOADS_PER_ADDRESS
        slots = PeerSlots(max_uploads_per_peer)
    if limits is None:
        limits = CallLimits.per_peer(MAX_CALLS_PER_SITE if gate else MAX_UPLOADS_PER_ADDRESS)
    parked = ParkedPolls(server.loop)
    transport.on_task_posted(parked.wake)
    handlers = _coordinator_handlers(
        transport,
        server,
        gate=gate,
        parked=parked,
        limits=limits,
        slots=slots,
        header_deadline_s=header_deadline_s,
    )
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _server_options() -> list[tuple[str, int]]:
    """gRPC's defaults suit one client, not a federation of them: what a coordinator changes."""
    return [
        # one coordinator per port: gRPC's default SO_REUSEPORT let a second coordinator
        # bind the same port, and clients were split between two runs at random
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # agents ping every 20 s (fedops.client.channel.KEEPALIVE_MS), also while idle
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        # gRPC sheds calls as CANCELLED once 1000 wait to be picked up (its default);
        # a thousand agents all start a call when a round's tasks go out
        ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
    ]


def _coordinator_handlers(
    transport: GrpcTransport,
    server: LoopServer,
    *,
    gate: PeerGate | None,
    parked: ParkedPolls,
    limits: CallLimits,
    slots: PeerSlots,
    header_deadline_s: float,
) -> dict[str, grpc.RpcMethodHandler]:
    return {
        "Register": grpc.unary_unary_rpc_method_handler(
            _unary(transport, transport.register, "Register", gate, limits.unary),
            request_deserializer=_tolerant(pb.RegisterRequest),
            response_serializer=_serialize,
        ),
        "PullTask": grpc.unary_unary_rpc_method_handler(
            _pull(transport, gate, parked, limits.polls),
            request_deserializer=_tolerant(pb.PullTaskRequest),
            response_serializer=_serialize,
        ),
        "Heartbeat": grpc.unary_unary_rpc_method_handler(
            _heartbeat(transport, gate, limits.unary),
            request_deserializer=_tolerant(pb.HeartbeatRequest),
            response_serializer=_serialize,
        ),
        "FetchModel": grpc.unary_stream_rpc_method_handler(
            _fetch(transport, gate, server, limits.downloads),
            request_deserializer=_tolerant(pb.FetchModelRequest),
            response_serializer=_serialize,
        ),
        "PushResult": grpc.stream_unary_rpc_method_handler(
            push_handler(
                transport,
                server,
                gate=gate,
                peer_of=_peer_key(gate),
                first_header=partial(_first_header, transport),
                unpack=_payload_part,
                slots=slots,
                header_deadline_s=header_deadline_s,
            ),
            request_deserializer=_push_part,
            response_serializer=_serialize,
        ),
    }
