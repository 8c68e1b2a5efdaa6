"""The run's training settings at a site: hostile input until checked, and capped by policy.

A fit task carries the run's settings (``Task.train``); the site refuses any value outside
its bounds (finite, positive, a known optimizer) and any value above its own caps
(``--max-epochs`` ...), naming the setting, and never trains with a clamped value. The
schedule (``lr_decay``) is the run's, the same for a simulated and a deployed site.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
import torch

from fedops.core.strategies import FedAvg
from fedops.core.train_settings import TrainPlan, TrainSettings
from fedops.core.training import TrainConfig, get_params
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.store import RunStore
from fedops.simulation.inmemory import InMemoryTransport
from fedops.tasks import load_task
from fedops.tasks.fit_settings import PolicyRefusal, TrainCaps, checked_train
from fedops.tasks.site import Site

RUN = TrainSettings(epochs=2, batch_size=16, lr=0.1, optimizer="sgd", momentum=0.0)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"epochs": 0}, "epochs=0"),
        ({"epochs": -3}, "epochs=-3"),
        ({"epochs": 10**18}, "MAX_EPOCHS=100"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 10**12}, "MAX_BATCH_SIZE"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"lr": -0.1}, "lr=-0.1"),
        ({"lr": math.nan}, "lr=nan"),
        ({"lr": math.inf}, "lr=inf"),
        ({"lr": 1e300}, "MAX_LR=100"),
        ({"optimizer": ""}, "optimizer=''"),
        ({"optimizer": "lbfgs"}, "optimizer='lbfgs'"),
        ({"momentum": 1.0}, "momentum=1.0"),
        ({"momentum": math.nan}, "momentum=nan"),
        ({"momentum": -0.5}, "momentum=-0.5"),
        ({"optimizer": "adam", "momentum": 0.9}, "sgd only"),
    ],
)
def test_a_site_refuses_a_setting_outside_its_bounds_naming_it(change, named):
    with pytest.raises(PolicyRefusal, match=re.escape(named)):
        checked_train(replace(RUN, **change), TrainCaps())


@pytest.mark.parametrize(
    ("change", "caps", "flag"),
    [
        ({"epochs": 3}, TrainCaps(max_epochs=2), "--max-epochs"),
        ({"batch_size": 64}, TrainCaps(max_batch_size=32), "--max-batch-size"),
        ({"lr": 0.5}, TrainCaps(max_lr=0.2), "--max-lr"),
    ],
)
def test_a_setting_above_a_sites_cap_is_declined_not_clamped(change, caps, flag):
    with pytest.raises(PolicyRefusal, match="above this site's cap") as refused:
        checked_train(replace(RUN, **change), caps)
    assert flag in str(refused.value) and "not trained with less" in str(refused.value)


def test_settings_at_a_cap_are_accepted_unchanged():
    caps = TrainCaps(max_epochs=2, max_batch_size=16, max_lr=0.1)
    assert checked_train(RUN, caps) == RUN


@pytest.mark.parametrize(
    "bad",
    [
        {"max_epochs": 0},
        {"max_epochs": 2.5},
        {"max_epochs": True},
        {"max_batch_size": -1},
        {"max_lr": math.nan},
        {"max_lr": 0},
        {"max_lr": "0.1"},
    ],
)
def test_a_cap_that_is_no_cap_is_refused_at_start(bad):
    with pytest.raises(ValueError, match="policy: max_"):
        TrainCaps(**bad)


def test_a_kits_policy_caps_training_and_a_flag_only_tightens_it():
    from fedops.tasks.site_policy import SitePolicy

    policy = SitePolicy.from_mapping({"max_epochs": 4, "max_lr": 0.3}, max_epochs=2)
    assert policy.train_caps == TrainCaps(max_epochs=2, max_lr=0.3)
    # a flag above the kit's cap does not loosen what the consortium agreed to
    loose = SitePolicy.from_mapping({"max_epochs": 2, "max_lr": 0.01}, max_epochs=100, max_lr=9.0)
    assert loose.train_caps == TrainCaps(max_epochs=2, max_lr=0.01)
    flag_only = SitePolicy.from_mapping({}, max_batch_size=64)
    assert flag_only.train_caps == TrainCaps(max_batch_size=64)


def test_a_long_optimizer_name_is_refused_without_being_quoted():
    name = "\x00" * 1_000_000
    with pytest.raises(PolicyRefusal) as refused:
        checked_train(replace(RUN, optimizer=name), TrainCaps())
    assert len(str(refused.value)) < 200


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"proximal_mu": math.nan}, "proximal_mu=nan"),
        ({"proximal_mu": 1e308}, "proximal_mu=1e+308"),
        ({"proximal_mu": -1.0}, "proximal_mu=-1.0"),
        ({"seed": math.nan}, "seed=nan"),
        ({"seed": 1.5}, "seed=1.5"),
        ({"seed": -1.0}, "seed=-1.0"),
        ({"epochs": 1e9}, "['epochs']"),
        ({"lr": 0.1, "batch_size": 0}, "['batch_size', 'lr']"),
    ],
)
def test_a_round_config_the_site_cannot_use_is_refused_naming_it(config, named):
    from fedops.tasks.fit_settings import checked_round_config

    with pytest.raises(PolicyRefusal, match=re.escape(named)):
        checked_round_config(config)
    assert checked_round_config({"proximal_mu": 0.01, "seed": 7.0}) == (0.01, 7)


def test_a_decay_that_reaches_a_rate_of_nothing_is_refused_at_configuration():
    from fedops.runtime.rules import ConfigError
    from fedops.runtime.schema import ClientTrainConfig
    from fedops.runtime.section_rules import check_train

    with pytest.raises(ConfigError, match=r"client\.lr_decay"):
        check_train(ClientTrainConfig(lr=0.1, lr_decay=0.5), rounds=1100)
    check_train(ClientTrainConfig(lr=0.1, lr_decay=0.5), rounds=20)  # 0.1 * 2^-19: fine


def test_the_lr_schedule_decays_per_round():
    plan = TrainPlan(base=RUN, lr_decay=0.5)
    assert [plan.at(t).lr for t in (1, 2, 3)] == pytest.approx([0.1, 0.05, 0.025])
    assert plan.at(3).epochs == RUN.epochs
    assert TrainPlan(base=RUN).at(7) == RUN  # no decay: the same settings every round


class _Recording(Site):
    """A real digits site that also keeps the training it was asked for, by round."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: dict[int, TrainConfig] = {}

    def fit(self, params, server_round, config, *, run_id="", train=None):
        self.asked[server_round] = self.training(train)
        return super().fit(params, server_round, config, run_id=run_id, train=train)


def test_a_simulated_site_trains_with_the_runs_scheduled_settings(tmp_path):
    """The driver gives each round's fit tasks the plan's settings, and the simulated site
    trains with them, not with the ones it was built with (the deployed agent gets the same
    through Task.train)."""
    task = load_task("digits")
    own = TrainConfig(epochs=1, batch_size=32, lr=0.9)
    sites = [_Recording(task, site=i, num_sites=2, train_config=own) for i in range(2)]
    plan = TrainPlan(base=replace(RUN, epochs=1, batch_size=64), lr_decay=0.5)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        params = get_params(task.build_model())
    store = RunStore(tmp_path / "run")
    RoundDriver(
        transport=InMemoryTransport(sites),
        strategy=FedAvg(),
        config=DriverConfig(rounds=3, min_clients=2, train=plan),
        store=store,
    ).run(params)
    for site in sites:
        assert sorted(site.asked) == [1, 2, 3]
        assert [site.asked[t].lr for t in (1, 2, 3)] == pytest.approx([0.1, 0.05, 0.025])
        assert {(c.epochs, c.batch_size) for c in site.asked.values()} == {(1, 64)}
