"""Vectorized training equals the per-client loop it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedops.core.training import TrainConfig, get_params, set_params, train
from fedops.core.vectorized import ClientJob, VectorConfig, chunks, supports, train_many


def _models():
    torch.manual_seed(0)
    return {
        "logreg": nn.Sequential(nn.Flatten(), nn.Linear(6, 3)),
        "mlp": nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
    }


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=9),
    batch=st.integers(1, 12),
    momentum=st.sampled_from([0.0, 0.9]),
    mu=st.sampled_from([0.0, 0.3]),
    arch=st.sampled_from(["logreg", "mlp"]),
    max_chunk=st.integers(1, 5),
)
def test_train_many_matches_the_sequential_loop(sizes, batch, momentum, mu, arch, max_chunk):
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
        batch_size=batch, lr=0.1, momentum=momentum, proximal_mu=mu, max_chunk=max_chunk
    )
    got = train_many(model, start, x, y, jobs, cfg)
    for job, (params, loss) in zip(jobs, got, strict=True):
        set_params(model, start)
        want = train(
            model,
            (x[job.start : job.stop], y[job.start : job.stop]),
            TrainConfig(
                epochs=job.epochs,
                batch_size=batch,
                lr=0.1,
                momentum=momentum,
                proximal_mu=mu,
                seed=job.seed,
            ),
        )
        for name, value in get_params(model).items():
            # float32, summed in another order by the batched loop; momentum over up to 80
            # single-example steps grows last-bit differences to a few 1e-6 (seen: 4.8e-6)
            np.testing.assert_allclose(params[name], value, rtol=1e-5, atol=2e-5)
        assert loss == pytest.approx(want["train_loss"], rel=1e-5, abs=1e-6)


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
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
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
