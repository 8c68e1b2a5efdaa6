"""The batched CNN trainer computes what the per-client loop computes, client by client.

Random small conv nets from the supported layer set (Conv2d with either padding mode,
pooling, BatchNorm/GroupNorm/LayerNorm, activations, Flatten, Linear, Dropout with p=0)
on random ragged client data: every client's parameters and BatchNorm statistics equal
the plain :func:`fedops.core.training.train` loop's. Dropout with p>0 draws its masks
from a per-client hash instead of torch's generator, so it is checked for rate,
independence across clients and determinism rather than against the loop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from fedops.core.batched_cnn import cnn_chain, structure, train_cnn
from fedops.core.batched_layers import Pass, client_keys, forward, parse, step_keys
from fedops.core.schedule import ClientJob, VectorConfig
from fedops.core.training import TrainConfig, get_params, set_params, train
from fedops.core.vectorized import supports, train_many

LR = 0.05  # small enough that float32 rounding differences do not grow chaotically


def _conv_block(rng: np.random.Generator, cin: int, norm: str, act: str, pool: str) -> list:
    cout = int(rng.integers(2, 4))
    mode = str(rng.choice(["zeros", "reflect"]))
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, padding_mode=mode)]
    layers += {"none": [], "bn": [nn.BatchNorm2d(cout)], "gn": [nn.GroupNorm(1, cout)]}[norm]
    layers.append({"relu": nn.ReLU(), "tanh": nn.Tanh(), "gelu": nn.GELU()}[act])
    layers += {"none": [], "max": [nn.MaxPool2d(2)], "avg": [nn.AvgPool2d(2)]}[pool]
    return layers


def _cnn(seed: int, blocks: list[tuple[str, str, str]], head_norm: str) -> nn.Sequential:
    """A conv net on [N, 2, 6, 6] images: conv blocks, Flatten, a hidden layer, 3 classes."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = []
    channels, side = 2, 6
    for norm, act, pool in blocks:
        block = _conv_block(rng, channels, norm, act, pool)
        channels = block[0].out_channels
        side = side // 2 if pool != "none" else side
        layers += block
    hidden = {"none": [], "bn": [nn.BatchNorm1d(5)], "ln": [nn.LayerNorm(5)]}[head_norm]
    layers += [nn.Flatten(), nn.Linear(channels * side * side, 5), *hidden, nn.ReLU()]
    layers += [nn.Dropout(0.0), nn.Linear(5, 3)]
    return nn.Sequential(*layers)


def _ragged(sizes: list[int], batch: int, seed: int, shape=(2, 6, 6)):
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    x = torch.tensor(rng.normal(size=(total, *shape)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, total))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    jobs = [
        ClientJob(start=int(offsets[i]), stop=int(offsets[i + 1]), epochs=1 + i % 2, seed=70 + i)
        for i in range(len(sizes))
    ]
    return x, y, jobs


def _loop(model, start, data, job, cfg: VectorConfig):
    set_params(model, start)
    metrics = train(
        model,
        data,
        TrainConfig(
            epochs=job.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            momentum=cfg.momentum,
            proximal_mu=cfg.proximal_mu,
            seed=job.seed,
        ),
    )
    return get_params(model), metrics["train_loss"]


def _assert_equals_loop(model, start, x, y, jobs, got, cfg: VectorConfig, tol=(1e-4, 1e-5)):
    """``got`` holds every client's loop result; float32 by default: summation order
    differs (a grouped convolution, batched products), so equal within ``tol``."""
    assert len(got) == len(jobs)
    for job, (params, loss) in zip(jobs, got, strict=True):
        data = TensorDataset(x[job.start : job.stop], y[job.start : job.stop])
        want, want_loss = _loop(model, start, data, job, cfg)
        assert params.keys() == want.keys()
        for name, value in want.items():  # parameters and BatchNorm statistics alike
            assert params[name].dtype == value.dtype and params[name].shape == value.shape
            np.testing.assert_allclose(params[name], value, rtol=tol[0], atol=tol[1], err_msg=name)
        assert loss == pytest.approx(want_loss, rel=tol[0], abs=tol[1] / 10)


