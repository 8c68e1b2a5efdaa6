"""An asyncio gRPC server behind the blocking face the rest of fedops uses.

Why asyncio: every idle agent keeps one ``PullTask`` long-poll open. A
thread-pool server holds a thread per open poll, so a thousand agents need a
thousand threads, and with fewer threads heartbeats and uploads queue behind
parked polls until nodes look dead. Here a parked poll is an
:class:`asyncio.Event` on one event-loop thread, and the other handlers
(registration, heartbeats, model download, result upload: short, blocking
code shared with the simulation) run on a bounded thread pool as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Collection, Coroutine, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc

T = TypeVar("T")


class LoopServer:
    """A ``grpc.aio`` server running on its own event-loop thread.

    It offers the calls fedops makes on a ``grpc.Server`` (add handlers and
    ports, ``start``, ``stop(grace)`` returning an event to wait on), so
    callers do not see the event loop. Handlers that are coroutine functions
    run on the loop; plain functions run on a pool of ``max_workers`` threads.
    """

    def __init__(self, *, max_workers: int, options: Sequence[tuple[str, Any]]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="fedops-grpc-loop", daemon=True
        )
        self._thread.start()
        self._pool = futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="fedops-rpc"
        )

        async def make() -> grpc.aio.Server:
            return grpc.aio.server(migration_thread_pool=self._pool, options=list(options))

        self._server = self._run(make())
        self._stopped: threading.Event | None = None

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the handler pool, awaited from the loop.

        For the short blocking steps of a call that otherwise waits on the
        loop (checks that write refusals to disk, the result intake): the
        thread is held for the work, never while the peer is being waited
        for. The caller's context variables (who is calling) go along.
        """
        context = contextvars.copy_context()
        return await self.loop.run_in_executor(
            self._pool, functools.partial(context.run, fn, *args)
        )

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(handlers))

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, credentials)

    def start(self) -> None:
        self._run(self._server.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Stop serving (calls in flight get ``grace`` seconds); the event is set when done."""
        if self._stopped is not None:
            return self._stopped
        stopped = self._stopped = threading.Event()

        async def stop() -> None:
            try:
                await self._server.stop(grace)
            finally:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self.loop.call_soon(self.loop.stop)
                stopped.set()

        asyncio.run_coroutine_threadsafe(stop(), self.loop)
        return stopped


class ParkedPolls:
    """Polls waiting for a task, one event per node, woken from any thread.

    The round driver posts tasks from its own thread; :meth:`wake` hands the
    node names to the loop, which sets exactly those nodes' events, so posting
    a round to a thousand nodes wakes each parked poll once (not a thousand
    polls per registration, as one shared condition would).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: dict[str, set[asyncio.Event]] = {}

    def wake(self, nodes: Collection[str] | None) -> None:
        """Thread-safe: wake the polls of ``nodes`` (``None``: all)."""
        chosen = None if nodes is None else tuple(nodes)
        self._loop.call_soon_threadsafe(self._set, chosen)

    def _set(self, nodes: tuple[str, ...] | None) -> None:
        if nodes is None:
            nodes = tuple(self._events)
        for group in [self._events.get(node, ()) for node in nodes]:
            for event in group:
                event.set()

    async def wait(self, node: str, timeout_s: float, ready: Callable[[], T | None]) -> T | None:
        """``ready()``'s first non-None answer, re-asked on each wake, within ``timeout_s``.

        The event is registered before ``ready`` is asked, so a task posted
        between the question and the wait still wakes this poll.
        """
        deadline = self._loop.time() + timeout_s
        event = asyncio.Event()
        group = self._events.setdefault(node, set())
        group.add(event)
        try:
            while True:
                event.clear()
                answer = ready()
                remaining = deadline - self._loop.time()
                if answer is not None or remaining <= 0:
                    return answer
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return ready()
        finally:
            group.discard(event)
            if not group:
                self._events.pop(node, None)
