"""Unit tests for fedops.tasks.site (Site, shuffle_seed, global_evaluator) and digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedops.core.params import digest
from fedops.core.training import TrainConfig, evaluate
from fedops.tasks import Task, load_task
from fedops.tasks.digits import make_task
from fedops.tasks.site import Site, global_evaluator, shuffle_seed

CFG = TrainConfig(epochs=1, batch_size=2, lr=0.1, proximal_mu=0.0)


def test_shuffle_seed_is_reproducible_distinct_and_63_bit():
    seeds = {shuffle_seed(s, r, i) for s in range(3) for r in range(3) for i in range(3)}
    assert len(seeds) == 27
    assert shuffle_seed(1, 2, 3) == shuffle_seed(1, 2, 3)
    assert all(0 <= s < 2**63 for s in seeds)


def _recording_task(seen):
    def build_model():
        torch.manual_seed(0)
        return nn.Linear(2, 2)

    def load_data(site, num_sites):
        x = np.ones((5, 2), np.float32) * site
        return (x, np.zeros(5, np.int64)), (x[:1], np.zeros(1, np.int64))

    def train(model, data, cfg):
        seen.append(cfg)
        return {"train_loss": 3, "n": len(data[0])}

    return Task(name="rec", build_model=build_model, load_data=load_data, train=train)


def test_site_fit_takes_mu_and_seed_from_the_round_config():
    seen = []
    site = Site(_recording_task(seen), site=1, num_sites=2, train_config=CFG)
    params, n, metrics = site.fit(site.initial_params(), 4, {"proximal_mu": 0.2, "seed": 6.0})
    assert n == 5 == site.num_train_examples
    assert metrics == {"train_loss": 3.0, "n": 5.0}
    assert all(isinstance(v, float) for v in metrics.values())
    (cfg,) = seen
    assert cfg.proximal_mu == 0.2
    assert cfg.seed == shuffle_seed(6, 4, 1)
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (CFG.lr, CFG.batch_size, CFG.epochs)
    site.fit(params, 4, {})  # no config: the site's own mu, run seed 0
    assert seen[1].proximal_mu == 0.0
    assert seen[1].seed == shuffle_seed(0, 4, 1)


def test_site_fit_starts_from_the_given_params():
    task = load_task("digits")
    site = Site(task, site=0, num_sites=2, train_config=TrainConfig(batch_size=32, lr=0.5))
    zero = {k: np.zeros_like(v) for k, v in site.initial_params().items()}
    a, _, _ = site.fit(zero, 1, {"seed": 0.0})
    b, _, _ = site.fit(zero, 1, {"seed": 0.0})
    assert digest(a) == digest(b)  # same start, same seed: the site keeps no state
    c, _, _ = site.fit(site.initial_params(), 1, {"seed": 0.0})
    assert digest(c) != digest(a)


def test_site_evaluate_uses_the_test_split():
    task = load_task("digits")
    site = Site(task, site=1, num_sites=3, train_config=CFG)
    params = site.initial_params()
    n, metrics = site.evaluate(params)
    assert n == len(site.test_data[0])
    assert metrics == pytest.approx(evaluate(site.model, site.test_data))


def test_global_evaluator_uses_the_held_out_data():
    task = load_task("digits")
    assert global_evaluator(_recording_task([])) is None
    evaluate_global = global_evaluator(task)
    model = task.build_model()
    params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    assert evaluate_global(params) == pytest.approx(evaluate(model, task.load_server_data()))


# --- the built-in digits data ------------------------------------------------------------------


@pytest.mark.parametrize("part", ["iid", "dirichlet"])
def test_digits_sites_and_holdout_partition_the_1797_images(part):
    task = make_task(partition=part, alpha=0.5, seed=2)
    sizes = 0
    for site in range(4):
        (x, y), (xt, yt) = task.load_data(site, 4)
        assert x.shape[1] == 64 and len(x) == len(y) and len(xt) == len(yt) >= 1
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
        sizes += len(x) + len(xt)
    held_x, _ = task.load_server_data()
    assert len(held_x) == round(1797 * 0.15)
    assert sizes + len(held_x) == 1797


def test_digits_data_is_deterministic_per_seed():
    a = make_task(seed=1).load_data(0, 3)[0][1]
    b = make_task(seed=1).load_data(0, 3)[0][1]
    c = make_task(seed=2).load_data(0, 3)[0][1]
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_digits_refuses_bad_options():
    with pytest.raises(ValueError, match="unknown model"):
        make_task(model="cnn")
    with pytest.raises(ValueError, match="unknown partition"):
        make_task(partition="shards")
    with pytest.raises(ValueError, match=r"site must be in \[0, 2\), got 2"):
        make_task().load_data(2, 2)
