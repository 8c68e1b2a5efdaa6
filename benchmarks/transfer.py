"""Model transfer through the coordinator <-> client path, against raw gRPC.

Why this measures what it does
------------------------------
A federated round moves the whole model twice per client: the coordinator
streams it down (``FetchModel``) and the client streams its update back up
(``PushResult``). For models of hundreds of MB that transfer, not training,
can dominate a round, so the question is how much the fedops layer (protobuf
framing, ``fedops.wire.codec`` chunking/reassembly, digest and finiteness
checks) costs on top of what gRPC itself can move. The issue's goal is that
fedops reaches at least 0.7 of raw gRPC throughput.

Both paths run side by side in one invocation, on 127.0.0.1 only, with the
server in this process and the client in a separate (``spawn``) process, so
neither side shares a GIL with the other:

* **raw floor**: a minimal gRPC service with identity (bytes) serializers.
  ``Up`` is client-streaming, ``Down`` server-streaming; both move the same
  number of bytes in the same 2 MiB chunks as fedops, reusing one
  preallocated chunk, so they measure nothing but gRPC + loopback.
* **fedops path**: a real ``GrpcTransport`` served by ``build_server``. The
  client registers with the generated stub and long-polls ``PullTask``; the
  coordinator ``dispatch``-es a FIT task with a float32 model of the target
  size; the client downloads it exactly as ``fedops.client.agent`` does
  (``FetchModel`` + ``codec.Assembler`` + digest verification) and pushes it
  back exactly as the agent does (``ResultHeader`` + ``codec.iter_chunks``).
  The coordinator runs its full validation (specs match, reassembly,
  ``check_finite``) before answering, and the round trip ends when
  ``transport.next_event`` returns the ``ResultArrived`` event.

Throughput ratio = raw time / fedops time for the same bytes (>= 0.7 is the
goal). A third table times each fedops stage in-process, without a network,
to show where the extra time goes.

Run from the repository root: ``python benchmarks/transfer.py`` (defaults:
``--sizes 100 300 --repeats 3``; sizes in MB = 10**6 bytes).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
import numpy as np

from fedops.client.calls import Session, fetch_model, push_result
from fedops.coordinator.grpc_server import build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.core.params import (
    Params,
    check_finite,
    check_specs_match,
    digest,
    specs_of,
    total_bytes,
)
from fedops.core.results import FitResult
from fedops.core.rounds import Phase, ResultArrived
from fedops.runtime.transport import Instruction
from fedops.v1 import fedops_pb2 as pb
from fedops.v1 import fedops_pb2_grpc as pb_grpc
from fedops.wire import PROTOCOL_VERSION, codec, framing

MB = 1_000_000
CHUNK_BYTES = codec.DEFAULT_CHUNK_BYTES  # what the coordinator tells clients to use
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # same limit as the coordinator and the agent
HOST = "127.0.0.1"  # loopback only, on purpose
RAW_SERVICE = "bench.Raw"
RPC_TIMEOUT_S = 120.0  # any single RPC; 300 MB moves in seconds on loopback
STEP_TIMEOUT_S = 180.0  # the driver's wait for one worker step
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def _identity(data: bytes) -> bytes:
    return data


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads (gRPC's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------
# Raw gRPC floor (server side, in the driver process)
# ----------------------------------------------------------------------------
def _raw_chunks(nbytes: int, chunk: bytes) -> Iterator[bytes]:
    """``nbytes`` in pieces of ``len(chunk)``; one preallocated buffer, no copies."""
    full, rest = divmod(nbytes, len(chunk))
    for _ in range(full):
        yield chunk
    if rest:
        yield chunk[:rest]


def start_raw_server(chunk: bytes) -> tuple[grpc.Server, int]:
    def up(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        received = 0
        for request in requests:
            received += len(request)
        return received.to_bytes(8, "little")

    def down(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from _raw_chunks(int.from_bytes(request, "little"), chunk)

    handlers = {
        "Up": grpc.stream_unary_rpc_method_handler(
            up, request_deserializer=_identity, response_serializer=_identity
        ),
        "Down": grpc.unary_stream_rpc_method_handler(
            down, request_deserializer=_identity, response_serializer=_identity
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(RAW_SERVICE, handlers),))
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    return server, port


# ----------------------------------------------------------------------------
# Client side (runs in the spawned worker process)
# ----------------------------------------------------------------------------
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
            f"/{RAW_SERVICE}/Up", request_serializer=_identity, response_deserializer=_identity
        )
        c0, t0 = cpu_seconds(), time.perf_counter()
        reply = call(_raw_chunks(nbytes, self.chunk), timeout=RPC_TIMEOUT_S)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        if int.from_bytes(reply, "little") != nbytes:
            raise RuntimeError(f"raw Up: server counted {reply!r}, sent {nbytes}")
        return {"up": elapsed, "client_cpu": cpu}

    def raw_down(self, port: int, nbytes: int) -> dict[str, float]:
        call = self.channel(port).unary_stream(
            f"/{RAW_SERVICE}/Down", request_serializer=_identity, response_deserializer=_identity
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


# ----------------------------------------------------------------------------
# The model and the measurements
# ----------------------------------------------------------------------------
def make_params(nbytes: int, seed: int = 0) -> Params:
    """A float32 model of exactly ``nbytes`` (rounded down to 4): 4 big matrices + biases."""
    rng = np.random.default_rng(seed)
    floats = nbytes // 4
    biases = {f"layer{i}.bias": rng.standard_normal(1024, dtype=np.float32) for i in range(4)}
    left = floats - 4 * 1024
    params: Params = {}
    per_layer = left // 4
    for i in range(4):
        count = per_layer if i < 3 else left - 3 * per_layer
        rows, rest = divmod(count, 1024)
        params[f"layer{i}.weight"] = rng.standard_normal((rows, 1024), dtype=np.float32)
        params[f"layer{i}.bias"] = biases[f"layer{i}.bias"]
        if rest:
            params[f"layer{i}.extra"] = rng.standard_normal(rest, dtype=np.float32)
    assert total_bytes(specs_of(params)) == floats * 4
    return params


@dataclass
class Samples:
    """Seconds per repeat for each measured quantity."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **seconds: float) -> None:
        for key, value in seconds.items():
            self.values.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.values[key])


