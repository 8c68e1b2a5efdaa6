"""Arrays <-> bytes for the wire: raw little-endian bytes plus dtype and shape.

This is the only place that turns parameters into bytes and back. Nothing is
pickled: a peer can at worst send bytes that fail these checks, never code.
Large payloads are cut into chunks (a few MiB) so a model of hundreds of MB
passes gRPC's per-message limit, and are reassembled into one preallocated
buffer without intermediate copies.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from fedops.core.params import ALLOWED_DTYPES, InvalidUpdate, Params, TensorSpec, total_bytes
from fedops.v1 import fedops_pb2 as pb

DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024
MAX_TENSORS = 100_000


def specs_to_proto(specs: Sequence[TensorSpec]) -> list[pb.TensorSpec]:
    return [pb.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape)) for s in specs]


def specs_from_proto(messages: Sequence[pb.TensorSpec]) -> list[TensorSpec]:
    """Validate and convert specs received from a peer."""
    if len(messages) > MAX_TENSORS:
        raise InvalidUpdate(f"{len(messages)} tensors declared; the limit is {MAX_TENSORS}")
    specs = []
    for msg in messages:
        if msg.dtype not in ALLOWED_DTYPES:
            raise InvalidUpdate(f"tensor {msg.name!r} has unsupported dtype {msg.dtype!r}")
        if any(d < 0 for d in msg.shape):
            raise InvalidUpdate(f"tensor {msg.name!r} has a negative dimension {list(msg.shape)}")
        specs.append(TensorSpec(name=msg.name, dtype=msg.dtype, shape=tuple(msg.shape)))
    return specs


def _wire_dtype(dtype: str) -> np.dtype:
    return np.dtype(dtype).newbyteorder("<")


def iter_chunks(
    params: Mapping[str, np.ndarray], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """Yield the concatenated tensor bytes in pieces of ``chunk_bytes`` (last one shorter)."""
    pending: list[memoryview] = []
    pending_len = 0
    for arr in params.values():
        contiguous = np.ascontiguousarray(arr, dtype=_wire_dtype(arr.dtype.name))
        view = memoryview(contiguous).cast("B") if contiguous.nbytes else memoryview(b"")
        offset = 0
        while offset < len(view):
            take = min(chunk_bytes - pending_len, len(view) - offset)
            pending.append(view[offset : offset + take])
            pending_len += take
            offset += take
            if pending_len == chunk_bytes:
                yield pending[0].tobytes() if len(pending) == 1 else b"".join(pending)
                pending, pending_len = [], 0
    if pending_len:
        yield b"".join(pending)


class Assembler:
    """Collects chunks for declared specs into one buffer; refuses any excess.

    Args:
        specs: the tensors the sender declared (already validated).
        max_bytes: the most this receiver accepts; larger declarations fail
            before a byte is buffered.
    """

    def __init__(self, specs: Sequence[TensorSpec], *, max_bytes: int) -> None:
        self.specs = list(specs)
        self.expected = total_bytes(self.specs)
        if self.expected > max_bytes:
            raise InvalidUpdate(
                f"payload of {self.expected} bytes declared; at most {max_bytes} are accepted"
            )
        self._buf = bytearray(self.expected)
        self._filled = 0

    def add(self, chunk: bytes) -> None:
        end = self._filled + len(chunk)
        if end > self.expected:
            raise InvalidUpdate(
                f"payload exceeds its declared size: more than {self.expected} bytes received"
            )
        self._buf[self._filled : end] = chunk
        self._filled = end

    def finish(self) -> Params:
        if self._filled != self.expected:
            raise InvalidUpdate(
                f"payload truncated: {self._filled} of {self.expected} declared bytes received"
            )
        return decode(self.specs, self._buf)


def decode(specs: Sequence[TensorSpec], buffer: bytes | bytearray | memoryview) -> Params:
    """Views into ``buffer`` as named arrays (native byte order)."""
    if len(buffer) != total_bytes(specs):
        raise InvalidUpdate(f"payload is {len(buffer)} bytes; the specs need {total_bytes(specs)}")
    out: Params = {}
    offset = 0
    for spec in specs:
        wire = _wire_dtype(spec.dtype)
        count = int(np.prod(spec.shape, dtype=np.int64))
        arr = np.frombuffer(buffer, dtype=wire, count=count, offset=offset).reshape(spec.shape)
        out[spec.name] = arr if wire.isnative else arr.astype(np.dtype(spec.dtype))
        offset += spec.nbytes
    return out
