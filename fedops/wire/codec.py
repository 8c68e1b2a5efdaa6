"""Arrays <-> bytes for the wire: raw little-endian bytes plus dtype and shape.

This is the only place that turns parameters into bytes and back. Nothing is
pickled: a peer can at worst send bytes that fail these checks, never code.
Large payloads are cut into chunks (a few MiB) so a model of hundreds of MB
passes gRPC's per-message limit, and are reassembled into one preallocated
buffer without intermediate copies.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fedops.core.params import (
    ALLOWED_DTYPES,
    InvalidUpdate,
    Params,
    TensorSpec,
    le_bytes,
    model_hasher,
    non_finite,
    total_bytes,
)
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import framing

DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024
MAX_TENSORS = 100_000
MAX_DIMS = 32  # numpy's limit is 64; no model tensor needs more than a handful
MAX_ELEMENTS = 1 << 40  # per tensor (the byte limits of each call are far smaller)


def specs_to_proto(specs: Sequence[TensorSpec]) -> list[pb.TensorSpec]:
    return [pb.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape)) for s in specs]


def specs_from_proto(messages: Sequence[pb.TensorSpec]) -> list[TensorSpec]:
    """Validate and convert specs received from a peer."""
    if len(messages) > MAX_TENSORS:
        raise InvalidUpdate(f"{len(messages)} tensors declared; the limit is {MAX_TENSORS}")
    specs = []
    for msg in messages:
        name = shown(msg.name)
        if msg.dtype not in ALLOWED_DTYPES:
            raise InvalidUpdate(f"tensor {name} has unsupported dtype {shown(msg.dtype)}")
        if len(msg.shape) > MAX_DIMS:
            raise InvalidUpdate(f"tensor {name} has {len(msg.shape)} dimensions (most: {MAX_DIMS})")
        if any(d < 0 for d in msg.shape):
            shape = list(msg.shape[:8]) + (["…"] if len(msg.shape) > 8 else [])
            raise InvalidUpdate(f"tensor {name} has a negative dimension {shape}")
        # every dimension counts, zeros aside: numpy cannot build [0, 2**62] either
        if math.prod(max(d, 1) for d in msg.shape) > MAX_ELEMENTS:
            raise InvalidUpdate(f"tensor {name} declares more than {MAX_ELEMENTS} elements")
        specs.append(TensorSpec(name=msg.name, dtype=msg.dtype, shape=tuple(msg.shape)))
    return specs


def shown(value: str, limit: int = 64) -> str:
    """A peer's string as it may appear in a refusal or a log: quoted, its newlines, control
    characters and terminal escapes escaped (as ``repr`` escapes them: it can forge no log
    line), and at most ``limit`` characters of it, escapes counted, then its length."""
    head = value[:limit]
    quoted = repr(head)
    if len(quoted) > limit + 2:  # escapes lengthened it: keep the characters that fit
        head = head[: _fitting(head, limit)]
        quoted = repr(head)
    return quoted if len(head) == len(value) else f"{quoted}… ({len(value)} chars)"


def loggable(text: str, limit: int = 2000) -> str:
    """Text that holds a peer's words, as a log, the audit log or a refusal may take it:
    unchanged when it is printable and at most ``limit`` long, else :func:`shown`."""
    return text if len(text) <= limit and text.isprintable() else shown(text, limit)


def _fitting(text: str, width: int) -> int:
    """How many of ``text``'s leading characters ``repr`` writes in ``width`` characters."""
    used = 0
    for count, char in enumerate(text):
        used += 2 if char in "'\"\\" else len(repr(char)) - 2
        if used > width:
            return count
    return len(text)


def _wire_dtype(dtype: str) -> np.dtype:
    return np.dtype(dtype).newbyteorder("<")


#: Threads that hash for every PayloadHasher in the process; each hasher's chunks are
#: hashed in order by one of them at a time, so uploads arriving together hash in parallel.
_HASH_POOL = ThreadPoolExecutor(
    max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="fedops-hash"
)


