"""The client end of both paths, in a spawned process driven over a pipe."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import grpc
from harness import cpu_seconds

from fedops.client.calls import Session, fetch_model, push_result
from fedops.v1 import fedops_pb2 as pb
from fedops.v1 import fedops_pb2_grpc as pb_grpc
from fedops.wire import PROTOCOL_VERSION, codec
from transfer_parts.common import (
    CHANNEL_OPTIONS,
    CHUNK_BYTES,
    HOST,
    RAW_SERVICE,
    RPC_TIMEOUT_S,
    STEP_TIMEOUT_S,
    identity_bytes,
    raw_chunks,
)


class Worker:
    """The client end of both paths; one per benchmark, driven over a pipe."""

    def __init__(self) -> None:
        self.channels: dict[int, grpc.Channel] = {}
        self.chunk = os.urandom(CHUNK_BYTES)
        self.session: Session | None = None
        self.buffer = bytearray()  # reused across downloads, as the agent does
        self.fedops_channel: grpc.Channel | None = None
        self.stub: pb_grpc.CoordinatorStub | None = None

    def channel(self, port: int) -> grpc.Channel:
        if port not in self.channels:
            channel = grpc.insecure_channel(f"{HOST}:{port}", options=CHANNEL_OPTIONS)
            grpc.channel_ready_future(channel).result(timeout=10)
            self.channels[port] = channel
        return self.channels[port]

    # -- raw ---------------------------------------------------------------
    def raw_up(self, port: int, nbytes: int) -> dict[str, float]:
        call = self.channel(port).stream_unary(
            f"/{RAW_SERVICE}/Up",
            request_serializer=identity_bytes,
            response_deserializer=identity_bytes,
        )
        c0, t0 = cpu_seconds(), time.perf_counter()
        reply = call(raw_chunks(nbytes, self.chunk), timeout=RPC_TIMEOUT_S)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        if int.from_bytes(reply, "little") != nbytes:
            raise RuntimeError(f"raw Up: server counted {reply!r}, sent {nbytes}")
        return {"up": elapsed, "client_cpu": cpu}

    def raw_down(self, port: int, nbytes: int) -> dict[str, float]:
        call = self.channel(port).unary_stream(
            f"/{RAW_SERVICE}/Down",
            request_serializer=identity_bytes,
            response_deserializer=identity_bytes,
        )
        c0, t0 = cpu_seconds(), time.perf_counter()
        received = 0
        for message in call(nbytes.to_bytes(8, "little"), timeout=RPC_TIMEOUT_S):
            received += len(message)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        if received != nbytes:
            raise RuntimeError(f"raw Down: received {received} of {nbytes} bytes")
        return {"down": elapsed, "client_cpu": cpu}

    # -- fedops ------------------------------------------------------------
    def fedops_register(self, port: int) -> dict[str, Any]:
        self.fedops_channel = self.channel(port)
        self.stub = pb_grpc.CoordinatorStub(self.fedops_channel)
        reply = self.stub.Register(
            pb.RegisterRequest(
                protocol_version=PROTOCOL_VERSION, site_name="bench", num_train_examples=1000
            ),
            timeout=10,
        )
        self.session = Session(
            node_id=reply.node_id,
            token=reply.token,
            run_id=reply.run_id,
            heartbeat_s=2.0,
            chunk_bytes=reply.max_chunk_bytes or codec.DEFAULT_CHUNK_BYTES,
        )
        return {"node_id": self.session.node_id}

    def fedops_round(self) -> dict[str, float]:
        """One FIT task, step for step what ``Agent._step`` does (training: identity)."""
        stub, session = self.stub, self.session
        assert stub is not None and session is not None
        task = stub.PullTask(
            pb.PullTaskRequest(node_id=session.node_id, token=session.token, wait_ms=10_000),
            timeout=30,
        )
        if task.kind != pb.TASK_KIND_FIT:
            raise RuntimeError(f"expected a FIT task, got {pb.TaskKind.Name(task.kind)}")

        # download and upload: the agent's own calls (training is the identity here)
        c0, t0 = cpu_seconds(), time.perf_counter()
        channel = self.fedops_channel
        assert channel is not None
        params, _ = fetch_model(channel, session, task, buffer=self.buffer)  # digest verified
        t1 = time.perf_counter()
        push_result(channel, session, task, params, 1000, {"loss": 0.5}, digest=False)
        t2 = time.perf_counter()
        return {"down": t1 - t0, "up": t2 - t1, "client_cpu": cpu_seconds() - c0}

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def worker_main(conn: Connection) -> None:
    """Serve commands from the driver until ``stop`` (or the pipe closes)."""
    worker = Worker()
    handlers: dict[str, Callable[..., dict[str, Any]]] = {
        "raw_up": worker.raw_up,
        "raw_down": worker.raw_down,
        "fedops_register": worker.fedops_register,
        "fedops_round": worker.fedops_round,
    }
    try:
        while conn.poll(600):
            command, args = conn.recv()
            if command == "stop":
                break
            try:
                conn.send(("ok", handlers[command](*args)))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        worker.close()
        conn.close()


class WorkerHandle:
    """Driver-side end of the pipe; every wait is bounded."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main, args=(child,), name="bench-client", daemon=True
        )
        self.process.start()
        child.close()

    def send(self, command: str, *args: Any) -> None:
        self.conn.send((command, args))

    def receive(self, timeout_s: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        if not self.conn.poll(timeout_s):
            raise TimeoutError(f"client process silent for {timeout_s:.0f} s")
        status, payload = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"client process: {payload}")
        return payload

    def call(self, command: str, *args: Any) -> dict[str, Any]:
        self.send(command, *args)
        return self.receive()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.send("stop")
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
