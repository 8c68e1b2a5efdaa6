"""A site's agent trains with the run's settings each fit task carries, or declines.

A real :class:`Agent` over a real digits site, the coordinator replaced by a stub that
hands out one crafted task per step (as in test_agent_tasks): a task above the site's
caps, or with a hostile value, or with no settings at all, is declined with the reason
before any model is fetched, and the refusal is in the site's signed audit log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_agent_tasks import _answers, _step, _Stub

from fedops.client.agent import Agent
from fedops.client.calls import Session
from fedops.core.training import TrainConfig, get_params
from fedops.runtime.settings import ClientConfig
from fedops.tasks import load_task
from fedops.tasks.fit_settings import TrainCaps
from fedops.tasks.site import Site
from fedops.v1 import fedops_pb2 as pb


@pytest.fixture()
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    cfg = ClientConfig(task="digits", site=0, num_sites=3, run_dir=tmp_path / "site")
    site = Site(
        load_task("digits"),
        site=0,
        num_sites=3,
        train_config=TrainConfig(epochs=50, lr=9.0),  # never used: tasks bring the run's
        train_caps=TrainCaps(max_epochs=2, max_lr=0.2),
    )
    a = Agent(cfg, site)
    a.session = Session(
        node_id="n1", token="t", run_id="run-A", heartbeat_s=2.0, chunk_bytes=1 << 20
    )
    a.stub = _Stub()  # type: ignore[assignment]
    a.pushed = _answers(a, monkeypatch)  # type: ignore[attr-defined]
    model = get_params(site.task.build_model())
    a.fetched = []  # type: ignore[attr-defined]
    a._fetch = lambda task: a.fetched.append(task.round) or model  # type: ignore[method-assign,attr-defined]
    return a


def _fit(number: int, **train: Any) -> pb.Task:
    task = pb.Task(kind=pb.TASK_KIND_FIT, run_id="run-A", round=number, task_id=f"f{number}")
    if train:
        task.train.CopyFrom(pb.TrainSettings(**train))
    return task


def _declines(agent: Agent) -> list[dict[str, Any]]:
    lines = (agent.cfg.run_dir / "audit.jsonl").read_text().splitlines()  # type: ignore[operator]
    entries = [json.loads(line) for line in lines]
    return [e["payload"] for e in entries if e["event"] == "task_declined"]


def test_a_fit_within_the_caps_trains_with_the_runs_settings(agent: Agent):
    answer = _step(agent, _fit(1, epochs=1, batch_size=32, lr=0.2, optimizer="sgd"))
    assert "declined" not in answer, answer
    assert agent.fetched == [1]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("train", "reason"),
    [
        ({"epochs": 3, "batch_size": 32, "lr": 0.1, "optimizer": "sgd"}, "--max-epochs"),
        ({"epochs": 1, "batch_size": 32, "lr": 0.5, "optimizer": "sgd"}, "--max-lr"),
        ({"epochs": 1, "batch_size": 32, "lr": float("nan"), "optimizer": "sgd"}, "lr=nan"),
        ({"epochs": 1, "batch_size": 0, "lr": 0.1, "optimizer": "sgd"}, "batch_size=0"),
        ({"epochs": 1, "batch_size": 32, "lr": 0.1, "optimizer": "rmsprop"}, "optimizer="),
        ({}, "carries no training settings"),
    ],
)
def test_a_fit_the_site_will_not_train_is_declined_and_audited_before_any_download(
    agent: Agent, train: dict[str, Any], reason: str
):
    answer = _step(agent, _fit(1, **train))
    assert reason in answer["declined"]
    assert agent.fetched == []  # type: ignore[attr-defined]
    (declined,) = _declines(agent)
    assert declined["round"] == 1 and reason in declined["reason"]


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"proximal_mu": float("nan")}, "proximal_mu=nan"),
        ({"seed": float("nan")}, "seed=nan"),
        ({"epochs": 1e9}, "travel only in Task.train"),
    ],
)
def test_a_hostile_round_config_is_declined_before_any_download(
    agent: Agent, config: dict[str, float], reason: str
):
    task = _fit(1, epochs=1, batch_size=32, lr=0.1, optimizer="sgd")
    task.config.update(config)
    answer = _step(agent, task)
    assert reason in answer["declined"]
    assert agent.fetched == []  # type: ignore[attr-defined]


def test_a_declined_reason_is_bounded_whatever_the_task_quotes(agent: Agent):
    """A 15 MB optimizer name must not become a 60 MB signed audit entry."""
    answer = _step(agent, _fit(1, epochs=1, batch_size=32, lr=0.1, optimizer="\x00" * 100_000))
    assert len(answer["declined"]) <= 500
    (declined,) = _declines(agent)
    assert len(declined["reason"]) <= 500
    assert (agent.cfg.run_dir / "audit.jsonl").stat().st_size < 50_000  # type: ignore[operator]