class PayloadHasher:
    """The model digest of a payload, hashed beside the transfer as chunks go by.

    Even BLAKE3 (about 8 GB/s on one core here) costs a fifth of a loopback
    transfer's time; it releases the GIL, so hashing on a helper thread instead
    of inline keeps verification off the transfer's critical path. The chunks queue here and
    one pool thread at a time drains them in order; the pool's threads are
    long-lived, so an abandoned hasher leaves nothing running.
    """

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self._hash = model_hasher(specs)
        self._lock = threading.Lock()
        self._queue: deque[bytes | memoryview] = deque()
        self._idle = threading.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self._cancelled = False

    def update(self, chunk: bytes | memoryview) -> None:
        """Queue ``chunk``; it must stay unchanged until :meth:`hexdigest` returns."""
        with self._lock:
            if self._cancelled:
                return  # nobody will ask for this digest
            self._queue.append(chunk)
            if not self._idle.is_set():
                return  # a drain is running and will take it
            self._idle.clear()
        _HASH_POOL.submit(self._drain)

    def _drain(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        self._idle.set()  # under the lock: update() then starts a new drain
                        return
                    chunk = self._queue.popleft()
                self._hash.update(chunk)
        except BaseException as exc:  # handed to hexdigest, never lost on the pool
            self._error = exc
            self._idle.set()

    def cancel(self) -> None:
        """Drop the chunks not hashed yet and take no more: for a payload that was refused
        or cut off. The chunk being hashed finishes; then no thread works for this hasher,
        it holds no chunk, and :meth:`hexdigest` refuses."""
        with self._lock:
            self._cancelled = True
            self._queue.clear()

    def hexdigest(self) -> str:
        """The digest of every chunk given so far (waits for the queued ones)."""
        self._idle.wait()
        if self._error is not None:
            raise self._error
        if self._cancelled:
            raise RuntimeError("this payload's hashing was cancelled")
        return self._hash.hexdigest()


def payload_hasher(specs: Sequence[TensorSpec]) -> PayloadHasher:
    """A hasher for a payload of ``specs``; feed it the chunks to get the model digest."""
    return PayloadHasher(specs)


def iter_chunks(
    params: Mapping[str, np.ndarray],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    *,
    hasher: PayloadHasher | None = None,
    framed: bool = False,
) -> Iterator[bytes]:
    """Yield the concatenated tensor bytes in pieces of ``chunk_bytes`` (last one shorter).

    With ``hasher`` (from :func:`payload_hasher`), each chunk is hashed as it
    is sent, giving the model digest without a second pass. With ``framed``,
    each piece comes as a serialized ``{data: piece}`` message
    (:mod:`fedops.wire.framing`), built in the same single copy.
    """
    for pieces in _pieces(params, chunk_bytes):
        if hasher is not None:
            for piece in pieces:
                hasher.update(piece)
        if framed:
            yield framing.frame_pieces(pieces)
        else:
            yield pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)


def _pieces(params: Mapping[str, np.ndarray], chunk_bytes: int) -> Iterator[list[memoryview]]:
    """Views into the arrays, grouped into chunks of ``chunk_bytes`` (no copying)."""
    pending: list[memoryview] = []
    pending_len = 0
    for arr in params.values():
        view = le_bytes(arr)
        offset = 0
        while offset < len(view):
            take = min(chunk_bytes - pending_len, len(view) - offset)
            pending.append(view[offset : offset + take])
            pending_len += take
            offset += take
            if pending_len == chunk_bytes:
                yield pending
                pending, pending_len = [], 0
    if pending_len:
        yield pending


class Assembler:
    """Collects chunks for declared specs into one buffer; refuses any excess.

    Every chunk is copied once, straight into place; with a ``hasher`` the model
    digest (:func:`fedops.core.params.digest`) and with ``finite`` the NaN/Inf
    check run on each chunk as it arrives, so neither needs a second pass over
    the model once it is complete.

    Args:
        specs: the tensors the sender declared (already validated).
        max_bytes: the most this receiver accepts; larger declarations fail
            before a byte is buffered.
        buffer: optional buffer to fill (a reused ``bytearray``, grown when too
            small, or a flat ``uint8`` array of at least the payload's size); the
            arrays returned by :meth:`finish` are views into it, valid until it is
            reused. Reuse spares the page faults of a fresh allocation.
        hasher: optional :class:`PayloadHasher` fed every chunk (from the buffer).
        finite: count NaN/Inf in floating tensors as chunks arrive; :meth:`finish`
            then refuses as :func:`fedops.core.params.check_finite` does.
    """

    def __init__(
        self,
        specs: Sequence[TensorSpec],
        *,
        max_bytes: int,
        buffer: bytearray | np.ndarray | None = None,
        hasher: PayloadHasher | None = None,
        finite: bool = False,
    ) -> None:
        self.specs = list(specs)
        self.expected = total_bytes(self.specs)
        if self.expected > max_bytes:
            raise InvalidUpdate(
                f"payload of {self.expected} bytes declared; at most {max_bytes} are accepted"
            )
        self._buf = _receive_view(buffer, self.expected)
        self._filled = 0
        self._hasher = hasher
        self._finite = FiniteCheck(self.specs, self._buf) if finite else None

    def add(self, chunk: bytes | memoryview) -> None:
        start, end = self._filled, self._filled + len(chunk)
        if end > self.expected:
            raise InvalidUpdate(
                f"payload exceeds its declared size: more than {self.expected} bytes received"
            )
        self._buf[start:end] = chunk
        self._filled = end
        if self._hasher is not None and end > start:
            self._hasher.update(self._buf[start:end])
        if self._finite is not None:
            self._finite.advance(end)

    def finish(self) -> Params:
        if self._filled != self.expected:
            raise InvalidUpdate(
                f"payload truncated: {self._filled} of {self.expected} declared bytes received"
            )
        if self._finite is not None:
            self._finite.check()
        return decode(self.specs, self._buf)

    def cancel(self) -> None:
        """The payload is abandoned (refused, cut off): its hashing stops at once."""
        if self._hasher is not None:
            self._hasher.cancel()

    def digest(self) -> str:
        """The model digest (needs a ``hasher``; call after :meth:`finish`)."""
        if self._hasher is None:
            raise ValueError("this Assembler was created without a hasher")
        return self._hasher.hexdigest()


