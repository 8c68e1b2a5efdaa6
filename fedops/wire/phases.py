"""Each phase of a round as a task on the wire: the one table both sides read.

The coordinator sends a :class:`~fedops.core.rounds.Phase` as a task kind and, for
the round trips of SecAgg+, the stage of the request it carries (the field set in
``SecAggRequest``'s ``stage`` oneof). A site names the task it got by the same
phase, in its audit log as the coordinator does in its own, so that
``fedops audit export`` can cross-check the two logs round by round.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedops.core.rounds import Phase
from fedops.v1 import fedops_pb2 as pb

#: each phase -> its task's kind and, for SecAgg+, the stage of the request it carries
WIRE: Mapping[Phase, tuple[int, str | None]] = {
    Phase.FIT: (pb.TASK_KIND_FIT, None),
    Phase.EVALUATE: (pb.TASK_KIND_EVALUATE, None),
    Phase.SECAGG_KEYS: (pb.TASK_KIND_SECAGG, "setup"),
    Phase.SECAGG_SHARES: (pb.TASK_KIND_SECAGG, "keys"),
    Phase.SECAGG_MASKED: (pb.TASK_KIND_SECAGG, "mask"),
    Phase.SECAGG_CONSISTENCY: (pb.TASK_KIND_SECAGG, "consistency"),
    Phase.SECAGG_UNMASK: (pb.TASK_KIND_SECAGG, "unmask"),
}
_PHASE_OF_WIRE = {wire: phase for phase, wire in WIRE.items()}

#: what both logs call the tasks outside a round's phases
INITIAL = "initial"  # the coordinator asks one site for the initial model
NO_STAGE = "secagg"  # a SecAgg+ task whose request names no stage


def task_kind(phase: Phase) -> int:
    """The kind of the task that carries ``phase`` (``pb.TaskKind``)."""
    return WIRE[phase][0]


def secagg_stage(phase: Phase) -> str | None:
    """The ``SecAggRequest`` stage a task of ``phase`` carries (``None`` outside SecAgg+)."""
    return WIRE[phase][1]


def phase_from(kind: int, stage: str | None = None) -> Phase | None:
    """The phase of a task of ``kind`` carrying SecAgg+ ``stage`` (``None``: not a phase)."""
    return _PHASE_OF_WIRE.get((kind, stage))


def phase_of(task: pb.Task) -> str:
    """The phase name both audit logs use for ``task``: its phase, or what the task is."""
    stage = task.secagg.WhichOneof("stage") if task.kind == pb.TASK_KIND_SECAGG else None
    phase = phase_from(task.kind, stage)
    if phase is not None:
        return str(phase)
    if task.kind == pb.TASK_KIND_SEND_INITIAL:
        return INITIAL
    if task.kind == pb.TASK_KIND_SECAGG:
        return NO_STAGE
    return str(pb.TaskKind.Name(task.kind))
