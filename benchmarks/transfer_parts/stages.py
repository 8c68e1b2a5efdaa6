"""Per-stage costs, in-process (no network): where fedops spends its transfer time."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import blake3
import numpy as np
from harness import best_time, print_table

from fedops.core.params import Params, TensorSpec, check_finite, check_specs_match, digest, specs_of
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec, framing
from transfer_parts.common import CHUNK_BYTES, MB, make_params, raw_chunks


@dataclass
class StageInputs:
    """What the stages start from, made before any is timed: a model of ``nbytes``, one
    2 MiB chunk of it (bare and as a protobuf message), the chunk sizes a transfer sends, a
    warm receive buffer, and the model as the receiver reassembled it."""

    nbytes: int
    params: Params
    specs: list[TensorSpec]
    sizes: list[int]
    chunk: bytes
    wire: bytes
    warm: np.ndarray
    model: Params


def stage_inputs(nbytes: int) -> StageInputs:
    params = make_params(nbytes, seed=1)
    specs = specs_of(params)
    chunk = next(codec.iter_chunks(params, CHUNK_BYTES))
    warm = np.empty(nbytes, dtype=np.uint8)
    warm.fill(0)  # fault its pages in once
    received = codec.Assembler(specs, max_bytes=nbytes)
    for data in codec.iter_chunks(params, CHUNK_BYTES):
        received.add(data)
    return StageInputs(
        nbytes=nbytes,
        params=params,
        specs=specs,
        sizes=[len(c) for c in raw_chunks(nbytes, b"x" * CHUNK_BYTES)],
        chunk=chunk,
        wire=pb.PushResultRequest(data=chunk).SerializeToString(),
        warm=warm,
        model=received.finish(),
    )


def chunk_stages(s: StageInputs) -> dict[str, Callable[[], None]]:
    """The per-chunk stages, each over the whole model's chunk count: chunk-level stages
    reuse one chunk so that they measure only their own copies, not the ones before them."""
    source = np.frombuffer(s.chunk, dtype=np.uint8)

    def memcpy() -> None:
        offset = 0
        for size in s.sizes:
            s.warm[offset : offset + size] = source[:size]
            offset += size

    def chunking() -> None:
        for _ in codec.iter_chunks(s.params, CHUNK_BYTES):
            pass

    def framed() -> None:
        for _ in codec.iter_chunks(s.params, CHUNK_BYTES, framed=True):
            pass

    def serialize() -> None:
        for _ in s.sizes:
            pb.PushResultRequest(data=s.chunk).SerializeToString()

    def unframe() -> None:
        for _ in s.sizes:
            framing.unframe_data(s.wire)

    def parse() -> None:
        for _ in s.sizes:
            _ = pb.PushResultRequest.FromString(s.wire).data

    def allocate() -> None:
        codec.Assembler(s.specs, max_bytes=s.nbytes)

    return {
        "memcpy": memcpy,
        "chunking": chunking,
        "framed": framed,
        "serialize": serialize,
        "unframe": unframe,
        "parse": parse,
        "allocate": allocate,
    }


def add_only(s: StageInputs) -> float:
    """Seconds of Assembler.add + finish alone, its buffer allocated before the clock starts."""
    assembler = codec.Assembler(s.specs, max_bytes=s.nbytes)
    t0 = time.perf_counter()
    for size in s.sizes:
        assembler.add(s.chunk if size == len(s.chunk) else s.chunk[:size])
    assembler.finish()
    return time.perf_counter() - t0


def stage_costs(nbytes: int, repeats: int) -> list[tuple[str, str, float]]:
    """(stage, where it runs, seconds) for one model of ``nbytes``, one thread, no network,
    each the best of ``repeats``."""
    s = stage_inputs(nbytes)
    f = chunk_stages(s)
    model = s.model

    def best(fn: Callable[[], object]) -> float:
        return best_time(fn, repeats)

    return [
        ("reference: memcpy of the payload into a warm buffer", "-", best(f["memcpy"])),
        ("codec.iter_chunks (one copy per chunk)", "sender", best(f["chunking"])),
        ("iter_chunks(framed=True): what is sent", "sender", best(f["framed"])),
        ("  vs protobuf wrap + SerializeToString", "(not used)", best(f["serialize"])),
        ("framing.unframe_data: what is received", "receiver", best(f["unframe"])),
        ("  vs protobuf FromString + .data", "(not used)", best(f["parse"])),
        ("Assembler(): np.empty(n), huge pages", "receiver", best(f["allocate"])),
        (
            "Assembler.add + finish (buffer allocated)",
            "receiver",
            min(add_only(s) for _ in range(repeats)),
        ),
        (
            "check_specs_match",
            "coordinator",
            best(lambda: check_specs_match(s.specs, specs_of(model))),
        ),
        ("check_finite (np.isfinite)", "coordinator", best(lambda: check_finite(model))),
        ("digest() = blake3 over little-endian views", "dispatch", best(lambda: digest(model))),
        (
            "  of which blake3 alone",
            "",
            best(lambda: [blake3.blake3(memoryview(a).cast("B")) for a in model.values()]),
        ),
        (
            "  vs sha256 (model digests before fedops.v1.4)",
            "(not used)",
            best(lambda: [hashlib.sha256(memoryview(a).cast("B")) for a in model.values()]),
        ),
    ]


def report_stages(nbytes: int, costs: list[tuple[str, str, float]]) -> None:
    print(
        f"\nPer-stage cost for {nbytes // MB} MB, in-process, one thread, no network "
        "(best of runs):\n"
    )
    rows = [
        [name, where, f"{seconds * 1000:.0f}", f"{nbytes / seconds / 1e9:.2f}"]
        for name, where, seconds in costs
    ]
    print_table(["stage", "runs on", "ms", "GB/s"], rows, "llrr")
