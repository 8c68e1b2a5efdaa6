"""Batched local DP-SGD (stacked_dpsgd, vmap_dpsgd) against one site's Opacus DP-SGD.

The reference is the mechanism :func:`fedops.core.privacy.local.train_private` runs
(Opacus's ``GradSampleModule`` + ``DPOptimizer`` + SGD), fed the batches the batched
trainer draws from the same site seed; without noise both must agree to float
tolerance. Clipping, the noise's scale and the Poisson sampling are checked on
their own.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedops.core.params import Params
from fedops.core.privacy.dp_batches import PrivateJob, poisson_rows, private_job
from fedops.core.privacy.local import LocalDP, steps_per_round
from fedops.core.privacy.stacked_dpsgd import train_private_many
from fedops.core.schedule import VectorConfig
from fedops.core.training import TrainConfig, get_params, set_params

pytestmark = pytest.mark.usefixtures("quiet_warnings")  # Opacus warns on every DP-SGD step


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "logreg": nn.Sequential(nn.Flatten(), nn.Linear(6, 3)),  # stacked path
        "mlp": nn.Sequential(
            nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)
        ),
        "conv": nn.Sequential(  # no linear chain: torch.func's per-sample gradients
            nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)
        ),
    }


def _fleet(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    x = torch.randn(int(offsets[-1]), 6, generator=gen) * 3  # large gradients: clipping bites
    y = torch.randint(0, 3, (int(offsets[-1]),), generator=gen)
    return x, y, offsets


def _jobs(offsets: np.ndarray, dp: LocalDP, cfg: TrainConfig, seed0: int = 100) -> list[PrivateJob]:
    return [
        private_job(int(offsets[i]), int(offsets[i + 1]), dp, cfg, seed=seed0 + i)
        for i in range(len(offsets) - 1)
    ]


def _opacus(
    model: nn.Module,
    start: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    job: PrivateJob,
    cfg: TrainConfig,
) -> Params:
    """One site's DP-SGD as train_private runs it, on the batches drawn from the job's seed."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    set_params(model, start)
    rows, lengths = poisson_rows(
        torch.Generator().manual_seed(job.seed), job.size, job.sample_rate, job.steps
    )
    wrapped = GradSampleModule(model)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    opt = DPOptimizer(
        torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum),
        noise_multiplier=0.0,
        max_grad_norm=job.max_grad_norm,
        expected_batch_size=job.divisor,
    )
    try:
        for t in range(job.steps):
            opt.zero_grad(set_to_none=True)
            picked = rows[t, : lengths[t]] + job.start
            if len(picked) == 0:
                for p in trainable:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
            else:
                nn.functional.cross_entropy(wrapped(x[picked]), y[picked]).backward()
            opt.step()
    finally:
        wrapped._close()
    return get_params(model)


@pytest.mark.parametrize("name", ["logreg", "mlp", "conv"])
def test_batched_dp_sgd_without_noise_is_each_sites_opacus_dp_sgd(name: str):
    model = _models()[name]
    sizes = [0, 1, 3, 7, 30, 55, 12]  # empty, single-record and short sites included
    x, y, offsets = _fleet(sizes)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.3, momentum=0.5)
    jobs = _jobs(offsets, LocalDP(noise_multiplier=0.0, max_grad_norm=0.7), cfg)
    start = get_params(model)
    vector = VectorConfig(batch_size=4, lr=cfg.lr, momentum=cfg.momentum, max_chunk=3)
    batched = train_private_many(model, start, x, y, jobs, vector)
    for job, got in zip(jobs, batched, strict=True):
        want = _opacus(model, start, x, y, job, cfg)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
        if job.size:  # and it trained: the comparison is not of two untouched models
            assert any(not np.allclose(got[k], start[k]) for k in start)


