"""Unit tests for fedops.runtime.driver.RoundDriver.

Real runs go through InMemoryTransport with real Sites (the built-in digits task
or a tiny task defined here); a scripted transport covers deadlines, since an
in-memory site always answers.
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np
import pytest
import torch
from torch import nn

from fedops.core.params import digest
from fedops.core.results import EvaluateResult, FitResult
from fedops.core.rounds import Phase, ResultArrived, sample_clients
from fedops.core.strategies import FedAvg, FedProx
from fedops.core.training import TrainConfig, get_params
from fedops.runtime.driver import DriverConfig, RoundDriver, RunAborted
from fedops.runtime.resume import start_or_resume
from fedops.runtime.round_plugin import GlobalEvaluation
from fedops.runtime.run import make_strategy
from fedops.runtime.schema import StrategyConfig
from fedops.runtime.store import RunStore
from fedops.simulation.inmemory import InMemoryTransport
from fedops.tasks import Task, load_task
from fedops.tasks.site import Site, global_evaluator

NUM_SITES = 3
TRAIN = TrainConfig(epochs=1, batch_size=16, lr=0.5)


@pytest.fixture(scope="module")
def digits() -> Task:
    return load_task("digits")


def _initial(task: Task, seed: int = 0):
    torch.manual_seed(seed)
    return get_params(task.build_model())


def _sites(task: Task, n: int = NUM_SITES) -> list[Site]:
    return [Site(task, site=i, num_sites=n, train_config=TRAIN) for i in range(n)]


def _driver(task: Task, store: RunStore, *, sites=None, strategy=None, **config) -> RoundDriver:
    config.setdefault("rounds", 3)
    return RoundDriver(
        transport=InMemoryTransport(sites if sites is not None else _sites(task)),
        strategy=strategy or FedAvg(),
        config=DriverConfig(**config),
        store=store,
        plugins=[GlobalEvaluation(global_evaluator(task))],
    )


# --- the built-in digits task end to end ------------------------------------------------------


def test_digits_federation_improves_accuracy(digits, tmp_path):
    store = RunStore(tmp_path / "run")
    initial = _initial(digits)
    before = global_evaluator(digits)(initial)
    records = []
    driver = _driver(digits, store, rounds=3)
    driver.on_round = records.append
    final = driver.run(initial)

    metrics = store.round_metrics()
    assert [m["round"] for m in metrics] == [1, 2, 3]
    assert [r.server_round for r in records] == [1, 2, 3]
    assert all(m["num_clients"] == NUM_SITES == m["num_eval_clients"] for m in metrics)
    global_acc = [m["global_accuracy"] for m in metrics]
    global_loss = [m["global_loss"] for m in metrics]
    assert before["accuracy"] < 0.3  # an untrained 10-class model
    assert global_acc[-1] > before["accuracy"] + 0.4
    assert global_acc[-1] > 0.7
    assert global_loss == sorted(global_loss, reverse=True)
    assert global_loss[0] < before["loss"]
    assert metrics[-1]["eval_accuracy"] > metrics[0]["eval_accuracy"]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    # the store holds the returned model as the last round
    assert store.last_round() == 3
    assert digest(store.load_round(3)) == digest(final)
    assert global_evaluator(digits)(final)["accuracy"] == pytest.approx(global_acc[-1])
    store.close()


def test_digits_participants_are_recorded(digits, tmp_path):
    store = RunStore(tmp_path / "run")
    sites = _sites(digits)
    _driver(digits, store, sites=sites, rounds=1).run(_initial(digits))
    people = store.participants(1)
    fit = {p.node_id: p for p in people if p.phase == "fit"}
    ev = {p.node_id: p for p in people if p.phase == "evaluate"}
    assert sorted(fit) == sorted(ev) == ["site-0", "site-1", "site-2"]
    for site in sites:
        node = f"site-{site.site}"
        assert fit[node].outcome == "ok" and ev[node].outcome == "ok"
        assert fit[node].num_examples == site.num_train_examples
        assert ev[node].num_examples == len(site.test_data[0])
    store.close()


def test_two_identical_seeded_runs_give_bitwise_identical_params(digits, tmp_path):
    finals = []
    for name in ("a", "b"):
        store = RunStore(tmp_path / name)
        finals.append(_driver(digits, store, rounds=2, seed=3).run(_initial(digits, seed=1)))
        store.close()
    a, b = finals
    assert list(a) == list(b)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert digest(a) != digest(_initial(digits, seed=1))


def test_driver_seed_changes_local_shuffling(digits, tmp_path):
    finals = []
    for seed in (0, 1):
        store = RunStore(tmp_path / str(seed))
        finals.append(_driver(digits, store, rounds=1, seed=seed).run(_initial(digits)))
        store.close()
    assert digest(finals[0]) != digest(finals[1])


def test_clients_per_round_follows_sample_clients(digits, tmp_path):
    store = RunStore(tmp_path / "run")
    _driver(digits, store, rounds=2, clients_per_round=2, seed=5).run(_initial(digits))
    nodes = [f"site-{i}" for i in range(NUM_SITES)]
    for r in (1, 2):
        fit_nodes = sorted(p.node_id for p in store.participants(r) if p.phase == "fit")
        assert fit_nodes == sample_clients(nodes, 2, seed=5, server_round=r)
    assert [m["num_clients"] for m in store.round_metrics()] == [2, 2]
    store.close()


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "fedavgm"])
def test_resumed_run_ends_with_the_same_model_as_an_uninterrupted_one(digits, tmp_path, name):
    """A server optimizer's state (FedAdam's moments) is checkpointed with the model."""
    config = {"rounds": 3, "strategy": name}
    whole = RunStore(tmp_path / "whole")
    strategy = make_strategy(StrategyConfig(name=name))
    start = start_or_resume(whole, config, lambda: _initial(digits), strategy=strategy)
    uninterrupted = _driver(digits, whole, rounds=3, strategy=strategy).run(start.params)
    whole.close()

    part = RunStore(tmp_path / "part")
    strategy = make_strategy(StrategyConfig(name=name))
    start = start_or_resume(part, config, lambda: _initial(digits), strategy=strategy)
    _driver(digits, part, rounds=2, strategy=strategy).run(
        start.params, start_round=start.start_round
    )
    part.close()
    reopened = RunStore(tmp_path / "part")
    fresh = make_strategy(
        StrategyConfig(name=name)
    )  # a new process: the state comes from the checkpoint
    start = start_or_resume(
        reopened, config, lambda: pytest.fail("must not rebuild the model"), strategy=fresh
    )
    assert (start.start_round, start.resumed) == (3, True)
    resumed = _driver(digits, reopened, rounds=3, strategy=fresh).run(
        start.params, start_round=start.start_round
    )
    assert digest(resumed) == digest(uninterrupted)
    assert [m["round"] for m in reopened.round_metrics()] == [1, 2, 3]
    if name != "fedavg":  # without the state the resumed run would differ: it does matter
        reopened.close()
        again = RunStore(tmp_path / "part")
        forgetful = make_strategy(StrategyConfig(name=name))
        again.roll_back_to(2)  # round 3 again, from round 2's model but a fresh strategy
        start = start_or_resume(again, config, pytest.fail, strategy=None)
        lost = _driver(digits, again, rounds=3, strategy=forgetful).run(
            start.params, start_round=start.start_round
        )
        assert digest(lost) != digest(uninterrupted)
        again.close()
    else:
        reopened.close()


def test_too_few_clients_aborts_the_run(digits, tmp_path):
    store = RunStore(tmp_path / "run")
    driver = _driver(digits, store, rounds=1, min_clients=NUM_SITES + 1, join_timeout_s=1.0)
    with pytest.raises(RunAborted, match=r"only 3 of the 4 required clients"):
        driver.run(_initial(digits))
    assert store.last_round() is None
    store.close()


# --- a tiny task: NaN updates and FedProx -----------------------------------------------------


def _tiny_task(train) -> Task:
    def build_model():
        torch.manual_seed(0)
        return nn.Linear(2, 2)

    def load_data(site, num_sites):
        x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], np.float32) + site
        y = np.array([0, 1, 1, 0])
        return (x, y), (x[:2], y[:2])

    return Task(name="tiny", build_model=build_model, load_data=load_data, train=train)


def test_a_site_producing_nan_is_rejected_and_left_out(tmp_path):
    def train(model, data, cfg):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
            if float(data[0][0, 0]) == 2.0:  # only site 1's data starts at 1 + 1
                model.weight[0, 0] = float("nan")
        return {"train_loss": 0.5}

    task = _tiny_task(train)
    sites = [Site(task, site=i, num_sites=2, train_config=TRAIN) for i in range(2)]
    store = RunStore(tmp_path / "run")
    driver = RoundDriver(
        transport=InMemoryTransport(sites),
        strategy=FedAvg(),
        config=DriverConfig(rounds=1),
        store=store,
    )
    initial = sites[0].initial_params()
    final = driver.run(initial)
    # only site-0's update is averaged: every value moved by exactly +1
    for name in initial:
        np.testing.assert_array_equal(final[name], initial[name] + 1.0)
    fit = {p.node_id: p for p in store.participants(1) if p.phase == "fit"}
    assert fit["site-0"].outcome == "ok"
    assert fit["site-1"].outcome == "rejected"
    assert "tensor 'weight' has 1 non-finite values" in fit["site-1"].reason
    assert fit["site-1"].num_examples == 0
    (metrics,) = store.round_metrics()
    assert metrics["num_clients"] == 1
    assert metrics["num_eval_clients"] == 2
    store.close()


def test_fedprox_mu_and_the_run_seed_reach_local_training(tmp_path):
    seen = []

    def train(model, data, cfg):
        seen.append((cfg.proximal_mu, cfg.seed, cfg.lr))
        return {"train_loss": 1.0}

    task = _tiny_task(train)
    sites = [Site(task, site=i, num_sites=2, train_config=TRAIN) for i in range(2)]
    store = RunStore(tmp_path / "run")
    RoundDriver(
        transport=InMemoryTransport(sites),
        strategy=FedProx(mu=0.3),
        config=DriverConfig(rounds=2, seed=9),
        store=store,
    ).run(sites[0].initial_params())
    assert [mu for mu, _, _ in seen] == [0.3] * 4
    assert all(lr == TRAIN.lr for _, _, lr in seen)
    assert len({seed for _, seed, _ in seen}) == 4  # one per (round, site)
    store.close()


# --- deadlines, with a scripted transport -----------------------------------------------------


class _ScriptedTransport:
    """Answers only for the nodes in ``answer``; the others never reply."""

    def __init__(self, nodes, answer):
        self.nodes = nodes
        self.answer = answer
        self.events = deque()
        self.dispatched = []

    def wait_for_nodes(self, count, timeout_s):
        return list(self.nodes)

    def available_nodes(self):
        return list(self.nodes)

    def dispatch(self, server_round, nodes, instruction):
        phase, params, config = instruction.phase, instruction.params, instruction.config
        tasks = {n: f"{n}/{server_round}/{phase}" for n in nodes}
        self.dispatched.append((server_round, phase, list(nodes), dict(config)))
        for n in nodes:
            if n not in self.answer:
                continue
            if phase is Phase.FIT:
                new = {k: v + self.answer[n] for k, v in params.items()}
                result = FitResult(node_id=n, params=new, num_examples=4)
            else:
                result = EvaluateResult(node_id=n, num_examples=2, metrics={"accuracy": 0.5})
            self.events.append(ResultArrived(node_id=n, task_id=tasks[n], result=result))
        return tasks

    def next_event(self, timeout_s):
        if self.events:
            return self.events.popleft()
        time.sleep(min(timeout_s, 0.005))
        return None


def test_stragglers_time_out_and_the_round_goes_on(tmp_path):
    transport = _ScriptedTransport(["a", "b", "c"], answer={"a": 2.0})
    store = RunStore(tmp_path / "run")
    driver = RoundDriver(
        transport=transport,
        strategy=FedProx(mu=0.5),
        config=DriverConfig(rounds=1, round_timeout_s=0.05, seed=7),
        store=store,
    )
    final = driver.run({"w": np.zeros(2)})  # (the outcomes below show nobody was waited for)
    np.testing.assert_array_equal(final["w"], [2.0, 2.0])
    assert transport.dispatched == [
        (1, Phase.FIT, ["a", "b", "c"], {"proximal_mu": 0.5, "seed": 7.0}),
        (1, Phase.EVALUATE, ["a", "b", "c"], {}),
    ]
    outcomes = {(p.phase, p.node_id): (p.outcome, p.reason) for p in store.participants(1)}
    late = "no result before the round deadline"
    assert outcomes == {
        ("fit", "a"): ("ok", ""),
        ("fit", "b"): ("timed_out", late),
        ("fit", "c"): ("timed_out", late),
        ("evaluate", "a"): ("ok", ""),
        ("evaluate", "b"): ("timed_out", late),
        ("evaluate", "c"): ("timed_out", late),
    }
    (metrics,) = store.round_metrics()
    assert metrics["num_clients"] == 1
    assert metrics["eval_accuracy"] == 0.5
    store.close()


def test_a_round_without_any_result_keeps_the_model(tmp_path):
    transport = _ScriptedTransport(["a"], answer={})
    store = RunStore(tmp_path / "run")
    driver = RoundDriver(
        transport=transport,
        strategy=FedAvg(),
        config=DriverConfig(rounds=1, round_timeout_s=0.02),
        store=store,
    )
    initial = {"w": np.array([1.0, -1.0])}
    final = driver.run(initial)
    np.testing.assert_array_equal(final["w"], [1.0, -1.0])
    (metrics,) = store.round_metrics()
    assert metrics["num_clients"] == 0
    assert math.isnan(metrics["train_loss"]) and math.isnan(metrics["eval_accuracy"])
    store.close()


def test_a_round_whose_only_site_has_no_training_data_keeps_the_model(tmp_path):
    def load_data(site, num_sites):
        x = np.ones((2, 2), np.float32)
        y = np.array([0, 1])
        return (x[:0], y[:0]), (x, y)

    task = Task(name="empty", build_model=lambda: nn.Linear(2, 2), load_data=load_data)
    site = Site(task, site=0, num_sites=1, train_config=TRAIN)
    store = RunStore(tmp_path / "run")
    initial = site.initial_params()
    final = RoundDriver(
        transport=InMemoryTransport([site]),
        strategy=FedAvg(),
        config=DriverConfig(rounds=1),
        store=store,
    ).run(initial)
    assert digest(final) == digest(initial)
    store.close()


def test_a_round_with_fewer_updates_than_min_fit_results_aborts_and_keeps_the_model(tmp_path):
    transport = _ScriptedTransport(["a", "b", "c"], answer={"a": 2.0, "b": 4.0})
    store = RunStore(tmp_path / "run")
    driver = RoundDriver(
        transport=transport,
        strategy=FedAvg(),
        config=DriverConfig(rounds=1, round_timeout_s=0.05, min_fit_results=3),
        store=store,
    )
    final = driver.run({"w": np.array([1.0, -1.0])})
    np.testing.assert_array_equal(final["w"], [1.0, -1.0])  # two updates arrived, none applied
    (metrics,) = store.round_metrics()
    assert metrics["num_clients"] == 2
    assert metrics["round_aborted"] == "2 accepted update(s), fewer than the 3 required"
    store.close()


def test_min_fit_results_met_aggregates_as_usual(tmp_path):
    transport = _ScriptedTransport(["a", "b", "c"], answer={"a": 2.0, "b": 4.0})
    store = RunStore(tmp_path / "run")
    final = RoundDriver(
        transport=transport,
        strategy=FedAvg(),
        config=DriverConfig(rounds=1, round_timeout_s=0.05, min_fit_results=2),
        store=store,
    ).run({"w": np.zeros(2)})
    assert final["w"][0] != 0.0  # aggregated
    (metrics,) = store.round_metrics()
    assert "round_aborted" not in metrics
    store.close()
