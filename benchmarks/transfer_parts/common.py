"""What both ends of the transfer benchmark share: sizes, limits, the raw chunks, the model."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fedops.core.params import Params, specs_of, total_bytes
from fedops.wire import codec

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


def identity_bytes(data: bytes) -> bytes:
    return data


def raw_chunks(nbytes: int, chunk: bytes) -> Iterator[bytes]:
    """``nbytes`` in pieces of ``len(chunk)``; one preallocated buffer, no copies."""
    full, rest = divmod(nbytes, len(chunk))
    for _ in range(full):
        yield chunk
    if rest:
        yield chunk[:rest]


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
