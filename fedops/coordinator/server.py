"""The gRPC server: thin handlers that turn transport logic into RPC statuses.

Handlers are registered by hand (not with the generated ``add_..._to_server``)
for one reason: requests are parsed by a tolerant deserializer, so garbage
bytes get ``INVALID_ARGUMENT`` with the parser's reason instead of gRPC's
generic "Exception deserializing request!".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from fedops.coordinator.transport import GrpcTransport, Reject
from fedops.v1 import fedops_pb2 as pb

log = logging.getLogger("fedops.coordinator")

SERVICE = "fedops.v1.Coordinator"
#: per-message limit; payloads travel in chunks far below it
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


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


def _unary(transport: GrpcTransport, fn: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            transport.on_rejection(0, "?", "INVALID_ARGUMENT", request.reason)
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        try:
            return fn(request)
        except Reject as exc:
            _abort(context, exc.code, exc.reason)

    return handler


def _checked_stream(transport: GrpcTransport, requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Malformed):
            transport.on_rejection(0, "?", "INVALID_ARGUMENT", request.reason)
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        yield request


def build_server(transport: GrpcTransport, *, max_workers: int = 64) -> grpc.Server:
    """A gRPC server with the Coordinator service; the caller binds and starts it."""

    def push(requests: Iterator[Any], context: grpc.ServicerContext) -> pb.PushResultResponse:
        try:
            return transport.push(_checked_stream(transport, requests))
        except Reject as exc:
            _abort(context, exc.code, exc.reason)
        raise AssertionError("unreachable")

    def fetch(request: Any, context: grpc.ServicerContext) -> Iterator[pb.ModelChunk]:
        if isinstance(request, Malformed):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        try:
            yield from transport.model_chunks(request)
        except Reject as exc:
            _abort(context, exc.code, exc.reason)

    ser = lambda message: message.SerializeToString()  # noqa: E731
    handlers = {
        "Register": grpc.unary_unary_rpc_method_handler(
            _unary(transport, transport.register),
            request_deserializer=_tolerant(pb.RegisterRequest),
            response_serializer=ser,
        ),
        "PullTask": grpc.unary_unary_rpc_method_handler(
            _unary(transport, transport.pull),
            request_deserializer=_tolerant(pb.PullTaskRequest),
            response_serializer=ser,
        ),
        "Heartbeat": grpc.unary_unary_rpc_method_handler(
            _unary(transport, transport.heartbeat),
            request_deserializer=_tolerant(pb.HeartbeatRequest),
            response_serializer=ser,
        ),
        "FetchModel": grpc.unary_stream_rpc_method_handler(
            fetch, request_deserializer=_tolerant(pb.FetchModelRequest), response_serializer=ser
        ),
        "PushResult": grpc.stream_unary_rpc_method_handler(
            push, request_deserializer=_tolerant(pb.PushResultRequest), response_serializer=ser
        ),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fedops-rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return server
