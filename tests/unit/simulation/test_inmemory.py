"""Unit tests for fedops.simulation.inmemory.InMemoryTransport with real Sites."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedops.core.params import digest
from fedops.core.results import EvaluateResult, FitResult
from fedops.core.rounds import Phase, ResultArrived, ResultRejected
from fedops.core.training import TrainConfig
from fedops.runtime.transport import Instruction
from fedops.simulation.inmemory import InMemoryTransport
from fedops.tasks import Task
from fedops.tasks.site import Site

CFG = TrainConfig(epochs=1, batch_size=2, lr=0.1)


def _build_model():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def _load_data(site, num_sites):
    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 + site
    y = np.array([0, 1, 0, 1])
    return (x, y), (x[:3], y[:3])


def _nan_train(model, data, cfg):
    with torch.no_grad():
        model.bias[1] = float("nan")
        model.weight[0, 2] = float("inf")
    return {"train_loss": 1.0}


def _reshape_train(model, data, cfg):
    model.weight = nn.Parameter(torch.zeros(2, 2))
    return {"train_loss": 1.0}


def _task(train=None) -> Task:
    return Task(name="tiny", build_model=_build_model, load_data=_load_data, train=train)


def _events(transport: InMemoryTransport) -> list:
    out = []
    while (event := transport.next_event(0.0)) is not None:
        out.append(event)
    return out


def test_nodes_are_named_after_sites():
    sites = [Site(_task(), site=i, num_sites=3, train_config=CFG) for i in (2, 0, 1)]
    transport = InMemoryTransport(sites)
    assert sorted(transport.available_nodes()) == ["site-0", "site-1", "site-2"]
    assert sorted(transport.wait_for_nodes(5, 0.0)) == ["site-0", "site-1", "site-2"]


def test_fit_and_evaluate_produce_results_lazily_in_dispatch_order():
    sites = [Site(_task(), site=i, num_sites=2, train_config=CFG) for i in range(2)]
    transport = InMemoryTransport(sites)
    params = transport.fetch_initial_params(1.0)
    assert digest(params) == digest(sites[0].initial_params())
    assert transport.next_event(0.0) is None
    tasks = transport.dispatch(
        1, ["site-1", "site-0"], Instruction(phase=Phase.FIT, params=params, config={"seed": 0.0})
    )
    assert tasks == {"site-1": "site-1:1:fit", "site-0": "site-0:1:fit"}
    events = _events(transport)
    assert [e.node_id for e in events] == ["site-1", "site-0"]
    for e in events:
        assert isinstance(e, ResultArrived) and isinstance(e.result, FitResult)
        assert e.task_id == tasks[e.node_id]
        assert e.result.num_examples == 4
        assert "train_loss" in e.result.metrics
        assert digest(e.result.params) != digest(params)
    transport.dispatch(1, ["site-0"], Instruction(phase=Phase.EVALUATE, params=params))
    (ev,) = _events(transport)
    assert isinstance(ev.result, EvaluateResult)
    assert ev.result.num_examples == 3
    assert set(ev.result.metrics) == {"loss", "accuracy"}


def test_a_site_whose_training_produces_nan_is_rejected_with_a_reason():
    good = Site(_task(), site=0, num_sites=2, train_config=CFG)
    bad = Site(_task(_nan_train), site=1, num_sites=2, train_config=CFG)
    transport = InMemoryTransport([good, bad])
    tasks = transport.dispatch(
        1, ["site-0", "site-1"], Instruction(phase=Phase.FIT, params=good.initial_params())
    )
    ok, rejected = _events(transport)
    assert isinstance(ok, ResultArrived)
    assert isinstance(rejected, ResultRejected)
    assert rejected.node_id == "site-1"
    assert rejected.task_id == tasks["site-1"]
    assert rejected.reason == "tensor 'weight' has 1 non-finite values (NaN/Inf)"


def test_a_site_that_changes_the_architecture_is_rejected():
    site = Site(_task(_reshape_train), site=0, num_sites=1, train_config=CFG)
    transport = InMemoryTransport([site])
    transport.dispatch(2, ["site-0"], Instruction(phase=Phase.FIT, params=site.initial_params()))
    (event,) = _events(transport)
    assert isinstance(event, ResultRejected)
    assert event.reason == "tensor 'weight' has shape (2, 2), the model has (2, 3)"


def test_close_drops_pending_work():
    site = Site(_task(), site=0, num_sites=1, train_config=CFG)
    transport = InMemoryTransport([site])
    transport.dispatch(1, ["site-0"], Instruction(phase=Phase.FIT, params=site.initial_params()))
    transport.close()
    assert transport.next_event(0.0) is None


# --- parity with the gRPC coordinator's checks ----------------------------------------------------


def _empty_train_data(site, num_sites):
    (x, y), test = _load_data(site, num_sites)
    return (x[:0], y[:0]), test


def _nan_metric_train(model, data, cfg):
    return {"train_loss": float("nan")}


def test_a_fit_result_without_examples_is_rejected_like_the_coordinator_does():
    task = Task(name="empty", build_model=_build_model, load_data=_empty_train_data)
    site = Site(task, site=0, num_sites=1, train_config=CFG)
    transport = InMemoryTransport([site])
    transport.dispatch(1, ["site-0"], Instruction(phase=Phase.FIT, params=site.initial_params()))
    (event,) = _events(transport)
    assert isinstance(event, ResultRejected)
    assert "num_examples 0" in event.reason


def test_non_finite_training_metrics_are_rejected_like_the_coordinator_does():
    site = Site(_task(_nan_metric_train), site=0, num_sites=1, train_config=CFG)
    transport = InMemoryTransport([site])
    transport.dispatch(1, ["site-0"], Instruction(phase=Phase.FIT, params=site.initial_params()))
    (event,) = _events(transport)
    assert isinstance(event, ResultRejected)
    assert "train_loss" in event.reason