class Bench:
    """Raw server + fedops coordinator here, one client worker process, all on loopback."""

    def __init__(self) -> None:
        self.raw_server, self.raw_port = start_raw_server(os.urandom(CHUNK_BYTES))
        # Liveness: the bench client sends no heartbeats between rounds, so the
        # timeout is long; it has no effect on the timed calls.
        self.transport = GrpcTransport(run_id="bench", liveness_timeout_s=3600.0)
        self.server = build_server(self.transport)
        self.port = self.server.add_insecure_port(f"{HOST}:0")
        self.server.start()
        self.worker = WorkerHandle()
        self.node_id = self.worker.call("fedops_register", self.port)["node_id"]
        self.round = 0

    def raw(self, nbytes: int) -> dict[str, float]:
        c0 = cpu_seconds()
        down = self.worker.call("raw_down", self.raw_port, nbytes)
        up = self.worker.call("raw_up", self.raw_port, nbytes)
        return {
            "down": down["down"],
            "up": up["up"],
            "server_cpu": cpu_seconds() - c0,
            "client_cpu": down["client_cpu"] + up["client_cpu"],
        }

    def fedops(self, params: Params) -> dict[str, float]:
        self.round += 1
        self.worker.send("fedops_round")  # the client long-polls PullTask meanwhile
        c0, t0 = cpu_seconds(), time.perf_counter()
        self.transport.dispatch(
            self.round, [self.node_id], Instruction(phase=Phase.FIT, params=params)
        )
        t1 = time.perf_counter()
        deadline = t0 + STEP_TIMEOUT_S
        event, client = None, None
        while event is None:
            # short waits, so that a client that failed is reported at once
            event = self.transport.next_event(timeout_s=0.5)
            if event is None:
                if client is None and self.worker.conn.poll(0):
                    client = self.worker.receive()  # raises on the client's error
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"no result within {STEP_TIMEOUT_S:.0f} s")
        t2, c2 = time.perf_counter(), cpu_seconds()
        if not isinstance(event, ResultArrived) or not isinstance(event.result, FitResult):
            raise RuntimeError(f"expected ResultArrived, got {event!r}")
        if total_bytes(specs_of(event.result.params)) != total_bytes(specs_of(params)):
            raise RuntimeError("the pushed model does not match the dispatched one")
        del event
        if client is None:
            client = self.worker.receive()
        return {"dispatch": t1 - t0, "round_trip": t2 - t0, "server_cpu": c2 - c0, **client}

    def close(self) -> None:
        self.worker.stop()
        self.transport.close(grace_s=0)
        self.server.stop(grace=1).wait(5)
        self.raw_server.stop(grace=1).wait(5)


