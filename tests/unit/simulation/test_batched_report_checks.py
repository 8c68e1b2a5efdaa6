"""The batched backend checks its reports as the coordinator checks a site's, without protobuf.

Every simulated report of a round is checked at once by the coordinator's rules
(:mod:`fedops.core.monitoring.checks`); a report they refuse is a rejected evaluation of
that client alone, as a deployed site's would be.
"""

from __future__ import annotations

from typing import Any

import pytest

from fedops.core.monitoring import batched
from fedops.core.rounds import Phase, ResultArrived, ResultRejected
from fedops.core.training import TrainConfig
from fedops.data.build import from_task
from fedops.runtime.round_monitor import MonitorSettings, monitor_spec
from fedops.runtime.transport import Instruction
from fedops.simulation import batched_monitor
from fedops.simulation.engine import initial_model
from fedops.simulation.vectorized_backend import VectorizedTransport
from fedops.tasks import load_task
from fedops.tasks.site import initial_params
from fedops.wire import monitoring


def _events(transport: VectorizedTransport, spec: Any, params: Any) -> dict[str, Any]:
    nodes = transport.available_nodes()
    transport.dispatch(1, nodes, Instruction(phase=Phase.EVALUATE, params=params, monitor=spec))
    out = {}
    while (event := transport.next_event(0.0)) is not None:
        out[event.node_id] = event
    return out


def _digits() -> tuple[VectorizedTransport, Any, Any]:
    task = load_task("digits")
    params = initial_params(task, 0)
    spec = monitor_spec(MonitorSettings(), task, params)
    model = initial_model(task, 0)
    return VectorizedTransport(from_task(task, 5, None), model, TrainConfig()), spec, params


def test_reports_skip_the_protobuf_round_trip(monkeypatch: pytest.MonkeyPatch):
    def no_wire(*_: object) -> None:
        raise AssertionError("a simulated report went through protobuf")

    monkeypatch.setattr(monitoring, "report_to_proto", no_wire)
    transport, spec, params = _digits()
    events = _events(transport, spec, params)
    assert len(events) == 5
    for event in events.values():
        assert isinstance(event, ResultArrived) and event.result.report is not None
        assert len(event.result.report.drift) == len(spec.edges) + 2


def test_a_report_the_checks_refuse_is_that_clients_rejected_evaluation(
    monkeypatch: pytest.MonkeyPatch,
):
    real = batched.batch_reports

    def one_refused(*args: Any) -> Any:
        reports, faults = real(*args)
        faults[2] = "the current histograms count different numbers of rows ([3, 4])"
        return reports, faults

    monkeypatch.setattr(batched_monitor, "batch_reports", one_refused)
    transport, spec, params = _digits()
    events = _events(transport, spec, params)
    rejected = events.pop("site-2")
    assert isinstance(rejected, ResultRejected)
    assert "count different numbers of rows" in rejected.reason
    assert all(isinstance(e, ResultArrived) for e in events.values())