@settings(max_examples=25, deadline=None)
@given(
    scale=st.floats(0.01, 100.0),
    clip=st.floats(0.05, 5.0),
    hidden=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_examples_contribution_is_clipped_to_c(
    scale: float, clip: float, hidden: bool, seed: int
):
    # one record per site, q = 1, one step, lr 1, no noise: a site's update is minus its
    # one example's clipped gradient, so its norm is min(|gradient|, C)
    torch.manual_seed(seed)
    model = (
        nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
        if hidden
        else nn.Sequential(nn.Linear(6, 3))
    )
    x, y, offsets = _fleet([1] * 8, seed)
    x = x * scale
    cfg = TrainConfig(epochs=1, batch_size=1, lr=1.0)
    jobs = _jobs(offsets, LocalDP(noise_multiplier=0.0, max_grad_norm=clip), cfg)
    assert all(j.steps == 1 and j.sample_rate == 1.0 and j.divisor == 1 for j in jobs)
    start = get_params(model)
    out = train_private_many(model, start, x, y, jobs, VectorConfig(batch_size=1, lr=1.0))
    for i, new in enumerate(out):
        step = math.sqrt(sum(float(((new[k] - start[k]) ** 2).sum()) for k in start))
        set_params(model, start)
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        full = math.sqrt(sum(float((p.grad**2).sum()) for p in model.parameters()))
        assert step <= clip * (1 + 1e-5)
        assert step == pytest.approx(min(full, clip), rel=1e-4, abs=1e-6)


def test_noise_is_sigma_c_per_coordinate_and_independent_across_sites():
    # the same site seeds with and without noise: the batches are the same (drawn first),
    # so the difference of the two updates is the noise over the expected batch size
    model = nn.Sequential(nn.Linear(6, 40), nn.ReLU(), nn.Linear(40, 3))  # 403 parameters
    x, y, offsets = _fleet([50] * 40)
    cfg = TrainConfig(epochs=1, batch_size=10, lr=1.0)
    start = get_params(model)
    vector = VectorConfig(batch_size=10, lr=1.0)
    sigma, clip = 1.3, 0.4
    quiet = train_private_many(
        model,
        start,
        x,
        y,
        _jobs(offsets, LocalDP(noise_multiplier=0.0, max_grad_norm=clip), cfg),
        vector,
    )
    noisy_jobs = _jobs(offsets, LocalDP(noise_multiplier=sigma, max_grad_norm=clip), cfg)
    noisy = train_private_many(model, start, x, y, noisy_jobs, vector)
    job = noisy_jobs[0]
    assert job.steps == 5 and job.divisor == 10
    # five steps of lr 1: the summed noise of 5 steps, over the divisor
    per_site = np.stack(
        [
            np.concatenate([(q[k] - n[k]).ravel() for k in start]) * job.divisor / math.sqrt(5)
            for q, n in zip(quiet, noisy, strict=True)
        ]
    )
    assert abs(per_site.std() / (sigma * clip) - 1) < 0.03  # 16,120 draws: std's error ~0.6%
    assert abs(per_site.mean()) < 0.02 * sigma * clip
    corr = np.corrcoef(per_site)[np.triu_indices(len(per_site), 1)]
    assert np.abs(corr).max() < 0.25  # each site its own generator: no shared noise


def test_poisson_batches_take_each_record_with_probability_q():
    n, q, steps = 200, 0.05, 4000
    rows, lengths = poisson_rows(torch.Generator().manual_seed(1), n, q, steps)
    taken = torch.zeros((steps, n))
    filled = torch.arange(rows.shape[1]) < lengths[:, None]
    taken.scatter_add_(1, rows, filled.float())  # padding adds 0
    assert taken.max() == 1 and torch.equal(taken.sum(dim=1).long(), lengths)  # none twice
    per_record = taken.mean(dim=0)  # each ~ Binomial(4000, q) / 4000: sd 0.0034
    assert (per_record - q).abs().max() < 0.02
    assert abs(float(per_record.mean()) - q) < 0.002
    sizes = lengths.double()  # a batch's size is Binomial(n, q): mean 10, variance 9.5
    assert abs(float(sizes.mean()) - n * q) < 0.2
    assert abs(float(sizes.var()) / (n * q * (1 - q)) - 1) < 0.1
    # consecutive steps independent: the same record in both, q² of the time
    both = (taken[1:] * taken[:-1]).mean()
    assert abs(float(both) - q * q) < 0.001


def test_a_job_is_planned_as_one_site_plans_its_round():
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.1)
    dp = LocalDP(noise_multiplier=1.1, max_grad_norm=0.5)
    for n in (0, 1, 15, 16, 17, 1000):
        job = private_job(10, 10 + n, dp, cfg, seed=3)
        q, steps = steps_per_round(n, cfg)
        assert (job.sample_rate, job.steps) == (q, steps)
        assert job.divisor == max(1, round(q * n)) and job.noise_std == pytest.approx(0.55)
