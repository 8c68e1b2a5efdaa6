"""What every simulation transport shares: a fixed set of virtual sites, always there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedops.core.monitoring.profile import MonitorSpec, SiteReport
from fedops.core.params import (
    InvalidUpdate,
    Params,
    TensorSpec,
    check_finite,
    check_params_match,
)
from fedops.core.results import EvaluateResult, FitResult, check_reported
from fedops.core.rounds import Event, Phase, ResultArrived, ResultRejected
from fedops.runtime.transport import Instruction
from fedops.wire import monitoring


def node_id(client: int) -> str:
    return f"site-{client}"


def client_index(node: str) -> int:
    return int(node.rsplit("-", 1)[1])


def fit_event(
    node: str,
    task_id: str,
    expected: Sequence[TensorSpec],
    new: Params,
    num_examples: int,
    metrics: Mapping[str, float],
) -> Event:
    """The coordinator's checks, applied to a simulated fit result.

    ``expected`` are the specs of the model the client started from (``specs_of``), computed
    once per round by the caller: with a thousand clients a round, per-call specs add up.
    """
    try:
        check_reported(num_examples=num_examples, metrics=metrics, training=True)
        check_params_match(expected, new)
        check_finite(new)
    except InvalidUpdate as exc:
        return ResultRejected(node_id=node, task_id=task_id, reason=str(exc))
    result = FitResult(node_id=node, params=new, num_examples=num_examples, metrics=metrics)
    return ResultArrived(node_id=node, task_id=task_id, result=result)


def evaluate_event(
    node: str,
    task_id: str,
    num_examples: int,
    metrics: Mapping[str, float],
    *,
    report: SiteReport | None = None,
    spec: MonitorSpec | None = None,
    fault: str | None = None,
) -> Event:
    """The coordinator's checks, applied to a simulated evaluation (and its report).

    With ``spec``, a monitoring report makes the round trip through its wire form, so a
    simulated site's report is checked exactly as a deployed one's. Without it the report
    was already checked by the same rules (:mod:`fedops.core.monitoring.checks`, the
    batched backend checks a round's reports together), ``fault`` the rule it broke.
    """
    try:
        check_reported(num_examples=num_examples, metrics=metrics, training=False)
        if fault is not None:
            raise InvalidUpdate(fault)
        if report is not None and spec is not None:
            report = monitoring.report_from_proto(monitoring.report_to_proto(report), spec)
    except InvalidUpdate as exc:
        return ResultRejected(node_id=node, task_id=task_id, reason=str(exc))
    result = EvaluateResult(node_id=node, num_examples=num_examples, metrics=metrics, report=report)
    return ResultArrived(node_id=node, task_id=task_id, result=result)


def check_plain(instruction: Instruction) -> None:
    """Backends train and evaluate (and report on monitoring requests, every backend);
    secure aggregation's stages wrap them (simulation.secure_backend)."""
    phase = instruction.phase
    if instruction.stage is not None or phase not in (Phase.FIT, Phase.EVALUATE):
        raise NotImplementedError(f"{phase} needs SecureSimTransport around the simulation backend")


def task_ids(server_round: int, phase: Phase, nodes: Sequence[str]) -> dict[str, str]:
    return {node: f"{node}:{server_round}:{phase}" for node in nodes}


class SimulatedTransport:
    """Node ids ``site-0 … site-(n-1)``; nobody joins late, nobody needs waiting for."""

    def __init__(self, num_clients: int) -> None:
        self._nodes = [node_id(i) for i in range(num_clients)]

    def wait_for_nodes(self, count: int, timeout_s: float) -> list[str]:
        return list(self._nodes)

    def available_nodes(self) -> list[str]:
        return list(self._nodes)

    def fetch_initial_params(self, timeout_s: float) -> Params:
        raise NotImplementedError("a simulation builds its initial model itself")
