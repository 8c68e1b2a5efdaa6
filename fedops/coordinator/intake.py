"""Turn an uploaded result (header + payload chunks) into a checked result value.

Free of the coordinator's state: given what the node was asked for, it either
returns a :class:`FitResult`/:class:`EvaluateResult` or raises
:class:`InvalidUpdate` saying what is wrong, before anything is aggregated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fedops.core.params import (
    InvalidUpdate,
    TensorSpec,
    check_finite,
    check_specs_match,
    total_bytes,
)
from fedops.core.results import EvaluateResult, FitResult, check_reported
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec

#: the most a first client may send as the initial model (no reference to match yet)
MAX_INITIAL_MODEL_BYTES = 4 << 30


def read_result(
    header: pb.ResultHeader,
    kind: int,
    reference: Sequence[TensorSpec],
    chunks: Iterator[bytes | memoryview],
) -> FitResult | EvaluateResult:
    """Check and assemble one result for a task of ``kind``.

    Args:
        header: the result's header (already authenticated and matched to its task).
        kind: the task's kind (fit, evaluate or send-initial).
        reference: the specs of the model the node was given (fit tasks).
        chunks: the payload, as it arrives.
    """
    training = kind in (pb.TASK_KIND_FIT, pb.TASK_KIND_SEND_INITIAL)
    check_reported(num_examples=header.num_examples, metrics=header.metrics, training=training)
    metrics = dict(header.metrics)
    if not training:
        if next(chunks, None) is not None:
            raise InvalidUpdate("an evaluation result carries no payload")
        return EvaluateResult(
            node_id=header.node_id, num_examples=header.num_examples, metrics=metrics
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
