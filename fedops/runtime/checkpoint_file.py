"""A checkpoint file: the model (in its order) and the strategy's state, as safetensors.

Split from :mod:`fedops.runtime.store`, which decides when checkpoints are written,
verified and pruned; this module only says how one file is laid out and read. Raw
tensors with a JSON header, never pickle: the model's tensor order in the metadata
(safetensors sorts by name), the writing strategy's name, and its server state
under :data:`STATE_PREFIX`, outside the model's digest and its export.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save_file

from fedops.core.params import Params

__all__ = [
    "STATE_PREFIX",
    "Checkpoint",
    "decode_checkpoint",
    "file_sha256",
    "read_checkpoint",
    "safetensors_header",
    "write_safetensors",
]


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], meta: dict[str, str]) -> None:
    """Write, fsync and rename into place: a crash leaves the old file or the new one."""
    tmp = path.with_suffix(".tmp")
    # np.require keeps 0-d tensors 0-d (ascontiguousarray would make them 1-d); safetensors
    # sorts tensors by name, so the metadata keeps the model's order
    save_file({k: np.require(v, requirements="C") for k, v in tensors.items()}, str(tmp), meta)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


#: where a checkpoint keeps the strategy's own state (FedAdam's moments): beside the model,
#: under the sha256 the round commits, outside the model's digest and its export
STATE_PREFIX = "strategy_state/"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint's contents: the model, and the state of the strategy that wrote it."""

    params: Params
    strategy_state: dict[str, np.ndarray]
    strategy: str  # the strategy's registry name ("" in checkpoints from before it was kept)


def safetensors_header(data: bytes) -> dict[str, Any]:
    """A safetensors file's header: every tensor's entry, and ``__metadata__``."""
    (size,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + size])
    return header


def decode_checkpoint(data: bytes) -> Checkpoint:
    """The model (in its order) and the strategy state of a safetensors checkpoint's bytes."""
    meta = safetensors_header(data).get("__metadata__") or {}
    tensors = load_safetensors(data)
    if "order" in meta:
        names = json.loads(meta["order"])
    else:
        names = [k for k in tensors if not k.startswith(STATE_PREFIX)]
    state = {k[len(STATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    return Checkpoint(
        params={name: tensors[name] for name in names},
        strategy_state=state,
        strategy=str(meta.get("strategy", "")),
    )


#: the name of every checkpoint file a run store writes (``round-00007.safetensors``)
CHECKPOINT_NAME = re.compile(r"round-\d{5,9}\.safetensors")


def checkpoint_in(folder: Path, name: object) -> Path | None:
    """The checkpoint file a store's row names, if it is a name the store writes. A row
    edited to hold a BLOB, ``../audit.jsonl`` or any other file names nothing to read,
    set aside or delete."""
    if isinstance(name, str) and CHECKPOINT_NAME.fullmatch(name):
        return folder / name
    return None


#: the most a safetensors header may take: names, dtypes, shapes and offsets of every tensor
MAX_HEADER_BYTES = 100 << 20


def read_safetensors_file(path: Path) -> bytes:
    """A safetensors file's bytes, read only if it is a regular file exactly as long as its
    header says: a FIFO, a device (``/dev/zero``) or a sparse file far longer than its
    header would otherwise hang the reader or fill its memory. One open file is checked and
    read, so it cannot be swapped in between. ``ValueError`` says what is wrong."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError("not a regular file")
        size = status.st_size
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes: too short for a safetensors header")
        (header_bytes,) = struct.unpack("<Q", head)
        if header_bytes > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"a header of {header_bytes} bytes in a file of {size}")
        header = f.read(header_bytes)
        entries = json.loads(header)
        if not isinstance(entries, dict):
            raise ValueError("the header is not a JSON object")
        try:
            ends = [
                int(e["data_offsets"][1])
                for k, e in entries.items()
                if k != "__metadata__" and isinstance(e, dict) and "data_offsets" in e
            ]
        except (TypeError, IndexError, KeyError) as exc:
            raise ValueError(f"a tensor's data_offsets in the header: {exc!r}") from None
        expected = 8 + header_bytes + max(ends, default=0)
        if expected != size:
            raise ValueError(f"its header describes {expected} bytes, the file holds {size}")
        return head + header + f.read(size - 8 - header_bytes)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a checkpoint file as written (checked before it is decoded)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: Path) -> Params:
    """Named arrays of a safetensors checkpoint, in the model's order."""
    return decode_checkpoint(path.read_bytes()).params
