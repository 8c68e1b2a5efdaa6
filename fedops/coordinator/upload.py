"""``PushResult`` on the event loop: nothing is held for a peer that has not authenticated.

A thread-pool handler holds its thread from the call's first byte, so idle
upload streams (64 with the default pool) used to starve heartbeats and
registrations before any check ran (issue 17, finding 1). Here the stream
waits for its header on the loop, within a deadline, counted against its
peer (:class:`~fedops.coordinator.peer_guard.PeerSlots`); the certificate is
checked before the header is even read, and the header's node and token
before the payload is. Only then does the intake (blocking code shared with
the simulation) run on a pool thread, reading payload chunks from the loop
with an idle limit, so even an authenticated node cannot park a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from fedops.coordinator.aio import LoopServer
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.coordinator.peer_guard import PEER, PeerSlots
from fedops.coordinator.peers import PeerGate
from fedops.coordinator.result_intake import Reject
from fedops.core.params import InvalidUpdate
from fedops.v1 import fedops_pb2 as pb

#: how long the intake waits for the next payload chunk before refusing the upload
CHUNK_IDLE_S = 60.0

_END = object()


def push_handler(
    transport: GrpcTransport,
    server: LoopServer,
    *,
    gate: PeerGate | None,
    peer_of: Callable[[Any], str],
    first_header: Callable[[Any], pb.ResultHeader],
    unpack: Callable[[Any], bytes | memoryview],
    slots: PeerSlots,
    header_deadline_s: float,
    chunk_idle_s: float = CHUNK_IDLE_S,
) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Any]:
    """The ``PushResult`` coroutine.

    Args:
        peer_of: the calling peer's key (certificate name or address).
        first_header: the leading message as a header, or :class:`Reject` (records it).
        unpack: a later message as payload bytes, or :class:`InvalidUpdate`.
        slots: uploads open per peer.
        header_deadline_s: how long the header may take to arrive.
        chunk_idle_s: how long any later message may take.
    """

    async def handler(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> pb.PushResultResponse:
        peer = peer_of(context)
        PEER.set(peer)  # this task's context; in_pool carries it to the pool
        try:
            with slots.hold(peer):
                if gate is not None:  # the certificate first, before reading anything
                    await server.in_pool(gate.caller, context, "PushResult")
                try:
                    first = await asyncio.wait_for(anext(requests, None), header_deadline_s)
                except TimeoutError:
                    await server.in_pool(_too_slow, transport, header_deadline_s)
                header = await server.in_pool(first_header, first)
                if gate is not None:
                    await server.in_pool(gate.check_node, context, "PushResult", header.node_id)
                chunks = _payload(server.loop, requests, unpack, chunk_idle_s)
                return await server.in_pool(transport.push, header, chunks)
        except Reject as exc:
            await context.abort(exc.code, exc.reason)
        raise AssertionError("unreachable")

    return handler


def _too_slow(transport: GrpcTransport, deadline_s: float) -> None:
    reason = f"no ResultHeader within {deadline_s:g} s of the upload's start"
    transport.on_rejection(0, "?", grpc.StatusCode.DEADLINE_EXCEEDED.name, reason)
    raise Reject(grpc.StatusCode.DEADLINE_EXCEEDED, reason)


def _payload(
    loop: asyncio.AbstractEventLoop,
    requests: AsyncIterator[Any],
    unpack: Callable[[Any], bytes | memoryview],
    idle_s: float,
) -> Iterator[bytes | memoryview]:
    """The payload chunks, read on the loop for a pool thread (idle at most ``idle_s`` each).

    A stream that gRPC cut off (over the size limit, cancelled, the client
    died) ends like a finished one; the header's declared size tells them
    apart, so a cut stream is refused as truncated, never taken as complete.
    """

    async def receive() -> Any:
        try:
            return await anext(requests, _END)
        except (grpc.RpcError, grpc.aio.AioRpcError) as exc:
            raise InvalidUpdate(f"the upload was cut off before its end ({exc})") from exc

    while True:
        future = asyncio.run_coroutine_threadsafe(receive(), loop)
        try:
            message = future.result(timeout=idle_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise InvalidUpdate(f"the upload sent nothing for {idle_s:g} s") from None
        except concurrent.futures.CancelledError:
            raise InvalidUpdate("the upload was cut off before its end") from None
        if message is _END:
            return
        yield unpack(message)
