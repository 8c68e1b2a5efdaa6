"""Unit tests for fedops.runtime.run: starting, resuming, choosing a strategy."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedops.core.params import digest
from fedops.core.strategies import FedAvg, FedProx
from fedops.runtime.run import make_strategy, start_or_resume
from fedops.runtime.store import RunStore


def _initial():
    return {"w": np.arange(4, dtype=np.float32), "b": np.array([0.5], np.float64)}


def _refuse():
    raise AssertionError("a resumed run must not build a new initial model")


def test_first_start_commits_round_zero(tmp_path):
    store = RunStore(tmp_path / "run")
    start = start_or_resume(store, {"rounds": 3}, _initial)
    assert start.start_round == 1
    assert start.resumed is False
    assert store.last_round() == 0
    assert digest(store.load_round(0)) == digest(_initial()) == digest(start.params)
    assert store.open_run({"rounds": 3}) == (start.run_id, True)
    store.close()


def test_second_start_resumes_with_identical_params(tmp_path):
    store = RunStore(tmp_path / "run")
    first = start_or_resume(store, {"rounds": 3}, _initial)
    store.close()
    store = RunStore(tmp_path / "run")
    second = start_or_resume(store, {"rounds": 3}, _refuse)
    assert second.run_id == first.run_id
    assert (second.start_round, second.resumed) == (1, True)
    assert list(second.params) == list(first.params)
    for name, arr in first.params.items():
        assert second.params[name].dtype == arr.dtype
        assert second.params[name].tobytes() == arr.tobytes()
    store.close()


def test_resume_starts_after_the_last_committed_round(tmp_path):
    store = RunStore(tmp_path / "run")
    start_or_resume(store, {}, _initial)
    latest = {"w": np.full(4, 7.0, np.float32), "b": np.array([-2.0])}
    store.save_round(1, {"w": np.ones(4, np.float32), "b": np.array([1.0])}, {"acc": 0.1})
    store.save_round(2, latest, {"acc": 0.2})
    store.close()
    store = RunStore(tmp_path / "run")
    start = start_or_resume(store, {}, _refuse)
    assert start.start_round == 3
    assert digest(start.params) == digest(latest)
    store.close()


def test_resume_with_a_changed_config_warns(tmp_path, caplog):
    store = RunStore(tmp_path / "run")
    start_or_resume(store, {"lr": 0.1}, _initial)
    with caplog.at_level(logging.WARNING, logger="fedops.run"):
        start_or_resume(store, {"lr": 0.1}, _refuse)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with caplog.at_level(logging.WARNING, logger="fedops.run"):
        start = start_or_resume(store, {"lr": 0.2}, _refuse)
    assert start.resumed
    assert any("differs" in r.getMessage() for r in caplog.records)
    store.close()


def test_make_strategy():
    assert make_strategy("fedavg", mu=5.0) == FedAvg()
    prox = make_strategy("fedprox", mu=0.25)
    assert isinstance(prox, FedProx) and prox.mu == 0.25
    with pytest.raises(KeyError):
        make_strategy("fedsgd", mu=0.0)
    with pytest.raises(ValueError, match="mu must be >= 0"):
        make_strategy("fedprox", mu=-1.0)
