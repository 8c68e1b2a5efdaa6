"""Vectorized training equals the per-client loop it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedops.core.schedule import ClientJob, VectorConfig
from fedops.core.stacked import chain_of
from fedops.core.training import TrainConfig, get_params, set_params, train
from fedops.core.vectorized import chunks, supports, train_many

# Small enough that training is not chaotic: at lr 0.1 with momentum 0.9 and single-example
# batches an MLP's weights grow to ~10 within 80 steps and float32 rounding differences of
# the batched sums grow with them (up to 5e-3 seen); at 0.05 the worst of 1,200 random
# cases was 8e-7, well inside the tolerance below.
LR = 0.05


def _models():
    torch.manual_seed(0)
    return {
        "logreg": nn.Sequential(nn.Flatten(), nn.Linear(6, 3)),
        "mlp": nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
        # every activation the stacked trainer writes out, a layer without bias, nesting
        "deep": nn.Sequential(
            nn.Flatten(),
            nn.Sequential(nn.Linear(6, 5), nn.Tanh()),
            nn.Linear(5, 4, bias=False),
            nn.LeakyReLU(0.2),
            nn.Identity(),
            nn.Linear(4, 4),
            nn.Sigmoid(),
            nn.Linear(4, 3),
        ),
    }


def _sequential(model, start, x, y, job, batch, momentum, mu):
    set_params(model, start)
    metrics = train(
        model,
        (x[job.start : job.stop], y[job.start : job.stop]),
        TrainConfig(
            epochs=job.epochs,
            batch_size=batch,
            lr=LR,
            momentum=momentum,
            proximal_mu=mu,
            seed=job.seed,
        ),
    )
    return get_params(model), metrics["train_loss"]


def _assert_loop_results(model, start, x, y, jobs, got, *, batch, momentum=0.0, mu=0.0):
    """``got`` (from train_many) holds what the per-client loop computes for every job."""
    assert len(got) == len(jobs)
    for job, (params, loss) in zip(jobs, got, strict=True):
        want, want_loss = _sequential(model, start, x, y, job, batch, momentum, mu)
        assert params.keys() == want.keys()
        for name, value in want.items():
            # float32, summed in another order by the batched loop; momentum over up to 80
            # single-example steps grows last-bit differences to a few 1e-6 (seen: 4.8e-6)
            np.testing.assert_allclose(params[name], value, rtol=1e-5, atol=2e-5)
        assert loss == pytest.approx(want_loss, rel=1e-5, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=9),
    batch=st.integers(1, 12),
    momentum=st.sampled_from([0.0, 0.9]),
    mu=st.sampled_from([0.0, 0.3]),
    arch=st.sampled_from(["logreg", "mlp", "deep"]),
    max_chunk=st.integers(1, 5),
    stacked=st.booleans(),
)
def test_train_many_matches_the_sequential_loop(
    sizes, batch, momentum, mu, arch, max_chunk, stacked
):
    """Both batched trainers (stacked chains and torch.func) compute the per-client loop."""
    rng = np.random.default_rng(len(sizes) * 31 + batch)
    total = sum(sizes)
    x = torch.tensor(rng.normal(size=(total, 6)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, total))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    model = _models()[arch]
    start = get_params(model)
    jobs = [
        ClientJob(start=int(offsets[i]), stop=int(offsets[i + 1]), epochs=1 + i % 2, seed=1000 + i)
        for i in range(len(sizes))
    ]
    cfg = VectorConfig(
        batch_size=batch,
        lr=LR,
        momentum=momentum,
        proximal_mu=mu,
        max_chunk=max_chunk,
        stacked=stacked,
    )
    got = train_many(model, start, x, y, jobs, cfg)
    _assert_loop_results(model, start, x, y, jobs, got, batch=batch, momentum=momentum, mu=mu)


@pytest.mark.parametrize("stacked", [True, False])
def test_rounds_where_no_client_has_rows_return_the_start_model(stacked):
    model = _models()["mlp"]
    start = get_params(model)
    x, y = torch.zeros(0, 6), torch.zeros(0, dtype=torch.long)
    jobs = [
        ClientJob(start=0, stop=0, epochs=2, seed=1),
        ClientJob(start=0, stop=0, epochs=1, seed=2),
    ]
    got = train_many(model, start, x, y, jobs, VectorConfig(batch_size=3, lr=LR, stacked=stacked))
    for params, loss in got:
        assert loss == 0.0
        for name, value in start.items():
            np.testing.assert_array_equal(params[name], value)


@pytest.mark.parametrize("stacked", [True, False])
def test_a_client_with_nan_rows_does_not_leak_into_the_others(stacked):
    """Padding never borrows another client's rows: a NaN there would poison a zero weight."""
    model = _models()["mlp"]
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.normal(size=(23, 6)), dtype=torch.float32)
    x[:3] = float("nan")  # all of client 0's rows
    y = torch.tensor(rng.integers(0, 3, 23))
    start = get_params(model)
    jobs = [
        ClientJob(start=0, stop=3, epochs=1, seed=5),
        ClientJob(start=3, stop=10, epochs=2, seed=6),  # batches of 4: every epoch padded
        ClientJob(start=10, stop=23, epochs=1, seed=7),
    ]
    cfg = VectorConfig(batch_size=4, lr=LR, min_width=1, stacked=stacked)
    got = train_many(model, start, x, y, jobs, cfg)
    assert all(np.isnan(v).all() for v in got[0][0].values())
    for params, _ in got[1:]:
        assert all(np.isfinite(v).all() for v in params.values())
    _assert_loop_results(model, start, x, y, jobs[1:], got[1:], batch=4)


