"""Zero-parse framing for the payload chunks of the two streaming calls.

A ``ModelChunk{data}`` or ``PushResultRequest{data}`` on the wire is one
length-delimited protobuf field: tag ``0x12`` (field 2, wire type 2), a varint
length, the bytes. Going through protobuf objects costs two copies per chunk
on each side (construct + serialize, parse + field access). These functions
produce and recognise exactly the same bytes with one copy on the sender and
none on the receiver, so peers that use plain protobuf interoperate unchanged.
Anything that is not a lone data field falls back to the protobuf parser.
"""

from __future__ import annotations

from collections.abc import Sequence

DATA_TAG = 0x12  # field number 2, wire type 2 (length-delimited)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame_data(chunk: bytes | memoryview) -> bytes:
    """The serialized message ``{data: chunk}`` (field 2), built with one copy."""
    return frame_pieces([chunk])


def frame_pieces(pieces: Sequence[bytes | memoryview]) -> bytes:
    """The serialized message ``{data: b"".join(pieces)}``, built with one copy."""
    length = sum(len(p) for p in pieces)
    return b"".join((bytes((DATA_TAG,)), _varint(length), *pieces))


def unframe_data(message: bytes) -> memoryview | None:
    """The payload of a serialized lone ``data`` field, or None if it is anything else."""
    if len(message) < 2 or message[0] != DATA_TAG:
        return None
    length, shift, pos = 0, 0, 1
    while pos < len(message) and pos <= 10:
        byte = message[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return memoryview(message)[pos:] if pos + length == len(message) else None
        shift += 7
    return None
