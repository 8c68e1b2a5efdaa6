"""A site that caps its ε (``--max-epsilon``) tells the coordinator nothing of its records.

Red team F1 (issue 16): the answer to a local-DP fit task carried the exact train
loss, the record count and the site's ε (a function of n through q = B/n), and
registration and the initial model carried n too; and a capped site evaluated
the coordinator's model on its test rows as often as asked. A real
:class:`Agent` over a real digits site, with the coordinator replaced by a stub
(the handling, not the wire, is under test here).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedops.client.agent import Agent
from fedops.client.calls import Session
from fedops.client.site_trail import LOCAL_DP_MECHANISM
from fedops.client.task_handling import Outbox
from fedops.core.training import TrainConfig, get_params
from fedops.runtime.settings import ClientConfig
from fedops.tasks import load_task
from fedops.tasks.ledger import SiteLedger
from fedops.tasks.site import Site
from fedops.v1 import fedops_pb2 as pb

DP = {"dp_noise_multiplier": 1.0, "dp_max_grad_norm": 1.0, "dp_delta": 1e-5, "seed": 0.0}


class _Stub:
    def __init__(self) -> None:
        self.task: pb.Task | None = None
        self.registered: list[pb.RegisterRequest] = []

    def PullTask(self, request: Any, timeout: float | None = None) -> pb.Task:
        assert self.task is not None
        return self.task

    def Register(self, request: pb.RegisterRequest, timeout: float | None = None) -> Any:
        self.registered.append(request)
        return pb.RegisterResponse(node_id="n1", token="t", run_id="run-A")


def _answers(a: Agent, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``a`` answers, kept instead of sent: :meth:`Outbox.push` is replaced for the
    outboxes of ``a`` (another agent's go on to the push in place before)."""
    answers: list[dict[str, Any]] = []
    before = Outbox.push

    def push(outbox: Outbox, task: pb.Task, params: Any, n: int, metrics: Any, **kw: Any) -> None:
        if outbox.trail is not a.trail:
            return before(outbox, task, params, n, metrics, **kw)
        assert outbox.session is a.session and outbox.channel is a.channel
        answers.append({"kind": task.kind, "n": n, "metrics": dict(metrics), **kw})
        return None

    monkeypatch.setattr(Outbox, "push", push)
    return answers


def _agent(
    run_dir: Path, max_epsilon: float | None, monkeypatch: pytest.MonkeyPatch, **flags: Any
) -> Agent:
    cfg = ClientConfig(
        task="digits", site=0, num_sites=3, run_dir=run_dir, max_epsilon=max_epsilon, **flags
    )
    site = Site(
        load_task("digits"),
        site=0,
        num_sites=3,
        train_config=TrainConfig(epochs=1, batch_size=64),
        max_epsilon=max_epsilon,
        ledger_dir=run_dir,
    )
    a = Agent(cfg, site)
    a.session = Session(
        node_id="n1", token="t", run_id="run-A", heartbeat_s=2.0, chunk_bytes=1 << 20
    )
    a.stub = _Stub()  # type: ignore[assignment]
    a.pushed = _answers(a, monkeypatch)  # type: ignore[attr-defined]
    model = get_params(site.task.build_model())
    a._fetch = lambda task: model  # type: ignore[method-assign]
    return a


@pytest.fixture()
def capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = _agent(tmp_path / "site", 30.0, monkeypatch)
        yield a
        a.trail.close()


def _step(agent: Agent, task: pb.Task) -> dict[str, Any]:
    agent.stub.task = task  # type: ignore[attr-defined]
    assert agent._step() is True
    return agent.pushed[-1]  # type: ignore[attr-defined]


def _audit(agent: Agent, event: str) -> list[dict[str, Any]]:
    lines = (agent.cfg.run_dir / "audit.jsonl").read_text().splitlines()  # type: ignore[operator]
    return [e["payload"] for e in map(json.loads, lines) if e["event"] == event]


def test_a_capped_site_answers_a_dp_fit_with_its_model_alone(capped: Agent):
    for server_round in (1, 2):
        task = pb.Task(
            kind=pb.TASK_KIND_FIT,
            run_id="run-A",
            round=server_round,
            task_id=f"f{server_round}",
            train=pb.TrainSettings(epochs=1, batch_size=64, lr=0.05, optimizer="sgd"),
        )
        task.config.update(DP)
        answer = _step(capped, task)
        assert "declined" not in answer, answer
        # before: n = 383 and {train_loss, local_epsilon, local_delta}
        assert (answer["n"], answer["metrics"]) == (1, {})
    # what each round cost is in the site's own signed log, from its ledger
    spent = _audit(capped, "privacy_spent")
    assert [e["round"] for e in spent] == [1, 2]
    ledger = SiteLedger(capped.cfg.run_dir)  # type: ignore[arg-type]
    assert spent[-1]["local_epsilon"] == pytest.approx(ledger.epsilon(1e-5), rel=1e-12)
    assert spent[0]["local_epsilon"] < spent[1]["local_epsilon"]
    assert spent[-1]["local_delta"] == 1e-5 and spent[-1]["mechanism"] == LOCAL_DP_MECHANISM
    assert spent[-1]["run_id"] == "run-A" and spent[-1]["accountant"] == "pld"
    assert spent[-1]["privacy_event"]["sampling"] == "poisson"


def test_a_capped_site_registers_and_sends_its_initial_model_without_its_count(
    capped: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    capped._register()
    assert capped.stub.registered[-1].num_train_examples == 0  # type: ignore[attr-defined]
    initial = pb.Task(kind=pb.TASK_KIND_SEND_INITIAL, run_id="run-A", round=0, task_id="i")
    assert _step(capped, initial)["n"] == 1
    # a site without a cap still announces its count (nothing protects it there)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = _agent(tmp_path / "plain", None, monkeypatch)
    try:
        plain._register()
        assert plain.stub.registered[-1].num_train_examples == plain.site.num_train_examples  # type: ignore[attr-defined]
    finally:
        plain.trail.close()


def _evaluate(number: int) -> pb.Task:
    return pb.Task(kind=pb.TASK_KIND_EVALUATE, run_id="run-A", round=number, task_id=f"e{number}")


def test_a_capped_site_does_not_evaluate_unless_it_opts_in(capped: Agent):
    """Red team, issue 16: an evaluation answer's example count (and accuracy x count, a
    whole number) shows the test split's size, and so the record count the site hides."""
    answer = _step(capped, _evaluate(1))
    assert "hides its record count" in answer["declined"]
    assert "--share-evaluation" in answer["declined"]


def test_a_capped_site_evaluates_once_per_round_rounds_only_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Each evaluation runs a coordinator-chosen model over the site's test rows, whose loss
    tells whether a row is there: a capped site that opts in answers once per round."""
    capped = _agent(tmp_path, 3.0, monkeypatch, share_evaluation=True)
    try:
        for number, expect_declined in ((1, False), (1, True), (2, False), (1, True)):
            answer = _step(capped, _evaluate(number))
            assert ("declined" in answer) is expect_declined, (number, answer)
            if expect_declined:
                assert "evaluates once per round" in answer["declined"]
                assert "--max-epsilon" in answer["declined"]
    finally:
        capped.trail.close()