def test_the_stacked_trainer_takes_chains_of_linear_layers_and_names_what_it_cannot():
    models, rows = _models(), torch.zeros(2, 6)
    for name in ("logreg", "mlp", "deep"):
        chain = chain_of(models[name], rows)
        assert isinstance(chain, list), name
        assert [layer.kind for layer in chain if layer.kind not in ("linear", "flatten")] == {
            "logreg": [],
            "mlp": ["relu"],
            "deep": ["tanh", "leaky_relu", "sigmoid"],
        }[name]
    pairs = torch.zeros(2, 2)

    def why(*modules: nn.Module, inputs: torch.Tensor = pairs) -> str:
        reason = chain_of(nn.Sequential(*modules), inputs)
        assert isinstance(reason, str)
        return reason

    assert "Conv2d" in why(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    assert "Flatten" in why(nn.Flatten(0), nn.Linear(2, 2))
    assert "ending in a linear layer" in why(nn.Linear(2, 2), nn.ReLU())
    frozen = nn.Linear(2, 2)
    frozen.weight.requires_grad_(False)
    assert "trainable" in why(frozen, nn.ReLU(), nn.Linear(2, 2))
    assert "BatchNorm1d" in why(nn.Linear(2, 2), nn.BatchNorm1d(2))
    buffered = nn.Sequential(nn.Linear(2, 2))
    buffered.register_buffer("scale", torch.ones(1))
    assert "buffers" in str(chain_of(buffered, pairs))

    class Doubled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    assert "Doubled" in why(Doubled(2, 2))  # a subclass may change forward: not trusted
    assert "floating point" in why(nn.Linear(2, 2), inputs=pairs.double())
    # nn.Linear on [rows, 3, 2] maps the last axis only: not the stacked 2-D layout
    assert "Flatten" in why(nn.Linear(2, 2), inputs=torch.zeros(4, 3, 2))
    assert isinstance(
        chain_of(nn.Sequential(nn.Flatten(), nn.Linear(6, 2)), torch.zeros(4, 3, 2)), list
    )


def test_rows_with_several_feature_axes_are_flattened_as_the_model_does():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(25, 2, 3)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, 25))
    start = get_params(model)
    jobs = [
        ClientJob(start=0, stop=9, epochs=2, seed=3),
        ClientJob(start=9, stop=25, epochs=1, seed=4),
    ]
    got = train_many(model, start, x, y, jobs, VectorConfig(batch_size=4, lr=LR, momentum=0.9))
    _assert_loop_results(model, start, x, y, jobs, got, batch=4, momentum=0.9)


def test_a_model_the_stacked_trainer_cannot_take_still_trains_vectorized():
    """A Conv net falls back to torch.func and still equals the per-client loop."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)
    )
    assert isinstance(chain_of(model, torch.zeros(2, 6)), str)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(30, 6)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, 30))
    start = get_params(model)
    jobs = [
        ClientJob(start=0, stop=12, epochs=1, seed=1),
        ClientJob(start=12, stop=30, epochs=2, seed=2),
    ]
    got = train_many(model, start, x, y, jobs, VectorConfig(batch_size=4, lr=LR, min_width=1))
    _assert_loop_results(model, start, x, y, jobs, got, batch=4)


def test_chunks_group_similar_step_counts_and_cover_every_client():
    sizes = [10, 11, 200, 12, 400, 13, 9]
    jobs = [ClientJob(start=0, stop=s, epochs=1, seed=0) for s in sizes]
    cfg = VectorConfig(batch_size=1, lr=0.1, step_ratio=2.0, max_chunk=3)
    groups = list(chunks(jobs, cfg, row_width=1))
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    for group in groups:
        steps = [sizes[i] for i in group]
        assert max(steps) <= 2.0 * min(steps) and len(group) <= 3


def test_models_with_buffers_are_refused_with_a_reason():
    """Buffers other than BatchNorm's statistics (which batched_cnn keeps per client)."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert supports(model) is None
    model.register_buffer("scale", torch.ones(1))
    assert "buffers" in (supports(model) or "")
    with pytest.raises(ValueError, match="buffers"):
        train_many(
            model,
            get_params(model),
            torch.zeros(4, 2),
            torch.zeros(4, dtype=torch.long),
            [ClientJob(start=0, stop=4, epochs=1, seed=0)],
            VectorConfig(batch_size=2, lr=0.1),
        )
