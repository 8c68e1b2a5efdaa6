"""Unit tests for fedops.runtime.run: starting, resuming, choosing a strategy."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedops.core.params import digest
from fedops.core.strategies import FedAvg, FedProx
from fedops.runtime.resume import start_or_resume
from fedops.runtime.run import make_strategy
from fedops.runtime.schema import StrategyConfig
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
    assert make_strategy(StrategyConfig(name="fedavg", mu=5.0)) == FedAvg()
    prox = make_strategy(StrategyConfig(name="fedprox", mu=0.25))
    assert isinstance(prox, FedProx) and prox.mu == 0.25
    with pytest.raises(KeyError):
        make_strategy(StrategyConfig(name="fedsgd"))
    with pytest.raises(ValueError, match="mu must be >= 0"):
        make_strategy(StrategyConfig(name="fedprox", mu=-1.0))


def test_a_corrupt_last_checkpoint_falls_back_to_the_newest_that_verifies(tmp_path, caplog):
    """Issue 18 #6: a corrupt checkpoint was exported as model.safetensors, and a resume
    had nowhere to go. Now the run resumes from the newest intact round, says so, and
    the summary's model is that round's."""
    store = RunStore(tmp_path / "run", keep_checkpoints=3)
    start_or_resume(store, {}, _initial)
    rounds = {r: {"w": np.full(4, float(r), np.float32), "b": np.array([r], np.float64)}
              for r in (1, 2, 3)}  # fmt: skip
    for r, params in rounds.items():
        store.save_round(r, params, {"acc": r / 10})
    summary = store.write_summary({"status": "interrupted"})
    assert (summary["model_round"], summary["model_file"]) == (3, "model.safetensors")
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("*00003*")
    checkpoint.write_bytes(checkpoint.read_bytes()[:-8] + b"\0" * 8)  # a disk error
    summary = store.write_summary({"status": "interrupted"})
    assert summary["model_round"] == 2 and "round 3 does not verify" in summary["model_error"]
    store.close()

    store = RunStore(tmp_path / "run", keep_checkpoints=3)
    events: list[dict] = []
    with caplog.at_level(logging.WARNING, logger="fedops.run"):
        start = start_or_resume(store, {}, _refuse, on_fallback=events.append)
    assert start.start_round == 3 and digest(start.params) == digest(rounds[2])
    assert events and events[0]["resumed_from"] == 2 and events[0]["forgotten"] == [3]
    assert "does not match its recorded sha256" in events[0]["reason"]
    assert any("resuming from round 2" in r.getMessage() for r in caplog.records)
    assert store.last_round() == 2 and [m["round"] for m in store.round_metrics()] == [1, 2]
    assert checkpoint.with_name(checkpoint.name + ".corrupt").exists()
    store.close()


def test_with_no_checkpoint_that_verifies_the_resume_is_refused_in_one_line(tmp_path):
    from fedops.runtime.store import StoreError

    store = RunStore(tmp_path / "run", keep_checkpoints=1)
    start_or_resume(store, {}, _initial)
    store.save_round(1, _initial(), {})
    store.save_round(2, _initial(), {})  # keeps only round 2's checkpoint
    for path in (tmp_path / "run" / "checkpoints").iterdir():
        path.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="no earlier checkpoint verifies either"):
        start_or_resume(store, {}, _refuse)
    store.close()


def test_a_fallback_keeps_the_privacy_spent_in_the_rounds_it_forgot(tmp_path):
    """Red team 3: after falling back past two rounds, the forgotten round's old ledger row
    outranked the re-run's, and a restart under-reported the spend."""
    store = RunStore(tmp_path / "run", keep_checkpoints=5)
    start_or_resume(store, {}, _initial)
    for r in range(1, 6):
        store.save_round(r, {"w": np.full(4, float(r), np.float32), "b": np.array([r])}, {})
        store.spend_privacy(r, {"rounds": r})
    for r in (4, 5):
        (path,) = (tmp_path / "run" / "checkpoints").glob(f"*0000{r}*")
        path.write_bytes(b"corrupt")
    start = start_or_resume(store, {}, _refuse)
    assert start.start_round == 4
    assert store.privacy_ledger() == {"rounds": 5}  # still counts what rounds 4 and 5 spent
    store.spend_privacy(4, {"rounds": 6})  # the re-run of round 4 spends again
    store.close()
    store = RunStore(tmp_path / "run", keep_checkpoints=5)
    assert store.privacy_ledger() == {"rounds": 6}  # after a restart: nothing lost
    store.close()
