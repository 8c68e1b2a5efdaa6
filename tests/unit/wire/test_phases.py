"""Each phase of a round as a task on the wire (:mod:`fedops.wire.phases`): the one table
the coordinator sends tasks by and the site names them by.

Under test: every :class:`~fedops.core.rounds.Phase` goes to a task kind and stage and
comes back from them; every stage of ``SecAggRequest``'s ``stage`` oneof is some
phase's (a stage added to the proto without a phase fails here); the request the
coordinator sends in each SecAgg+ phase sets that phase's stage; and a task's phase
name, the one both audit logs use, for every kind of task.
"""

from __future__ import annotations

import pytest

from fedops.core.rounds import Phase
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    MaskRequest,
    NeighbourKeys,
    Request,
    Setup,
    UnmaskRequest,
)
from fedops.core.secagg.quantize import Quantizer
from fedops.core.secagg.update import Encoding
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import phases
from fedops.wire.secagg import request_to_proto


def _task(phase: Phase) -> pb.Task:
    task = pb.Task(kind=phases.task_kind(phase), round=7)
    stage = phases.secagg_stage(phase)
    if stage is not None:
        getattr(task.secagg, stage).SetInParent()
    return task


@pytest.mark.parametrize("phase", list(Phase))
def test_every_phase_round_trips_through_its_task(phase: Phase) -> None:
    kind, stage = phases.task_kind(phase), phases.secagg_stage(phase)
    assert phases.phase_from(kind, stage) is phase
    assert phases.phase_of(_task(phase)) == str(phase)
    assert (kind == pb.TASK_KIND_SECAGG) is (stage is not None)


def test_the_table_names_each_phase_once_and_nothing_else() -> None:
    assert set(phases.WIRE) == set(Phase)
    assert len(set(phases.WIRE.values())) == len(Phase)


def test_every_secagg_request_stage_of_the_proto_has_a_phase() -> None:
    oneof = pb.SecAggRequest.DESCRIPTOR.oneofs_by_name["stage"]
    stages = {field.name for field in oneof.fields}
    assert stages == {phases.secagg_stage(p) for p in Phase} - {None}
    for stage in stages:
        assert phases.phase_from(pb.TASK_KIND_SECAGG, stage) is not None, stage


_ENCODING = Encoding(quantizer=Quantizer.for_summands(4.0, 7), max_weight=1234)
#: what the coordinator's SecAgg+ server asks in each phase (fedops.runtime.secure_fit)
_REQUESTS: dict[Phase, Request] = {
    Phase.SECAGG_KEYS: Setup(context=b"c", index=1, cohort=("a", "b"), degree=2, threshold=1),
    Phase.SECAGG_SHARES: NeighbourKeys(keys=()),
    Phase.SECAGG_MASKED: MaskRequest(shares=(), encoding=_ENCODING),
    Phase.SECAGG_CONSISTENCY: ConsistencyRequest(survivors=(1, 2)),
    Phase.SECAGG_UNMASK: UnmaskRequest(survivors=(1, 2), signatures=()),
}


@pytest.mark.parametrize("phase", sorted(_REQUESTS))
def test_the_request_of_each_secagg_phase_sets_its_stage(phase: Phase) -> None:
    assert request_to_proto(_REQUESTS[phase]).WhichOneof("stage") == phases.secagg_stage(phase)


def _secagg(stage: str, kind: int = pb.TASK_KIND_SECAGG) -> pb.Task:
    task = pb.Task(kind=kind)
    getattr(task.secagg, stage).SetInParent()
    return task


@pytest.mark.parametrize(
    ("task", "phase"),
    [
        (pb.Task(kind=pb.TASK_KIND_FIT), "fit"),
        (_secagg("mask", pb.TASK_KIND_FIT), "fit"),  # a stage is read on SecAgg+ tasks only
        (pb.Task(kind=pb.TASK_KIND_EVALUATE), "evaluate"),
        (pb.Task(kind=pb.TASK_KIND_SEND_INITIAL), "initial"),
        (pb.Task(kind=pb.TASK_KIND_SECAGG), "secagg"),  # no stage set
        (_secagg("setup"), "secagg_keys"),
        (_secagg("keys"), "secagg_shares"),
        (_secagg("mask"), "secagg_masked"),
        (_secagg("consistency"), "secagg_consistency"),
        (_secagg("unmask"), "secagg_unmask"),
        (pb.Task(kind=pb.TASK_KIND_WAIT), "TASK_KIND_WAIT"),
    ],
)
def test_phase_names_are_the_coordinators(task: pb.Task, phase: str) -> None:
    assert phases.phase_of(task) == phase


def test_every_task_kind_has_a_name() -> None:
    for kind in pb.TaskKind.values():
        assert phases.phase_of(pb.Task(kind=kind))
