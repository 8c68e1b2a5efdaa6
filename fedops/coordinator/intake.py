"""Turn an uploaded result (header + payload chunks) into a checked result value.

Free of the coordinator's state: given what the node was asked for, it either
returns a :class:`FitResult`/:class:`EvaluateResult` or raises
:class:`InvalidUpdate` saying what is wrong, before anything is aggregated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fedops.core.monitoring.profile import MonitorSpec, SiteReport
from fedops.core.params import (
    InvalidUpdate,
    TensorSpec,
    check_finite,
    check_specs_match,
    total_bytes,
)
from fedops.core.results import EvaluateResult, FitResult, StageResult, check_reported
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec, monitoring
from fedops.wire import secagg as secagg_codec

#: the most a first client may send as the initial model (no reference to match yet)
MAX_INITIAL_MODEL_BYTES = 4 << 30


def read_result(
    header: pb.ResultHeader,
    kind: int,
    reference: Sequence[TensorSpec],
    chunks: Iterator[bytes | memoryview],
    *,
    monitor: MonitorSpec | None = None,
) -> FitResult | EvaluateResult | StageResult:
    """Check and assemble one result for a task of ``kind``.

    Args:
        header: the result's header (already authenticated and matched to its task).
        kind: the task's kind (fit, evaluate or send-initial).
        reference: the specs of the model the node was given (fit tasks).
        chunks: the payload, as it arrives.
        monitor: the monitoring request an evaluation answers (its report is
            required then, and refused otherwise).
    """
    if kind == pb.TASK_KIND_SECAGG:
        return _read_stage(header, reference, chunks)
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
    limit = total_bytes(reference) if kind == pb.TASK_KIND_FIT else MAX_INITIAL_MODEL_BYTES
    assembler = codec.Assembler(specs, max_bytes=limit)
    for chunk in chunks:
        assembler.add(chunk)
    params = assembler.finish()
    check_finite(params)
    return FitResult(
        node_id=header.node_id, params=params, num_examples=header.num_examples, metrics=metrics
    )


def _report(header: pb.ResultHeader, monitor: MonitorSpec | None) -> SiteReport | None:
    if not header.HasField("report"):
        return None  # a site with no data to report on sends none
    if monitor is None:
        raise InvalidUpdate("a monitoring report that no task asked for")
    return monitoring.report_from_proto(header.report, monitor)


def _read_stage(
    header: pb.ResultHeader, reference: Sequence[TensorSpec], chunks: Iterator[bytes | memoryview]
) -> StageResult:
    """A secure-aggregation answer: protocol fields, plus the masked vector if one is due."""
    metrics = dict(header.metrics)
    check_reported(num_examples=header.num_examples, metrics=metrics, training=False)
    specs = codec.specs_from_proto(header.tensors)
    check_specs_match(reference, specs)
    payload = {}
    if specs:
        assembler = codec.Assembler(specs, max_bytes=total_bytes(reference))
        for chunk in chunks:
            assembler.add(chunk)
        payload = assembler.finish()
    elif next(chunks, None) is not None:
        raise InvalidUpdate("this secure-aggregation stage carries no payload")
    reply = secagg_codec.reply_from_proto(header.secagg, payload)
    return StageResult(
        node_id=header.node_id, reply=reply, num_examples=header.num_examples, metrics=metrics
    )