BLOCK = st.tuples(
    st.sampled_from(["none", "bn", "gn"]),
    st.sampled_from(["relu", "tanh", "gelu"]),
    st.sampled_from(["none", "max", "avg"]),
)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    blocks=st.lists(BLOCK, min_size=1, max_size=2),
    head_norm=st.sampled_from(["none", "bn", "ln"]),
    sizes=st.lists(st.integers(0, 20), min_size=1, max_size=6),
    batch=st.integers(3, 8),
    momentum=st.sampled_from([0.0, 0.9]),
    mu=st.sampled_from([0.0, 0.3]),
    max_chunk=st.integers(1, 6),
    double=st.booleans(),
)
def test_random_conv_nets_train_as_the_per_client_loop(
    seed, blocks, head_norm, sizes, batch, momentum, mu, max_chunk, double
):
    """In float64 equal to 1e-9: the same computation, not merely a close one. In float32
    within 1e-4/1e-5, except BatchNorm1d over 3-8 rows of 5 features: a nearly constant
    feature divides float32 rounding by its tiny deviation (differences up to 3e-5 seen,
    1e-14 in float64), so that head is checked in float64 only."""
    assume(double or head_norm != "bn")
    # BatchNorm in training refuses a one-row minibatch and is ill-conditioned on two:
    # the loop itself cannot train those, so no client's last minibatch is that short
    sizes = [s + (3 - s % batch if s % batch in (1, 2) else 0) for s in sizes]
    dtype = torch.float64 if double else torch.float32
    model = _cnn(seed, blocks, head_norm).to(dtype)
    x, y, jobs = _ragged(sizes, batch, seed)
    x = x.to(dtype)
    chain = cnn_chain(model, x)
    assert not isinstance(chain, str), chain
    start = get_params(model)
    cfg = VectorConfig(
        batch_size=batch, lr=LR, momentum=momentum, proximal_mu=mu, max_chunk=max_chunk
    )
    got = train_cnn(model, chain, start, x, y, jobs, cfg)
    tol = (1e-9, 1e-12) if double else (1e-4, 1e-5)
    _assert_equals_loop(model, start, x, y, jobs, got, cfg, tol)


def test_the_default_path_of_train_many_takes_conv_nets_with_batchnorm():
    """BatchNorm models are no longer refused: supports() lets them in, train_many trains
    them with per-client running statistics (they differ between clients)."""
    model = _cnn(3, [("bn", "relu", "max")], "bn")
    assert supports(model) is None
    x, y, jobs = _ragged([9, 14, 0, 12], 3, 1)
    start = get_params(model)
    cfg = VectorConfig(batch_size=3, lr=LR, momentum=0.9)
    got = train_many(model, start, x, y, jobs, cfg)
    _assert_equals_loop(model, start, x, y, jobs, got, cfg)
    means = [got[i][0]["1.running_mean"] for i in (0, 1, 3)]
    assert not np.allclose(means[0], means[1]) and not np.allclose(means[1], means[2])
    assert int(got[1][0]["1.num_batches_tracked"]) == 10  # 14 rows, batch 3, 2 epochs
    np.testing.assert_array_equal(got[2][0]["1.running_mean"], start["1.running_mean"])


def test_batchnorm_with_a_cumulative_average_and_no_affine():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3, momentum=None, affine=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(48, 4),
        nn.BatchNorm1d(4, track_running_stats=False),
        nn.Linear(4, 3),
    )
    x, y, jobs = _ragged([10, 7, 14], 4, 2)
    chain = cnn_chain(model, x)
    assert not isinstance(chain, str), chain
    start = get_params(model)
    cfg = VectorConfig(batch_size=4, lr=LR)
    _assert_equals_loop(
        model, start, x, y, jobs, train_cnn(model, chain, start, x, y, jobs, cfg), cfg
    )


def test_embeddings_train_as_the_per_client_loop():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Embedding(12, 4),
        nn.Flatten(),
        nn.Linear(20, 6),
        nn.LayerNorm(6),
        nn.Tanh(),
        nn.Linear(6, 3),
    )
    rng = np.random.default_rng(5)
    sizes = [11, 0, 6, 17]
    x = torch.tensor(rng.integers(0, 12, (sum(sizes), 5)))
    y = torch.tensor(rng.integers(0, 3, sum(sizes)))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    jobs = [
        ClientJob(start=int(offsets[i]), stop=int(offsets[i + 1]), epochs=2, seed=i)
        for i in range(len(sizes))
    ]
    chain = cnn_chain(model, x)
    assert not isinstance(chain, str), chain
    start = get_params(model)
    cfg = VectorConfig(batch_size=4, lr=LR, momentum=0.9, proximal_mu=0.1)
    got = train_cnn(model, chain, start, x, y, jobs, cfg)
    _assert_equals_loop(model, start, x, y, jobs, got, cfg)


def _dropout_masks(p: float, keys: torch.Tensor, step: int, spatial: bool) -> torch.Tensor:
    """The masks ``[clients, rows, features]`` a Dropout layer draws for ``keys`` at ``step``,
    on images (clients stacked on channels) or on feature rows."""
    ops = parse(nn.Sequential(nn.Dropout(p), nn.Flatten()))
    assert isinstance(ops, list)
    n = len(keys)
    run = Pass(n=n, training=True, keys=step_keys(keys, step))
    h = torch.ones(64, n * 2, 4, 4) if spatial else torch.ones(n, 64, 32)
    return forward(ops, {}, {}, h, spatial, run)