def run_transfers(bench: Bench, sizes_mb: list[int], repeats: int) -> dict[int, Samples]:
    # warm-up: connections, thread pools, first-call allocations
    warm = make_params(8 * MB)
    bench.raw(8 * MB)
    bench.fedops(warm)
    del warm
    results: dict[int, Samples] = {}
    for size in sizes_mb:
        nbytes = size * MB
        params = make_params(nbytes, seed=size)
        samples = Samples()
        for i in range(repeats):
            gc.collect()
            raw = bench.raw(nbytes)
            samples.add(**{f"raw_{k}": v for k, v in raw.items()})
            gc.collect()
            fed = bench.fedops(params)
            samples.add(**{f"fed_{k}": v for k, v in fed.items()})
            print(
                f"  {size} MB repeat {i + 1}/{repeats}: raw down {raw['down']:.2f} s "
                f"up {raw['up']:.2f} s | fedops down {fed['down']:.2f} s "
                f"up {fed['up']:.2f} s round trip {fed['round_trip']:.2f} s",
                flush=True,
            )
        results[size] = samples
        del params
    return results


# ----------------------------------------------------------------------------
# Per-stage costs, in-process (no network): where fedops spends its time
# ----------------------------------------------------------------------------
def _best(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls (seconds): the cost with the least noise."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def stage_costs(nbytes: int, repeats: int) -> list[tuple[str, str, float]]:
    """(stage, where it runs, seconds) for one model of ``nbytes``, one thread, no network.

    Each stage is isolated: chunk-level stages reuse one 2 MiB chunk so that
    they measure only their own copies, not the ones before them.
    """
    params = make_params(nbytes, seed=1)
    specs = specs_of(params)
    sizes = [len(c) for c in _raw_chunks(nbytes, b"x" * CHUNK_BYTES)]
    chunk = next(codec.iter_chunks(params, CHUNK_BYTES))
    wire = pb.PushResultRequest(data=chunk).SerializeToString()
    warm = np.empty(nbytes, dtype=np.uint8)
    warm.fill(0)  # fault its pages in once
    source = np.frombuffer(chunk, dtype=np.uint8)

    def memcpy() -> None:
        offset = 0
        for size in sizes:
            warm[offset : offset + size] = source[:size]
            offset += size

    def chunking() -> None:
        for _ in codec.iter_chunks(params, CHUNK_BYTES):
            pass

    def framed() -> None:
        for _ in codec.iter_chunks(params, CHUNK_BYTES, framed=True):
            pass

    def serialize() -> None:
        for _ in sizes:
            pb.PushResultRequest(data=chunk).SerializeToString()

    def unframe() -> None:
        for _ in sizes:
            framing.unframe_data(wire)

    def parse() -> None:
        for _ in sizes:
            _ = pb.PushResultRequest.FromString(wire).data

    def allocate() -> None:
        codec.Assembler(specs, max_bytes=nbytes)

    def add_only() -> float:
        assembler = codec.Assembler(specs, max_bytes=nbytes)
        t0 = time.perf_counter()
        for size in sizes:
            assembler.add(chunk if size == len(chunk) else chunk[:size])
        assembler.finish()
        return time.perf_counter() - t0

    received = codec.Assembler(specs, max_bytes=nbytes)
    for data in codec.iter_chunks(params, CHUNK_BYTES):
        received.add(data)
    model = received.finish()
    return [
        ("reference: memcpy of the payload into a warm buffer", "-", _best(memcpy, repeats)),
        ("codec.iter_chunks (one copy per chunk)", "sender", _best(chunking, repeats)),
        ("iter_chunks(framed=True): what is sent", "sender", _best(framed, repeats)),
        ("  vs protobuf wrap + SerializeToString", "(not used)", _best(serialize, repeats)),
        ("framing.unframe_data: what is received", "receiver", _best(unframe, repeats)),
        ("  vs protobuf FromString + .data", "(not used)", _best(parse, repeats)),
        ("Assembler(): np.empty(n), huge pages", "receiver", _best(allocate, repeats)),
        (
            "Assembler.add + finish (buffer allocated)",
            "receiver",
            min(add_only() for _ in range(repeats)),
        ),
        (
            "check_specs_match",
            "coordinator",
            _best(lambda: check_specs_match(specs, specs_of(model)), repeats),
        ),
        ("check_finite (np.isfinite)", "coordinator", _best(lambda: check_finite(model), repeats)),
        (
            "digest() = sha256 over little-endian views",
            "dispatch",
            _best(lambda: digest(model), repeats),
        ),
        (
            "  of which sha256 alone",
            "",
            _best(
                lambda: [hashlib.sha256(memoryview(a).cast("B")) for a in model.values()], repeats
            ),
        ),
    ]


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------
def _rate(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds


def report(results: dict[int, Samples], repeats: int) -> None:
    print(
        f"\nThroughput, median of {repeats} (MB/s, 1 MB = 10^6 bytes; ratio = fedops/raw "
        "throughput = raw time / fedops time):\n"
    )
    print(
        "| size | raw down | fedops down (verified) | ratio down | raw up | fedops up "
        "| ratio up | round trip (s) | raw down+up (s) | ratio round trip |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, s in results.items():
        n = size * MB
        rd, fd = s.median("raw_down"), s.median("fed_down")
        ru, fu = s.median("raw_up"), s.median("fed_up")
        rt, raw_rt = s.median("fed_round_trip"), rd + ru
        print(
            f"| {size} MB | {_rate(n, rd):.0f} | {_rate(n, fd):.0f} | {rd / fd:.2f} "
            f"| {_rate(n, ru):.0f} | {_rate(n, fu):.0f} | {ru / fu:.2f} "
            f"| {rt:.2f} | {raw_rt:.2f} | {raw_rt / rt:.2f} |"
        )

    print(
        "\nCPU seconds, median, down + up together (server = this process: raw server "
        "or coordinator incl. dispatch; client = the worker process):\n"
    )
    print("| size | raw server | raw client | fedops coordinator | fedops client |")
    print("|---:|---:|---:|---:|---:|")
    for size, s in results.items():
        print(
            f"| {size} MB | {s.median('raw_server_cpu'):.2f} | {s.median('raw_client_cpu'):.2f} "
            f"| {s.median('fed_server_cpu'):.2f} | {s.median('fed_client_cpu'):.2f} |"
        )
    print(
        "\ndown = the agent's fetch_model: FetchModel + Assembler into a reused buffer, "
        "sha256 verified while the chunks arrive; up = the agent's push_result until the "
        "coordinator accepted it (specs match, reassembly, check_finite); round trip = "
        "dispatch() (model digest) -> ResultArrived."
    )


def report_stages(nbytes: int, costs: list[tuple[str, str, float]]) -> None:
    print(
        f"\nPer-stage cost for {nbytes // MB} MB, in-process, one thread, no network "
        "(best of runs):\n"
    )
    print("| stage | runs on | ms | GB/s |")
    print("|---|---|---:|---:|")
    for name, where, seconds in costs:
        print(f"| {name} | {where} | {seconds * 1000:.0f} | {nbytes / seconds / 1e9:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100, 300],
        help="model sizes in MB (10**6 bytes); default: 100 300",
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats per size (median)")
    parser.add_argument(
        "--no-stages", action="store_true", help="skip the in-process per-stage cost table"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or any(s < 1 or s > 2000 for s in args.sizes):
        parser.error("--repeats must be >= 1 and each size in 1..2000 MB")

    print(
        f"python {platform.python_version()}, grpcio {grpc.__version__}, numpy "
        f"{np.__version__}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"{platform.machine()} {platform.system()}; chunk {CHUNK_BYTES} bytes; "
        f"loopback {HOST}",
        flush=True,
    )
    bench = Bench()
    try:
        results = run_transfers(bench, args.sizes, args.repeats)
    finally:
        bench.close()
    report(results, args.repeats)
    if not args.no_stages:
        size = max(args.sizes) * MB
        report_stages(size, stage_costs(size, repeats=max(2, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
