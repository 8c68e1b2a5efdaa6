"""The batched backend's monitoring reports are a site's, with one worker thread or two.

The model's side of a report (forward pass, probabilities, their bins and the predicted
classes) runs in slices spread over ``simulation.workers`` threads, each on its own copy
of the model, and settles most bins from a fast softmax
(:mod:`fedops.simulation.monitor_outputs`). The counts must be exactly those of a site's
``torch.softmax(dim=1)`` over its own rows, whatever the split.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch
from grouped_tasks import grouped_digits
from torch import nn

from fedops.core.monitoring.batched import client_histograms
from fedops.core.monitoring.profile import MonitorSpec, ReportLimits, SiteReport
from fedops.core.params import Params
from fedops.core.rounds import Phase, ResultArrived
from fedops.core.training import TrainConfig
from fedops.data.build import from_task
from fedops.runtime.round_monitor import MonitorSettings, monitor_spec
from fedops.runtime.transport import Instruction
from fedops.simulation.engine import initial_model
from fedops.simulation.inmemory import InMemoryTransport
from fedops.simulation.monitor_outputs import SLICE_ROWS, Counting, window_outputs
from fedops.simulation.spread import Spread
from fedops.simulation.vectorized_backend import VectorizedTransport
from fedops.tasks import load_task
from fedops.tasks.site import Site, initial_params

TRAIN = TrainConfig(epochs=1, batch_size=16, lr=0.1)
EDGE_PROBABILITIES = np.linspace(0.1, 0.9, 9)


def _logits_on_edges(rows: int, classes: int, seed: int) -> np.ndarray:
    """Half the rows put one probability on a bin edge (to float32 rounding), a tenth tie."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, classes)).astype(np.float32) * 2
    for r in range(0, rows, 2):
        target = rng.choice(EDGE_PROBABILITIES)
        rest = rng.dirichlet(np.ones(classes - 1)) * (1 - target)
        z[r] = np.log(np.concatenate([[target], rest]))[rng.permutation(classes)]
    z[::10, 1] = z[::10, 0] = z[::10].max(axis=1)
    return z


@pytest.mark.parametrize("workers", [1, 2])
def test_window_counts_equal_a_sites_softmax_counts(workers: int):
    """An identity model makes ``x`` the logits: counts against client_histograms of the
    site's own probabilities, with every slice of 37 rows (clients cut across slices)."""
    x = _logits_on_edges(1500, 10, seed=workers)
    y = np.random.default_rng(0).integers(0, 10, len(x))
    offsets = np.array([0, 10, 10, 400, 411, 900, 1500])  # an empty client, a short one
    spec = MonitorSpec(num_classes=10)
    exact = torch.softmax(torch.from_numpy(x), dim=1)
    want = client_histograms(spec, x, y, exact.double().numpy(), offsets, exact.numpy().argmax(1))
    models = [nn.Identity() for _ in range(workers)]
    counting = Counting.of(offsets, 10, probabilities=True)
    found = window_outputs(
        models, Spread(workers), x, counting, device=torch.device("cpu"), slice_rows=37
    )
    assert found.counts is not None and found.predicted is not None
    for k in range(10):
        np.testing.assert_array_equal(found.counts[k], want[f"output{k}"], err_msg=f"output{k}")
    np.testing.assert_array_equal(found.predicted, want["prediction"])
    np.testing.assert_array_equal(found.classes, exact.numpy().argmax(1))


def _reports(transport: Any, params: Params, spec: MonitorSpec) -> dict[str, SiteReport | None]:
    nodes = transport.available_nodes()
    transport.dispatch(1, nodes, Instruction(phase=Phase.EVALUATE, params=params, monitor=spec))
    out: dict[str, SiteReport | None] = {}
    while (event := transport.next_event(0.0)) is not None:
        assert isinstance(event, ResultArrived), event
        out[event.node_id] = event.result.report
    return out


def _same(got: SiteReport | None, want: SiteReport | None, where: str) -> None:
    assert (got is None) == (want is None), where
    if got is None or want is None:
        return
    for window in ("reference", "current"):
        g, w = getattr(got, window), getattr(want, window)
        assert list(g) == list(w), where
        for name in w:
            np.testing.assert_array_equal(g[name], w[name], err_msg=f"{where} {window} {name}")
    assert got.drift == want.drift, where
    assert got.fairness == want.fairness, where


@pytest.mark.parametrize("bins", ["outputs", "inputs"])
def test_reports_with_one_or_two_workers_equal_the_sites(bins: str):
    task = grouped_digits()
    n = 6
    params = {k: v * 30 for k, v in initial_params(task, 0).items()}  # confident, spread out
    spec = (
        MonitorSpec(num_classes=10)  # no held-out data: class-probability bins
        if bins == "outputs"
        else monitor_spec(MonitorSettings(bins=10), task, params)
    )
    limits = ReportLimits(min_count=2)
    sites = [
        Site(task, site=i, num_sites=n, train_config=TRAIN, report_limits=limits) for i in range(n)
    ]
    want = _reports(InMemoryTransport(sites), params, spec)
    assert any(r is not None and r.fairness for r in want.values()), "groups to compare"
    for workers, slice_rows in ((1, SLICE_ROWS), (1, 64), (2, 64)):
        transport = VectorizedTransport(
            from_task(task, n, None),
            initial_model(task, 0),
            TRAIN,
            groups_of=task.sensitive_groups,
            report_limits=limits,
            workers=workers,
        )
        transport.monitor.slice_rows = slice_rows  # 64: ~20 slices, both threads get some
        threads: dict[int, set[str]] = {w: set() for w in range(workers)}
        for w, model in enumerate(transport.models):  # which threads ran each copy
            model.register_forward_hook(
                lambda *_, seen=threads[w]: seen.add(threading.current_thread().name)
            )
        got = _reports(transport, params, spec)
        transport.close()
        assert set(got) == set(want)
        for node in want:
            _same(got[node], want[node], f"{bins} workers={workers} {slice_rows} {node}")
        if workers == 2:  # the second copy ran on a thread of its own
            assert threads[1] and threads[1].isdisjoint({threading.current_thread().name})


def test_reference_counts_kept_between_rounds_follow_the_clients_asked():
    """The reference window's label counts are counted once and reused while the request
    and the clients asked stay the same; asking other clients counts theirs."""
    task = load_task("digits")
    n = 5
    params = initial_params(task, 0)
    spec = MonitorSpec(num_classes=10)
    sites = [Site(task, site=i, num_sites=n, train_config=TRAIN) for i in range(n)]
    transport = VectorizedTransport(
        from_task(task, n, None), initial_model(task, 0), TRAIN, workers=2
    )
    for nodes in (["site-0", "site-1", "site-2", "site-3", "site-4"], ["site-3", "site-1"]) * 2:
        want = _ask(InMemoryTransport(sites), nodes, params, spec)
        got = _ask(transport, nodes, params, spec)
        assert set(got) == set(nodes)
        for node in nodes:
            _same(got[node], want[node], f"{nodes} {node}")
    transport.close()


def _ask(transport: Any, nodes: list[str], params: Params, spec: MonitorSpec) -> dict[str, Any]:
    transport.dispatch(1, nodes, Instruction(phase=Phase.EVALUATE, params=params, monitor=spec))
    out: dict[str, Any] = {}
    while (event := transport.next_event(0.0)) is not None:
        assert isinstance(event, ResultArrived), event
        out[event.node_id] = event.result.report
    return out