@pytest.mark.parametrize("spatial", [False, True])
def test_dropout_masks_are_per_client_seeded_and_at_rate(spatial):
    keys = client_keys([11, 12, 13, 2**40 + 11], torch.device("cpu"))
    masks = _dropout_masks(0.3, keys, 0, spatial)
    assert torch.isclose(masks, torch.tensor(1 / 0.7)).logical_or(masks == 0).all()
    kept = (masks > 0).double()
    rate = kept.mean(dim=(1, 2))
    assert ((rate - 0.7).abs() < 0.04).all(), rate  # 2048 elements a client: sd ~0.01
    flat = kept.reshape(len(keys), -1)
    corr = torch.corrcoef(flat)
    off_diagonal = corr[~torch.eye(len(keys), dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.1, corr  # independent across clients
    again = _dropout_masks(0.3, keys, 0, spatial)
    assert torch.equal(masks, again)  # deterministic
    alone = _dropout_masks(0.3, keys[2:3], 0, spatial)
    assert torch.equal(alone[0], masks[2])  # a client's mask does not depend on its chunk
    later = (_dropout_masks(0.3, keys, 1, spatial) > 0).double().reshape(len(keys), -1)
    assert (later != flat).any(dim=1).all()  # a new mask every step


def test_training_with_dropout_is_deterministic_and_independent_of_the_chunking():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.Dropout(0.5), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3)
    )
    x, y, jobs = _ragged([10, 7, 13, 4], 4, 3)
    chain = cnn_chain(model, x)
    assert not isinstance(chain, str)
    start = get_params(model)
    runs = [
        train_cnn(model, chain, start, x, y, jobs, VectorConfig(batch_size=4, lr=LR, max_chunk=w))
        for w in (4, 4, 1)
    ]
    for other in runs[1:]:
        for (a, _), (b, _) in zip(runs[0], other, strict=True):
            for name in a:
                np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)
    # and dropout did something: p=0.5 does not train what p=0 trains
    model[1].p = 0.0
    plain = train_cnn(model, chain, start, x, y, jobs, VectorConfig(batch_size=4, lr=LR))
    assert not np.allclose(plain[0][0]["4.weight"], runs[0][0][0]["4.weight"])


def test_layers_it_cannot_batch_go_to_the_general_trainer_with_a_reason():
    images = torch.zeros(4, 2, 6, 6)

    def why(*modules: nn.Module, x: torch.Tensor = images) -> str:
        reason = cnn_chain(nn.Sequential(*modules), x)
        assert isinstance(reason, str)
        return reason

    assert "Conv1d" in why(
        nn.Conv1d(2, 2, 3), nn.Flatten(), nn.Linear(8, 2), x=torch.zeros(4, 2, 6)
    )
    assert "Dropout2d" in why(nn.Conv2d(2, 2, 3), nn.Dropout2d(), nn.Flatten(), nn.Linear(32, 2))
    assert "Flatten" in why(nn.Flatten(0), nn.Linear(72, 2))
    assert "padding_idx" in why(nn.Embedding(5, 2, padding_idx=0), nn.Flatten(), nn.Linear(4, 2))
    # a Linear over the image's last axis is no layer of a per-client row layout
    assert "batched" in why(nn.Conv2d(2, 2, 3), nn.Linear(4, 2), nn.Flatten(), nn.Linear(16, 2))
    assert "dtype" in why(nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(32, 2), x=images.double())

    class Scaled(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    assert "Scaled" in why(Scaled(2, 2, 3), nn.Flatten(), nn.Linear(32, 2))
    shared = nn.Linear(4, 4)
    assert "twice" in str(structure(nn.Sequential(nn.Flatten(), shared, shared)))
    # buffers only where batched_cnn keeps them per client
    odd = nn.Sequential(nn.Conv1d(2, 2, 3), nn.BatchNorm1d(2), nn.Flatten(), nn.Linear(8, 2))
    assert "Conv1d" in (supports(odd) or "")
    extra = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    extra.register_buffer("scale", torch.ones(1))
    assert "not a BatchNorm running statistic" in (supports(extra) or "")


def test_a_conv_net_without_buffers_that_batched_cnn_refuses_still_trains_through_vmap():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Dropout2d(0.0), nn.Flatten(), nn.Linear(32, 3))
    x, y, jobs = _ragged([8, 11], 4, 4)
    start = get_params(model)
    cfg = VectorConfig(batch_size=4, lr=LR, min_width=1)
    _assert_equals_loop(model, start, x, y, jobs, train_many(model, start, x, y, jobs, cfg), cfg)


def test_a_batchnorm_model_its_probe_refuses_trains_client_by_client():
    """BatchNorm1d over [N, C, L] rows passes the layer check but not the batched layout:
    train_many then runs the plain loop per client (vmap cannot update buffers)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(2), nn.Flatten(), nn.Linear(12, 3))
    x, y, jobs = _ragged([8, 11], 4, 4, shape=(2, 6))
    assert supports(model) is None and isinstance(cnn_chain(model, x), str)
    start = get_params(model)
    cfg = VectorConfig(batch_size=4, lr=LR)
    _assert_equals_loop(model, start, x, y, jobs, train_many(model, start, x, y, jobs, cfg), cfg)
