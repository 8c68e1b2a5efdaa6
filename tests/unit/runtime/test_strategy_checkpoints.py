"""A server optimizer's state in the run store: kept with each round, never in the model.

The state (FedAdam's moments) rides in the round's checkpoint, under the sha256
the round commits, so a resumed run continues exactly (test_driver.py checks
that end to end). These tests pin what must not happen: the exported model
carrying the state, a state read by a strategy that did not write it, a state
for another model reaching a round, and a stateful strategy restarting from
zero without a word.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedops.core.results import FitResult
from fedops.core.strategies import FedAdam, FedAvg, FedAvgM, FedYogi
from fedops.core.strategies.protocol import strategy_state
from fedops.runtime.checkpoint_file import STATE_PREFIX
from fedops.runtime.resume import start_or_resume
from fedops.runtime.store import RunStore, StoreError

PARAMS = {"w": np.zeros(3, np.float32), "b": np.zeros(1, np.float32)}


def _result(value: float) -> FitResult:
    params = {k: np.full_like(v, value) for k, v in PARAMS.items()}
    return FitResult(node_id="a", params=params, num_examples=1)


def _one_round(store: RunStore, strategy) -> dict[str, np.ndarray]:
    start = start_or_resume(store, {}, lambda: dict(PARAMS), strategy=strategy)
    params = strategy.aggregate_fit(1, start.params, [_result(1.0)])
    store.save_round(1, params, {}, strategy_state=strategy_state(strategy), strategy=strategy.name)
    return params


def test_the_exported_model_holds_the_model_only(tmp_path):
    store = RunStore(tmp_path)
    params = _one_round(store, FedAdam())
    store.write_summary({})
    exported = load_file(str(tmp_path / "model.safetensors"))
    assert set(exported) == set(PARAMS)  # load_state_dict(strict=True) takes it
    for name in PARAMS:
        np.testing.assert_array_equal(exported[name], params[name])
    checkpoint = store.load_checkpoint(1)  # … while the checkpoint keeps the moments
    assert {"m.w", "v.w", "step"} <= set(checkpoint.strategy_state)
    assert checkpoint.strategy == "fedadam"


def test_a_state_is_read_only_by_the_strategy_that_wrote_it(tmp_path):
    store = RunStore(tmp_path)
    _one_round(store, FedAdam())
    # FedYogi keeps the same m/v/step names, but its v means something else
    with pytest.raises(StoreError, match="written by strategy 'fedadam', not 'fedyogi'"):
        start_or_resume(store, {}, pytest.fail, strategy=FedYogi())
    with pytest.raises(StoreError, match="written by strategy 'fedadam', not 'fedavg'"):
        start_or_resume(store, {}, pytest.fail, strategy=FedAvg())
    resumed = FedAdam()
    start_or_resume(store, {}, pytest.fail, strategy=resumed)
    assert int(resumed.state()["step"]) == 1


def test_a_state_for_another_model_is_refused_before_any_round(tmp_path):
    store = RunStore(tmp_path)
    start_or_resume(store, {}, lambda: dict(PARAMS), strategy=FedAdam())
    foreign = {"step": np.array(4), "m.other": np.zeros(2), "v.other": np.ones(2)}
    store.save_round(1, dict(PARAMS), {}, strategy_state=foreign, strategy="fedadam")
    with pytest.raises(StoreError, match=r"[mv]\.other is for a tensor the model does not have"):
        start_or_resume(store, {}, pytest.fail, strategy=FedAdam())
    wrong_shape = {"step": np.array(4), "m.w": np.zeros(5), "v.w": np.ones(5)}
    wrong_shape |= {"m.b": np.zeros(1), "v.b": np.ones(1)}
    store.save_round(2, dict(PARAMS), {}, strategy_state=wrong_shape, strategy="fedadam")
    with pytest.raises(StoreError, match=r"[mv]\.w has shape \(5,\), the model.s w \(3,\)"):
        start_or_resume(store, {}, pytest.fail, strategy=FedAdam())


def test_a_stateful_strategy_without_a_saved_state_says_it_starts_afresh(tmp_path, caplog):
    store = RunStore(tmp_path)
    start_or_resume(store, {}, lambda: dict(PARAMS))  # a checkpoint from before states
    store.save_round(1, dict(PARAMS), {})
    with caplog.at_level(logging.WARNING, logger="fedops.run"):
        start_or_resume(store, {}, pytest.fail, strategy=FedAvgM())
    assert "holds no state for strategy 'fedavgm' (written by an older fedops)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedops.run"):
        start_or_resume(store, {}, pytest.fail, strategy=FedAvg())  # stateless: nothing lost
    assert "holds no state" not in caplog.text


def test_a_model_tensor_may_not_take_the_state_prefix(tmp_path):
    store = RunStore(tmp_path)
    store.open_run({})
    with pytest.raises(ValueError, match="may not start with 'strategy_state/'"):
        store.save_round(0, {STATE_PREFIX + "w": np.zeros(1, np.float32)}, {})
