"""One gRPC service whose handlers belong to whichever run is open.

A standing federation (``fedops serve``) keeps one server, and so one port, one TLS
identity and one set of connections, across every run it serves; what changes between
runs is the Coordinator (and Admin) service behind it. :class:`RunSwitch` is that
service's face: a call goes to the open run's handlers, and between runs it is told
``UNAVAILABLE`` ("no run is open"), which agents treat as a network blip and retry.
A call that began under one run finishes there: the switch is read once per call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

#: how each method of a switched service streams: calls between runs are refused in kind
UNARY, SERVER_STREAM, CLIENT_STREAM = "unary", "server_stream", "client_stream"
COORDINATOR_METHODS = {
    "Register": UNARY,
    "PullTask": UNARY,
    "Heartbeat": UNARY,
    "FetchModel": SERVER_STREAM,
    "PushResult": CLIENT_STREAM,
}
ADMIN_METHODS = {"Status": UNARY, "Start": UNARY, "Stop": UNARY}


class RunSwitch(grpc.GenericRpcHandler):
    """The handlers of service ``service`` for the open run (:meth:`open`), or none."""

    def __init__(self, service: str, methods: dict[str, str], closed: Callable[[], str]) -> None:
        self._prefix = f"/{service}/"
        self._closed = {name: _refusing(kind, closed) for name, kind in methods.items()}
        self._current: grpc.GenericRpcHandler | None = None
        self._lock = threading.Lock()

    def open(self, handler: grpc.GenericRpcHandler) -> None:
        with self._lock:
            self._current = handler

    def close(self) -> None:
        with self._lock:
            self._current = None

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if not method.startswith(self._prefix):
            return None
        current = self._current
        if current is not None:
            return current.service(handler_call_details)
        return self._closed.get(method[len(self._prefix) :])


def _refusing(kind: str, closed: Callable[[], str]) -> grpc.RpcMethodHandler:
    """A handler that answers UNAVAILABLE with ``closed()`` (the serve loop's word on why)."""

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAVAILABLE, closed())

    def refuse_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        context.abort(grpc.StatusCode.UNAVAILABLE, closed())
        yield from ()

    raw: Callable[[bytes], bytes] = bytes  # the request is never parsed
    if kind == SERVER_STREAM:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, request_deserializer=raw)
    if kind == CLIENT_STREAM:
        return grpc.stream_unary_rpc_method_handler(refuse, request_deserializer=raw)
    return grpc.unary_unary_rpc_method_handler(refuse, request_deserializer=raw)
