"""The workload both frameworks aggregate, and how a fedops reply's bytes are measured."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

POOL = 4  # distinct client updates, reused round-robin
SIZE_SAMPLE = 5  # clients whose replies are measured for (c)
CLIENT_STAGES = ("advertise", "share", "encode", "mask", "consistency", "unmask")
SERVER_STAGES = ("keys", "shares", "masked", "consistency", "reveal", "finish")
FLOWER_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")


@dataclass
class Workload:
    """n clients' start and trained parameters, and their example counts."""

    n: int
    d: int
    start: dict[str, np.ndarray]
    trained: list[dict[str, np.ndarray]]  # POOL variants; client i uses trained[i % POOL]
    weights: dict[int, int]

    def trained_for(self, i: int) -> dict[str, np.ndarray]:
        return self.trained[i % POOL]

    def expected_mean(self, clients: list[int] | tuple[int, ...]) -> np.ndarray:
        """start + example-weighted mean update of ``clients``, flattened (float64)."""
        start = flat(self.start)
        acc = np.zeros_like(start)
        for j in range(POOL):
            w = sum(self.weights[i] for i in clients if i % POOL == j)
            if w:
                acc += w * (flat(self.trained[j]) - start)
        return start + acc / sum(self.weights[i] for i in clients)


def flat(params: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in params.values()])


def make_workload(n: int, d: int, seed: int = 0) -> Workload:
    """A d-parameter model (weight rows x 100, plus a bias): start in [-0.5, 0.5], updates ~0.01."""
    rows = max((d - 100) // 100, 1)
    shapes = {"fc.weight": (rows, 100), "fc.bias": (d - rows * 100,)}
    rng = np.random.default_rng(seed)
    start = {
        k: np.clip(rng.normal(0, 0.1, s), -0.5, 0.5).astype(np.float32) for k, s in shapes.items()
    }
    trained = [
        {k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32) for k, v in start.items()}
        for _ in range(POOL)
    ]
    weights = {i: 10 + i % 7 for i in range(1, n + 1)}
    return Workload(n=n, d=d, start=start, trained=trained, weights=weights)


def pick_dropped(n: int, fraction: float, seed: int = 1) -> frozenset[int]:
    count = round(n * fraction)
    rng = np.random.default_rng(seed)
    return frozenset(int(x) + 1 for x in rng.choice(n, size=count, replace=False))


def mem_available_bytes() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def _computed_size(reply: Any) -> int:
    """Bytes of a fedops reply from its dataclass fields (4 bytes per integer)."""
    from fedops.core.secagg.messages import MaskedInput, PublicKeys, Reveal, ShareKeys

    if isinstance(reply, PublicKeys):
        return (
            4
            + len(reply.cipher_key)
            + len(reply.mask_key)
            + 4
            + len(reply.identity)
            + len(reply.signature)
        )
    if isinstance(reply, ShareKeys):
        return sum(8 + len(s.ciphertext) for s in reply.shares) + len(reply.commitment)
    if isinstance(reply, MaskedInput):
        return reply.vector.nbytes + 4 * len(reply.complaints)
    if isinstance(reply, Reveal):
        return sum(4 + len(s) for _, s in reply.self_mask + reply.mask_key)
    raise TypeError(type(reply))


def reply_sizer() -> tuple[Callable[[Any], int], str]:
    """Measure with fedops' protobuf mapping if it works here, else compute from fields."""
    try:
        from fedops.core.secagg.messages import PublicKeys
        from fedops.v1 import fedops_pb2 as pb
        from fedops.wire.secagg import reply_to_proto

        def proto_size(reply: Any) -> int:
            header, payload = reply_to_proto(reply)
            size = header.ByteSize()
            for name, arr in payload.items():
                spec = pb.TensorSpec(name=name, dtype=str(arr.dtype), shape=list(arr.shape))
                size += spec.ByteSize() + arr.nbytes
            return size

        proto_size(PublicKeys(index=1, cipher_key=bytes(32), mask_key=bytes(32), num_examples=1))
        return proto_size, "protobuf (fedops.wire.secagg.reply_to_proto; ByteSize + raw tensor)"
    except Exception as exc:  # the wire module is optional here; say why it was not used
        why = f"{type(exc).__name__}: {exc}"
        return _computed_size, f"computed from the dataclass fields (protobuf unavailable: {why})"
