"""The agent's two payload-carrying calls, as plain functions over a channel.

Kept apart from the agent's loop so that benchmarks and tests drive exactly
the code a deployed agent runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import grpc

from fedops.core.params import InvalidUpdate, Params, check_finite, specs_of, total_bytes
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec, framing

TRANSFER_TIMEOUT_S = 600.0
# The two payload calls go through hand-made multi-callables so that payload
# chunks skip protobuf objects (fedops.wire.framing); the bytes are the same.
FETCH_MODEL = "/fedops.v1.Coordinator/FetchModel"
PUSH_RESULT = "/fedops.v1.Coordinator/PushResult"


class ModelRefused(RuntimeError):
    """The downloaded model is refused: the coordinator's doing, never the site's."""


class DigestMismatch(ModelRefused):
    """The downloaded model is not the one the task announced."""


@dataclass(slots=True, kw_only=True)
class Session:
    """What registration gave this node."""

    node_id: str
    token: str
    run_id: str
    heartbeat_s: float
    chunk_bytes: int


def _model_part(data: bytes) -> pb.ModelChunk | memoryview:
    chunk = framing.unframe_data(data)
    return chunk if chunk is not None else pb.ModelChunk.FromString(data)


def _push_part(message: pb.PushResultRequest | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def fetch_model(
    channel: grpc.Channel,
    session: Session,
    task: pb.Task,
    *,
    buffer: bytearray | None = None,
) -> tuple[Params, str]:
    """Download the task's model; return it (views into ``buffer``) and its digest.

    The digest is computed while the chunks arrive and must equal the one the
    task announced, so a corrupted or substituted model is never trained on; a
    model with NaN or Inf is refused as well (:class:`ModelRefused`): no honest
    coordinator sends one, and training from it would only spread it.
    """
    request = pb.FetchModelRequest(
        node_id=session.node_id, token=session.token, task_id=task.task_id
    )
    call = channel.unary_stream(
        FETCH_MODEL,
        request_serializer=pb.FetchModelRequest.SerializeToString,
        response_deserializer=_model_part,
    )
    stream = call(request, timeout=TRANSFER_TIMEOUT_S)
    first = next(stream)
    if not isinstance(first, pb.ModelChunk) or first.WhichOneof("part") != "header":
        raise InvalidUpdate("the model stream did not start with a ModelHeader")
    specs = codec.specs_from_proto(first.header.tensors)
    assembler = codec.Assembler(
        specs, max_bytes=first.header.total_bytes, buffer=buffer, hasher=codec.payload_hasher(specs)
    )
    try:
        for part in stream:
            assembler.add(part if isinstance(part, memoryview) else part.data)
        params = assembler.finish()
    except BaseException:
        assembler.cancel()  # refused or cut off: no thread goes on hashing it
        stream.cancel()
        raise
    got = assembler.digest()
    if got != task.model_digest:
        raise DigestMismatch(
            f"model digest mismatch: the task announced "
            f"{_announced(task.model_digest)}, the download hashes to {got}"
        )
    try:
        check_finite(params)
    except InvalidUpdate as exc:
        raise ModelRefused(f"the model is not finite: {exc}") from None
    return params, got


def _announced(value: str) -> str:
    """The coordinator's digest as a refusal shows it: as sent, or quoted and cut short
    when it is not a digest's length (a hostile one must not fill the site's log)."""
    return value if len(value) <= 80 and value.isprintable() else codec.shown(value, 80)


def push_result(
    channel: grpc.Channel,
    session: Session,
    task: pb.Task,
    params: Params,
    num_examples: int,
    metrics: Mapping[str, float],
    *,
    digest: bool = True,
    secagg: pb.SecAggReply | None = None,
    declined: str = "",
    report: pb.SiteReport | None = None,
    audit_head: tuple[int, str] | None = None,
) -> str:
    """Upload a result (header, then the payload in chunks).

    Returns the payload's model digest, hashed while the chunks are sent, or
    ``""`` with ``digest=False`` (hashing costs CPU that a 2-core site shares
    with the transfer; the agent asks for it when it keeps a journal).
    """
    specs = specs_of(params)
    header = pb.ResultHeader(
        node_id=session.node_id,
        token=session.token,
        run_id=task.run_id,
        round=task.round,
        task_id=task.task_id,
        kind=task.kind,
        num_examples=num_examples,
        metrics={k: float(v) for k, v in metrics.items()},
        tensors=codec.specs_to_proto(specs),
        total_bytes=total_bytes(specs),
        declined=declined,
    )
    if secagg is not None:
        header.secagg.CopyFrom(secagg)
    if report is not None:
        header.report.CopyFrom(report)
    if audit_head is not None:
        header.site_audit.seq, header.site_audit.hash = audit_head
    hasher = codec.payload_hasher(specs) if digest else None

    def messages() -> Iterator[pb.PushResultRequest | bytes]:
        yield pb.PushResultRequest(header=header)
        # pre-serialized PushResultRequest{data} messages, each built in one copy
        yield from codec.iter_chunks(params, session.chunk_bytes, hasher=hasher, framed=True)

    call = channel.stream_unary(
        PUSH_RESULT,
        request_serializer=_push_part,
        response_deserializer=pb.PushResultResponse.FromString,
    )
    call(messages(), timeout=TRANSFER_TIMEOUT_S)
    return hasher.hexdigest() if hasher is not None else ""
