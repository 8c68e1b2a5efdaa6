"""Local DP-SGD (Opacus) on a site: empty Poisson batches, ledger, noise."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from fedops.core.privacy.accountant import epsilon
from fedops.core.privacy.local import LocalDP, SiteLedger, steps_per_round, train_private
from fedops.core.training import TrainConfig


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def test_empty_poisson_batches_still_take_a_noised_step():
    # 3 records, batch 1: a third of the steps draw nobody; they must not crash, and the
    # noise they release must move the model (skipping them would reveal the empty batch)
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(epochs=10, batch_size=1, lr=0.1, seed=3)
    out = train_private(model, (x, y), cfg, LocalDP(noise_multiplier=1.0, max_grad_norm=1.0))
    assert out["train_loss"] > 0
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_without_noise_or_clipping_effect_training_still_learns():
    torch.manual_seed(1)
    x = torch.randn(200, 4)
    y = (x[:, 0] > 0).long()
    model = _model()
    cfg = TrainConfig(epochs=5, batch_size=20, lr=0.5, seed=0)
    first = train_private(model, (x, y), cfg, LocalDP(noise_multiplier=0.0, max_grad_norm=100.0))
    second = train_private(model, (x, y), cfg, LocalDP(noise_multiplier=0.0, max_grad_norm=100.0))
    assert second["train_loss"] < first["train_loss"]


def test_site_ledger_matches_the_accountant():
    cfg = TrainConfig(epochs=2, batch_size=10, lr=0.1)
    dp = LocalDP(noise_multiplier=1.2, max_grad_norm=1.0, delta=1e-5)
    q, steps = steps_per_round(100, cfg)
    assert (q, steps) == (0.1, 20)
    ledger = SiteLedger(1e-5)
    preview = ledger.epsilon_after(dp, 100, cfg)
    assert ledger.spend(dp, 100, cfg) == pytest.approx(preview)
    spent = ledger.spend(dp, 100, cfg)
    assert spent == pytest.approx(epsilon([(1.2, 0.1, 40)], 1e-5, "rdp"), rel=1e-9)