def _receive_view(buffer: bytearray | np.ndarray | None, nbytes: int) -> memoryview:
    """``nbytes`` of ``buffer`` (or of a fresh allocation) as a flat byte view."""
    if buffer is None:
        # numpy's large allocations get transparent huge pages: filling a fresh
        # 300 MB bytearray page-faults about 5x longer than this.
        return np.empty(nbytes, dtype=np.uint8).data.cast("B")
    if isinstance(buffer, np.ndarray):
        if buffer.dtype != np.uint8 or buffer.ndim != 1 or len(buffer) < nbytes:
            raise ValueError(f"a receive buffer must be flat uint8 of at least {nbytes} bytes")
        return buffer.data.cast("B")[:nbytes]
    if len(buffer) < nbytes:
        buffer.extend(bytes(nbytes - len(buffer)))
    return memoryview(buffer)[:nbytes]


class FiniteCheck:
    """NaN/Inf counted per floating tensor while a payload fills ``buffer`` in order.

    Each call to :meth:`advance` looks only at the whole elements received since
    the last one (a chunk may end inside an element; its bytes wait for the next
    chunk), while they are still in cache.
    """

    def __init__(self, specs: Sequence[TensorSpec], buffer: memoryview) -> None:
        self._specs = list(specs)
        self._buf = buffer
        self._ends: list[int] = []
        end = 0
        for spec in self._specs:
            end += spec.nbytes
            self._ends.append(end)
        self._bad = [0] * len(self._specs)
        self._tensor = 0  # the first tensor not yet fully checked
        self._checked = 0  # bytes checked (or skipped: not floating) so far

    def advance(self, filled: int) -> None:
        """Check what lies between the last position and ``filled`` bytes."""
        while self._tensor < len(self._specs) and self._checked < filled:
            spec, end = self._specs[self._tensor], self._ends[self._tensor]
            upto = min(end, filled)
            wire = _wire_dtype(spec.dtype)
            if wire.kind == "f":
                count = (upto - self._checked) // wire.itemsize
                if count:
                    part = np.frombuffer(self._buf, dtype=wire, count=count, offset=self._checked)
                    self._bad[self._tensor] += count - int(np.count_nonzero(np.isfinite(part)))
                self._checked += count * wire.itemsize
            else:
                self._checked = upto
            if self._checked < end:
                return  # the rest of this tensor is still to come
            self._tensor += 1

    def check(self) -> None:
        """Refuse the first tensor with NaN/Inf, as :func:`~fedops.core.params.check_finite`."""
        for spec, bad in zip(self._specs, self._bad, strict=True):
            if bad:
                raise non_finite(spec.name, bad)


def decode(specs: Sequence[TensorSpec], buffer: bytes | bytearray | memoryview) -> Params:
    """Views into ``buffer`` as named arrays (native byte order)."""
    if len(buffer) != total_bytes(specs):
        raise InvalidUpdate(f"payload is {len(buffer)} bytes; the specs need {total_bytes(specs)}")
    out: Params = {}
    offset = 0
    for spec in specs:
        wire = _wire_dtype(spec.dtype)
        count = math.prod(spec.shape)
        arr = np.frombuffer(buffer, dtype=wire, count=count, offset=offset).reshape(spec.shape)
        out[spec.name] = arr if wire.isnative else arr.astype(np.dtype(spec.dtype))
        offset += spec.nbytes
    return out
