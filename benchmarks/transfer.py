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

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
from harness import cpu_seconds, make_parser, print_table
from transfer_parts.common import (
    CHANNEL_OPTIONS,
    CHUNK_BYTES,
    HOST,
    MB,
    RAW_SERVICE,
    STEP_TIMEOUT_S,
    identity_bytes,
    make_params,
    raw_chunks,
)
from transfer_parts.stages import report_stages, stage_costs
from transfer_parts.worker import WorkerHandle

from fedops.coordinator.grpc_server import build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.core.params import Params, specs_of, total_bytes
from fedops.core.results import FitResult
from fedops.core.rounds import Phase, ResultArrived
from fedops.runtime.transport import Instruction


# ----------------------------------------------------------------------------
# Raw gRPC floor (server side, in the driver process)
# ----------------------------------------------------------------------------
def start_raw_server(chunk: bytes) -> tuple[grpc.Server, int]:
    def up(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        received = 0
        for request in requests:
            received += len(request)
        return received.to_bytes(8, "little")

    def down(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from raw_chunks(int.from_bytes(request, "little"), chunk)

    handlers = {
        "Up": grpc.stream_unary_rpc_method_handler(
            up, request_deserializer=identity_bytes, response_serializer=identity_bytes
        ),
        "Down": grpc.unary_stream_rpc_method_handler(
            down, request_deserializer=identity_bytes, response_serializer=identity_bytes
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(RAW_SERVICE, handlers),))
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    return server, port


# ----------------------------------------------------------------------------
# The measurements
# ----------------------------------------------------------------------------
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
# Report
# ----------------------------------------------------------------------------
def _rate(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds


def throughput_row(size: int, s: Samples) -> list[str]:
    n = size * MB
    rd, fd = s.median("raw_down"), s.median("fed_down")
    ru, fu = s.median("raw_up"), s.median("fed_up")
    rt, raw_rt = s.median("fed_round_trip"), rd + ru
    return [
        f"{size} MB",
        f"{_rate(n, rd):.0f}",
        f"{_rate(n, fd):.0f}",
        f"{rd / fd:.2f}",
        f"{_rate(n, ru):.0f}",
        f"{_rate(n, fu):.0f}",
        f"{ru / fu:.2f}",
        f"{rt:.2f}",
        f"{raw_rt:.2f}",
        f"{raw_rt / rt:.2f}",
    ]


def report(results: dict[int, Samples], repeats: int) -> None:
    print(
        f"\nThroughput, median of {repeats} (MB/s, 1 MB = 10^6 bytes; ratio = fedops/raw "
        "throughput = raw time / fedops time):\n"
    )
    header = ["size", "raw down", "fedops down (verified)", "ratio down", "raw up", "fedops up"]
    header += ["ratio up", "round trip (s)", "raw down+up (s)", "ratio round trip"]
    print_table(header, [throughput_row(size, s) for size, s in results.items()])
    print(
        "\nCPU seconds, median, down + up together (server = this process: raw server "
        "or coordinator incl. dispatch; client = the worker process):\n"
    )
    cpu = ("raw_server_cpu", "raw_client_cpu", "fed_server_cpu", "fed_client_cpu")
    print_table(
        ["size", "raw server", "raw client", "fedops coordinator", "fedops client"],
        [[f"{size} MB"] + [f"{s.median(k):.2f}" for k in cpu] for size, s in results.items()],
    )
    print(
        "\ndown = the agent's fetch_model: FetchModel + Assembler into a reused buffer, "
        "its BLAKE3 digest verified while the chunks arrive; up = the agent's push_result "
        "until the coordinator accepted it (specs match, reassembly, check_finite); round trip = "
        "dispatch() (model digest) -> ResultArrived."
    )


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
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
