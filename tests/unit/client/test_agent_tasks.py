"""The agent's task loop: a task that breaks the site's code is declined, never fatal, and
under --require-secagg a site evaluates at most once per round.

A real :class:`Agent` over a real site (digits), with the coordinator replaced by a stub
that hands out one crafted task per step and the push of the agent's outboxes replaced by
one that records what the site answered (no network: the handling, not the wire, is
under test here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from fedops.client.agent import Agent
from fedops.client.calls import DigestMismatch, Session
from fedops.client.task_handling import Outbox
from fedops.core.training import TrainConfig, get_params
from fedops.runtime.settings import ClientConfig
from fedops.tasks import load_task
from fedops.tasks.site import Site
from fedops.v1 import fedops_pb2 as pb


class _Stub:
    def __init__(self) -> None:
        self.task: pb.Task | None = None

    def PullTask(self, request: Any, timeout: float | None = None) -> pb.Task:
        assert self.task is not None
        return self.task


def _answers(a: Agent, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``a`` answers, kept instead of sent: :meth:`Outbox.push` is replaced for the
    outboxes of ``a`` (another's go on to the push in place before)."""
    answers: list[dict[str, Any]] = []
    before = Outbox.push

    def push(outbox: Outbox, task: pb.Task, params: Any, n: int, metrics: Any, **kw: Any) -> None:
        if outbox.trail is not a.trail:
            return before(outbox, task, params, n, metrics, **kw)
        assert outbox.session is a.session and outbox.channel is a.channel
        answers.append({"round": task.round, "kind": task.kind, **kw})
        return None

    monkeypatch.setattr(Outbox, "push", push)
    return answers


@pytest.fixture()
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    cfg = ClientConfig(
        task="digits", site=0, num_sites=3, require_secagg=True, run_dir=tmp_path / "site"
    )
    site = Site(load_task("digits"), site=0, num_sites=3, train_config=TrainConfig(epochs=1))
    a = Agent(cfg, site)
    a.session = Session(
        node_id="n1", token="t", run_id="run-A", heartbeat_s=2.0, chunk_bytes=1 << 20
    )
    a.stub = _Stub()  # type: ignore[assignment]
    a.pushed = _answers(a, monkeypatch)  # type: ignore[attr-defined]
    a.model = get_params(site.task.build_model())  # type: ignore[attr-defined]
    a._fetch = lambda task: a.model  # type: ignore[method-assign,attr-defined]
    return a


def _step(agent: Agent, task: pb.Task) -> dict[str, Any]:
    agent.stub.task = task  # type: ignore[attr-defined]
    assert agent._step() is True
    return agent.pushed[-1]  # type: ignore[attr-defined]


def test_a_task_that_breaks_the_sites_code_is_declined_with_the_reason(agent: Agent):
    wrong = {k: v[..., :1] for k, v in agent.model.items()}  # type: ignore[attr-defined]
    agent.model = wrong  # type: ignore[attr-defined]
    task = pb.Task(kind=pb.TASK_KIND_EVALUATE, run_id="run-A", round=1, task_id="e1")
    answer = _step(agent, task)
    assert answer["declined"].startswith("the task failed at this site: RuntimeError")
    audit = (agent.cfg.run_dir / "audit.jsonl").read_text()  # type: ignore[operator]
    assert "the task failed at this site" in audit


def test_a_model_other_than_the_announced_one_is_declined_in_one_line(
    agent: Agent, caplog: pytest.LogCaptureFixture
):
    """A coordinator serving a model its task did not name: the site trains on nothing,
    declines saying why, and logs one warning line (no traceback: not the site's fault)."""

    def refuse(task: pb.Task) -> Any:
        raise DigestMismatch("model digest mismatch: the task announced a, the download b")

    agent._fetch = refuse  # type: ignore[method-assign]
    task = pb.Task(kind=pb.TASK_KIND_EVALUATE, run_id="run-A", round=1, task_id="e1")
    with caplog.at_level(logging.WARNING, logger="fedops.client"):
        answer = _step(agent, task)
    assert answer["declined"] == (
        "the model was refused: model digest mismatch: the task announced a, the download b"
    )
    said = [r for r in caplog.records if r.name == "fedops.client"]
    assert len(said) == 1 and said[0].exc_info is None, [r.getMessage() for r in said]
    assert "the model was refused" in said[0].getMessage()


def test_a_secagg_site_evaluates_once_per_round_rounds_only_forward(agent: Agent):
    for number, expect_declined in ((1, False), (1, True), (2, False), (1, True)):
        task = pb.Task(
            kind=pb.TASK_KIND_EVALUATE, run_id="run-A", round=number, task_id=f"e{number}"
        )
        answer = _step(agent, task)
        assert ("declined" in answer) is expect_declined, (number, answer)
        if expect_declined:
            assert "evaluates once per round" in answer["declined"]


