"""Unit tests for fedops.core.training: config checks, params I/O, train and evaluate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fedops.core.params import digest
from fedops.core.training import (
    TrainConfig,
    as_tensors,
    evaluate,
    get_params,
    num_examples,
    set_params,
    train,
)


def _data(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + 2 * (x[:, 2] > 0.5)
    return x, y


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a))


# --- TrainConfig ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": float("nan")}, "lr must be > 0"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"proximal_mu": -0.1}, "proximal_mu must be >= 0"),
    ],
)
def test_train_config_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


# --- params in and out of a model -------------------------------------------------------------


def test_get_params_copies_the_state_dict():
    model = _model()
    params = get_params(model)
    assert list(params) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert params["0.weight"].shape == (8, 4)
    params["0.weight"][:] = 0.0
    assert not np.all(model[0].weight.detach().numpy() == 0.0)


def test_set_params_roundtrips_and_does_not_alias():
    source = get_params(_model(1))
    model = _model(2)
    set_params(model, source)
    assert digest(get_params(model)) == digest(source)
    source["0.bias"][:] = 42.0
    assert not np.any(model[0].bias.detach().numpy() == 42.0)


def test_set_params_refuses_wrong_names():
    params = get_params(_model())
    params["extra"] = np.zeros(1, np.float32)
    with pytest.raises(RuntimeError, match="extra"):
        set_params(_model(), params)


def test_as_tensors_and_num_examples():
    x, y = _data(10)
    tx, ty = as_tensors((x, y))
    assert tx.dtype == torch.float32 and ty.dtype == torch.long
    assert num_examples((tx, ty)) == 10
    ds = TensorDataset(tx, ty)
    assert as_tensors(ds) is ds
    assert num_examples(ds) == 10


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_hand_computed_loss_and_accuracy():
    model = nn.Linear(2, 2)
    set_params(model, {"weight": np.eye(2, dtype=np.float32), "bias": np.zeros(2, np.float32)})
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    y = np.array([0, 1, 1])
    metrics = evaluate(model, (x, y), batch_size=2)
    # logits [1, 0] or [0, 1]: right class -> log(1 + e^-1), wrong class -> log(1 + e)
    want_loss = (2 * math.log1p(math.exp(-1)) + math.log1p(math.e)) / 3
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["loss"] == pytest.approx(want_loss, rel=1e-6)


def test_evaluate_on_empty_data_reports_nothing():
    # no NaN to poison a weighted mean: results without examples are skipped there
    assert evaluate(nn.Linear(2, 2), (np.zeros((0, 2), np.float32), np.zeros(0))) == {}


def test_evaluate_accepts_a_dataset():
    x, y = as_tensors(_data(50))
    model = _model()
    assert evaluate(model, TensorDataset(x, y), batch_size=7) == pytest.approx(
        evaluate(model, (x, y))
    )


# --- train ------------------------------------------------------------------------------------


def test_train_reports_the_loss_seen_before_each_step():
    # one epoch, one full batch: the reported loss is the starting model's loss
    data = _data(64)
    model = _model()
    before = evaluate(model, data)["loss"]
    metrics = train(model, data, TrainConfig(batch_size=64, lr=0.1))
    assert metrics["train_loss"] == pytest.approx(before, rel=1e-5)
    assert evaluate(model, data)["loss"] < before


def test_train_improves_accuracy():
    data = _data(200)
    model = _model()
    before = evaluate(model, data)["accuracy"]
    train(model, data, TrainConfig(epochs=20, batch_size=16, lr=0.1))
    after = evaluate(model, data)["accuracy"]
    assert after > before
    assert after > 0.8


def test_train_with_the_same_seed_is_bitwise_deterministic():
    data = _data()
    cfg = TrainConfig(epochs=3, batch_size=10, lr=0.1, momentum=0.9, seed=11)
    a, b = _model(5), _model(5)
    ma, mb = train(a, data, cfg), train(b, data, cfg)
    assert ma == mb
    pa, pb = get_params(a), get_params(b)
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name])


def test_train_shuffle_depends_on_seed():
    data = _data()
    a, b = _model(5), _model(5)
    train(a, data, TrainConfig(batch_size=10, seed=1))
    train(b, data, TrainConfig(batch_size=10, seed=2))
    assert digest(get_params(a)) != digest(get_params(b))


def test_proximal_term_keeps_weights_closer_to_the_start():
    data = _data(200)
    start = get_params(_model(3))
    distances = {}
    for mu in (0.0, 0.1, 5.0):
        model = _model(0)
        set_params(model, start)
        train(model, data, TrainConfig(epochs=5, batch_size=16, lr=0.1, proximal_mu=mu, seed=4))
        distances[mu] = _distance(get_params(model), start)
    assert distances[0.0] > distances[0.1] > distances[5.0] > 0.0
    assert distances[5.0] < 0.5 * distances[0.0]


@pytest.mark.parametrize("mu", [0.0, 0.5, 3.0])
def test_training_with_the_proximal_term_matches_hand_written_fedprox_steps(mu):
    """An independent oracle (issue 21 replaced a test comparing two identical configs):
    full-batch gradient steps w <- w - lr * (grad CE(w) + mu * (w - w0)), the gradient of
    FedProx's mu/2 ||w - w0||^2 written out by hand, with w0 the weights on entry."""
    x, y = _data()
    model, oracle = _model(5), _model(5)
    lr, epochs = 0.2, 4
    train(model, (x, y), TrainConfig(epochs=epochs, batch_size=len(y), lr=lr, proximal_mu=mu))

    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    anchor = [p.detach().clone() for p in oracle.parameters()]
    for _ in range(epochs):
        oracle.zero_grad()
        nn.functional.cross_entropy(oracle(xs), ys).backward()
        with torch.no_grad():
            for p, a in zip(oracle.parameters(), anchor, strict=True):
                p -= lr * (p.grad + mu * (p - a))
    got, want = get_params(model), get_params(oracle)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=2e-6, err_msg=name)


def test_adam_and_dataset_input_train_too():
    x, y = as_tensors(_data(100))
    model = _model()
    start = get_params(model)
    metrics = train(model, TensorDataset(x, y), TrainConfig(optimizer="adam", lr=0.01))
    assert math.isfinite(metrics["train_loss"])
    assert _distance(get_params(model), start) > 0.0


def test_frozen_parameters_are_not_trained():
    model = _model()
    model[0].weight.requires_grad_(False)
    before = get_params(model)
    train(model, _data(), TrainConfig(batch_size=10, proximal_mu=1.0))
    after = get_params(model)
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])
    assert not np.array_equal(after["2.weight"], before["2.weight"])
