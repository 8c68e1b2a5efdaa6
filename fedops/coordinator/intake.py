"""Turn an uploaded result (header + payload chunks) into a checked result value.

Free of the coordinator's state: given what the node was asked for, it either
returns a :class:`FitResult`/:class:`EvaluateResult` or raises
:class:`InvalidUpdate` saying what is wrong, before anything is aggregated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fedops.core.monitoring.profile import MonitorSpec, SiteReport
from fedops.core.params import (
    InvalidUpdate,
    Params,
    TensorSpec,
    check_specs_match,
    total_bytes,
)
from fedops.core.results import EvaluateResult, FitResult, StageResult, check_reported
from fedops.core.secagg.messages import MaskedInput
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec, monitoring
from fedops.wire import secagg as secagg_codec
from fedops.wire.buffers import BufferPool

#: the most a first client may send as the initial model (no reference to match yet; its
#: declared size is buffered before a byte arrives): a larger model is built by the
#: coordinator itself (``--task``), whose model every update is then checked against
MAX_INITIAL_MODEL_BYTES = 512 << 20

#: where uploads are reassembled: a buffer is used again once its round let go of it
RECEIVE_BUFFERS = BufferPool()


@dataclass(slots=True)
class Received:
    """What :func:`read_result` learnt of a payload besides the result: its model digest
    (:func:`fedops.core.params.digest` of the arrays taken), hashed while it arrived;
    ``""`` when the result carries no arrays."""

    digest: str = ""


def read_result(
    header: pb.ResultHeader,
    kind: int,
    reference: Sequence[TensorSpec],
    chunks: Iterator[bytes | memoryview],
    *,
    monitor: MonitorSpec | None = None,
    received: Received | None = None,
) -> FitResult | EvaluateResult | StageResult:
    """Check and assemble one result for a task of ``kind``.

    Args:
        header: the result's header (already authenticated and matched to its task).
        kind: the task's kind (fit, evaluate or send-initial).
        reference: the specs of the model the node was given (fit tasks).
        chunks: the payload, as it arrives.
        monitor: the monitoring request an evaluation answers (its report is
            required then, and refused otherwise).
        received: if given, gets the payload's digest, hashed as the chunks arrive.
    """
    if kind == pb.TASK_KIND_SECAGG:
        return _read_stage(header, reference, chunks, received)
    training = kind in (pb.TASK_KIND_FIT, pb.TASK_KIND_SEND_INITIAL)
    check_reported(num_examples=header.num_examples, metrics=header.metrics, training=training)
    metrics = dict(header.metrics)
    if not training:
        if header.tensors or header.total_bytes or next(chunks, None) is not None:
            raise InvalidUpdate("an evaluation result carries no payload")
        return EvaluateResult(
            node_id=header.node_id,
            num_examples=header.num_examples,
            metrics=metrics,
            report=_report(header, monitor),
        )
    specs = codec.specs_from_proto(header.tensors)
    if kind == pb.TASK_KIND_FIT:
        check_specs_match(reference, specs)
    if header.total_bytes != total_bytes(specs):
        raise InvalidUpdate(
            f"total_bytes {header.total_bytes} disagrees with the declared "
            f"tensors ({total_bytes(specs)} bytes)"
        )
    if kind == pb.TASK_KIND_FIT:
        limit = total_bytes(reference)
    else:
        limit = MAX_INITIAL_MODEL_BYTES
        if header.total_bytes > limit:
            raise InvalidUpdate(
                f"an initial model of {header.total_bytes} bytes declared; a site may send at "
                f"most {limit >> 20} MiB as the initial model (start the coordinator with "
                "--task to build a larger model there)"
            )
    params = _assemble(specs, limit, chunks, finite=True, received=received)
    return FitResult(
        node_id=header.node_id, params=params, num_examples=header.num_examples, metrics=metrics
    )


def _report(header: pb.ResultHeader, monitor: MonitorSpec | None) -> SiteReport | None:
    if not header.HasField("report"):
        return None  # a site with no data to report on sends none
    if monitor is None:
        raise InvalidUpdate("a monitoring report that no task asked for")
    return monitoring.report_from_proto(header.report, monitor)


def _assemble(
    specs: Sequence[TensorSpec],
    limit: int,
    chunks: Iterator[bytes | memoryview],
    *,
    finite: bool,
    received: Received | None,
) -> Params:
    """The payload, copied chunk by chunk into a pooled buffer, checked (and hashed for
    ``received``) as it arrives."""
    hasher = codec.payload_hasher(specs) if received is not None else None
    size = total_bytes(specs)
    buffer = RECEIVE_BUFFERS.take(size) if size <= limit else None  # else refused at once
    assembler = codec.Assembler(specs, max_bytes=limit, buffer=buffer, hasher=hasher, finite=finite)
    try:
        for chunk in chunks:
            assembler.add(chunk)
        params = assembler.finish()
    except BaseException:
        assembler.cancel()  # refused or cut off: no thread goes on hashing it
        raise
    if received is not None:
        received.digest = assembler.digest()
    return params


def _read_stage(
    header: pb.ResultHeader,
    reference: Sequence[TensorSpec],
    chunks: Iterator[bytes | memoryview],
    received: Received | None = None,
) -> StageResult:
    """A secure-aggregation answer: protocol fields, plus the masked vector if one is due."""
    metrics = dict(header.metrics)
    check_reported(num_examples=header.num_examples, metrics=metrics, training=False)
    specs = codec.specs_from_proto(header.tensors)
    check_specs_match(reference, specs)
    payload: Params = {}
    hashed = Received() if received is not None else None
    if specs:
        payload = _assemble(specs, total_bytes(reference), chunks, finite=False, received=hashed)
    elif next(chunks, None) is not None:
        raise InvalidUpdate("this secure-aggregation stage carries no payload")
    reply = secagg_codec.reply_from_proto(header.secagg, payload)
    masked_only = isinstance(reply, MaskedInput) and list(payload) == [secagg_codec.MASKED_TENSOR]
    if received is not None and hashed is not None and masked_only:
        received.digest = hashed.digest  # the digest of exactly the masked vector
    return StageResult(
        node_id=header.node_id, reply=reply, num_examples=header.num_examples, metrics=metrics
    )