def test_a_secagg_task_for_another_run_is_declined(agent: Agent):
    task = pb.Task(kind=pb.TASK_KIND_SECAGG, run_id="run-B", round=1, task_id="s1")
    answer = _step(agent, task)
    assert "registered for run 'run-A'" in answer["declined"]


def _monitored_evaluation(number: int) -> pb.Task:
    from fedops.core.monitoring.profile import MonitorSpec
    from fedops.wire import monitoring

    task = pb.Task(kind=pb.TASK_KIND_EVALUATE, run_id="run-A", round=number, task_id=f"m{number}")
    task.monitor.CopyFrom(monitoring.spec_to_proto(MonitorSpec(num_classes=10)))
    return task


def test_a_secagg_site_withholds_monitoring_statistics_unless_it_opts_in(agent: Agent):
    """Histograms of the site's training rows under a coordinator-chosen model count rows
    exactly (issue 15): a site that requires SecAgg sends its evaluation, not them."""
    answer = _step(agent, _monitored_evaluation(1))
    assert "declined" not in answer and answer["report"] is None
    agent.withhold_monitoring = False  # what --share-monitoring sets
    answer = _step(agent, _monitored_evaluation(2))
    assert answer["report"] is not None and len(answer["report"].histograms) > 0


def test_a_monitoring_request_past_the_sites_cap_is_declined_before_any_work(agent: Agent):
    """Issue 17, finding 7: the coordinator picks bins x features; the site's policy caps
    them (``monitoring_max_cells``) and says so, before it fetches or evaluates anything."""
    from fedops.core.monitoring.profile import ReportLimits

    agent.withhold_monitoring = False
    agent.site.report_limits = ReportLimits(max_cells=10)
    fetched = []
    real = agent._fetch
    agent._fetch = lambda task: fetched.append(task.task_id) or real(task)  # type: ignore[method-assign]
    answer = _step(agent, _monitored_evaluation(1))
    assert "monitoring_max_cells" in answer["declined"] and "at most 10" in answer["declined"]
    assert not fetched
    agent.site.report_limits = ReportLimits()
    answer = _step(agent, _monitored_evaluation(2))
    assert answer["report"] is not None and fetched


def test_a_coordinator_whose_audit_head_goes_back_is_refused_and_recorded(agent: Agent):
    """Issue 17, finding 3: a coordinator log truncated (or replaced) mid-run shows as a head
    that goes back; the site declines, and its own log says why."""
    import hashlib

    def evaluation(number: int, seq: int) -> pb.Task:
        task = pb.Task(
            kind=pb.TASK_KIND_EVALUATE, run_id="run-A", round=number, task_id=f"h{number}"
        )
        task.coordinator_audit.seq = seq
        task.coordinator_audit.hash = hashlib.sha256(b"%d" % seq).hexdigest()
        return task

    assert "declined" not in _step(agent, evaluation(1, 40))
    answer = _step(agent, evaluation(2, 12))
    assert "went from entry 40 back to entry 12" in answer["declined"]
    audit = (agent.cfg.run_dir / "audit.jsonl").read_text()  # type: ignore[operator]
    assert "audit_anchor_mismatch" in audit


def test_a_model_task_without_the_coordinators_head_is_declined(agent: Agent):
    task = pb.Task(
        kind=pb.TASK_KIND_EVALUATE, run_id="run-A", round=1, task_id="n1", model_digest="a" * 64
    )
    answer = _step(agent, task)
    assert "carries no head of the coordinator's audit log" in answer["declined"]


def test_the_monitoring_bins_are_fixed_for_the_run(agent: Agent):
    """Red team, issue 17: reports over edges 2.005914 and 2.005916 differ by the one row
    between them; 41 such reports bisected a row's value exactly."""
    import numpy as np

    from fedops.core.monitoring.profile import MonitorSpec
    from fedops.wire import monitoring

    def binned(number: int, edge: float) -> pb.Task:
        task = pb.Task(
            kind=pb.TASK_KIND_EVALUATE, run_id="run-A", round=number, task_id=f"b{number}"
        )
        edges = {f"x{i}": np.array([-np.inf, edge, np.inf]) for i in range(64)}
        task.monitor.CopyFrom(monitoring.spec_to_proto(MonitorSpec(edges=edges, num_classes=10)))
        return task

    agent.withhold_monitoring = False
    assert _step(agent, binned(1, 2.005914))["report"] is not None
    assert _step(agent, binned(2, 2.005914))["report"] is not None  # the same bins: fine
    answer = _step(agent, binned(3, 2.005916))
    assert "bins differ from this run's first request" in answer["declined"]
