"""What a local-DP site releases, and what it accepts, through the real ``Site.fit`` path.

An independent red team broke the local-DP guarantee (record-level (ε, δ)-DP of
a site's training records against the coordinator, other sites and readers of
the model) three ways, each fixed here and tested against today's code:

- F1: the answer carried the exact train loss, the record count n and the
  site's ε (which depends on n through q = B/n) beside the noised model. Now it
  carries the model, one example and no metrics, for D and for D' alike.
- F4: the whole state_dict leaves, and a parameter-free
  ``BatchNorm1d(affine=False)`` passes Opacus: its running mean is an exact
  statistic of the sampled rows (ε = ∞). Such models are refused, and any
  un-noised state that training changes stops the update.
- F8: crafted fit configs stalled the site before its cap refused (σ = 0.01:
  60 s and 3.3 GiB; σ = 0.001: out of memory; epochs = 1e18 and a target ε
  of 1e9: over a minute). Each is refused at once, naming the bound.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedops.core.privacy import accountant
from fedops.core.privacy.accountant import RoundEvent
from fedops.core.privacy.local import (
    MAX_STEPS_PER_ROUND,
    PLD_CEILING,
    check_round,
)
from fedops.core.training import TrainConfig, as_tensors
from fedops.tasks import load_task
from fedops.tasks.ledger import Charge, SiteLedger
from fedops.tasks.site import PolicyRefusal, Site

TRAIN = TrainConfig(epochs=1, batch_size=64, lr=0.1)
DP = {"dp_noise_multiplier": 1.0, "dp_max_grad_norm": 1.0, "dp_delta": 1e-5, "seed": 0.0}


pytestmark = pytest.mark.usefixtures("quiet_warnings")  # Opacus warns on every DP-SGD step


def _site(**kwargs: Any) -> Site:
    return Site(load_task("digits"), site=0, num_sites=3, train_config=TRAIN, **kwargs)


def _no_pld(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a PLD fails the test: the refusal must come before it."""

    def refuse(*args: Any) -> float:
        raise AssertionError("a PLD was built")

    monkeypatch.setattr(accountant, "_pld_epsilon", refuse)


# -- F1: the answer carries nothing data-dependent beside the noised model ------------------------
def test_a_dp_answer_is_the_same_for_a_dataset_and_its_neighbour(tmp_path: Path):
    digits = _site()
    x, y = as_tensors(digits.train_data)  # type: ignore[misc]
    test = as_tensors(digits.test_data)
    with_record = _site(data=((x, y), test), ledger_dir=tmp_path / "d")
    without = _site(data=((x[1:], y[1:]), test), ledger_dir=tmp_path / "d-1")
    start = digits.initial_params()
    answers = [
        site.fit(start, 1, DP, run_id="run")[1:] for site in (with_record, without)
    ]  # (num_examples, metrics): before the fix (n, {train_loss, local_epsilon, local_delta})
    assert answers == [(1, {}), (1, {})]
    # what each round cost is in the site's own ledger instead, and differs with n
    spent = [SiteLedger(tmp_path / name).epsilon(1e-5) for name in ("d", "d-1")]
    assert 0 < spent[0] < spent[1]


def test_a_plain_answer_still_carries_its_count_and_loss():
    site = _site()
    _, n, metrics = site.fit(site.initial_params(), 1, {"seed": 0.0})
    assert n == site.num_train_examples and math.isfinite(metrics["train_loss"])


# -- F4: un-noised state --------------------------------------------------------------------------
def _task_with(layer: Callable[[], nn.Module]) -> Any:
    """Digits with one more layer after the linear one (a new one in every model built)."""
    digits = load_task("digits")

    def build_model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), layer())

    return dataclasses.replace(digits, build_model=build_model)


def test_a_model_with_floating_point_buffers_is_refused_under_local_dp(tmp_path: Path):
    site = Site(
        _task_with(lambda: nn.BatchNorm1d(10, affine=False)),
        site=0,
        num_sites=3,
        train_config=TRAIN,
        ledger_dir=tmp_path,
    )
    with pytest.raises(PolicyRefusal, match=r"floating-point buffers .*running_mean"):
        site.fit(site.initial_params(), 1, DP)
    assert SiteLedger(tmp_path).charges() == []
    _, n, _ = site.fit(site.initial_params(), 1, {"seed": 0.0})  # without DP it trains
    assert n == site.num_train_examples


class _RowCounter(nn.Module):
    """An integer buffer that counts the rows it saw in training: not noised by DP-SGD."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("rows", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.rows += x.shape[0]
        return x


def test_un_noised_state_that_training_changes_stops_the_update(tmp_path: Path):
    site = Site(
        _task_with(_RowCounter), site=0, num_sites=3, train_config=TRAIN, ledger_dir=tmp_path
    )
    start = site.initial_params()
    with pytest.raises(PolicyRefusal, match=r"training changed \['2.rows'\]"):
        site.fit(start, 1, DP)
    assert SiteLedger(tmp_path).charges() == []  # nothing sent, nothing charged
    assert int(site.model.state_dict()["2.rows"]) == 0  # nor kept in the site's model


# -- F8: crafted configs are refused before any accounting ----------------------------------------
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("crafted", "bound"),
    [
        ({"dp_noise_multiplier": 0.01}, "MIN_NOISE_MULTIPLIER=0.1"),
        ({"dp_noise_multiplier": 0.001}, "MIN_NOISE_MULTIPLIER=0.1"),
        ({"epochs": 1e18}, "MAX_EPOCHS=100"),
        ({"epochs": 0.0}, "MAX_EPOCHS=100"),
        ({"dp_target_epsilon": 1e9}, "MAX_TARGET_EPSILON=100"),
        ({"dp_target_epsilon": 5.0, "dp_rounds": 1e9}, "MAX_PLANNED_ROUNDS=100000"),
        ({"dp_target_epsilon": 5.0, "epochs": 100.0, "dp_rounds": 1e4}, "MAX_PLANNED_STEPS"),
        ({"dp_target_epsilon": 5.0, "epochs": 100.0, "dp_rounds": 1e3}, "PLD_CEILING=1000"),
    ],
)
@pytest.mark.parametrize("cap", [None, 3.0])
def test_a_crafted_fit_config_is_refused_at_once_naming_the_bound(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    crafted: dict[str, float],
    bound: str,
    cap: float | None,
):
    site = _site(ledger_dir=tmp_path, max_epsilon=cap)
    start = site.initial_params()
    _no_pld(monkeypatch)
    config = {**DP, **crafted}
    if "dp_target_epsilon" in crafted:
        del config["dp_noise_multiplier"]
    # epochs are the run's training settings (Task.train), the rest the DP keys of config
    epochs = int(config.pop("epochs", TRAIN.epochs))
    with pytest.raises(PolicyRefusal, match=bound):
        site.fit(start, 1, config, train=replace(TRAIN.settings(), epochs=epochs))
    assert SiteLedger(tmp_path).charges() == []


@pytest.mark.timeout(30)
def test_a_capped_site_refuses_a_round_that_alone_passes_its_cap_without_a_pld(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    site = _site(ledger_dir=tmp_path, max_epsilon=3.0)
    start = site.initial_params()
    _no_pld(monkeypatch)
    config = {**DP, "dp_noise_multiplier": 0.1}
    train = replace(TRAIN.settings(), epochs=100)  # ε in the thousands
    with pytest.raises(PolicyRefusal, match=r"this round alone .*\(RDP.*--max-epsilon"):
        site.fit(start, 1, config, train=train)


def test_the_steps_of_one_round_are_bounded():
    huge = TrainConfig(epochs=1, batch_size=1)
    check_round(MAX_STEPS_PER_ROUND, huge)
    with pytest.raises(ValueError, match="MAX_STEPS_PER_ROUND"):
        check_round(MAX_STEPS_PER_ROUND + 1, huge)


@pytest.mark.timeout(30)
def test_a_ledger_past_the_pld_ceiling_answers_with_rdp_without_a_pld(
    monkeypatch: pytest.MonkeyPatch,
):
    """An uncapped site asked for σ = 0.1 round after round: its PLD would cost minutes and
    gigabytes (10^5 steps: 95 s, 11 GiB), so past the ceiling RDP's ε (an upper bound) is its."""
    _no_pld(monkeypatch)
    ledger = SiteLedger()
    little = RoundEvent(noise_multiplier=0.1, sampling="poisson", sample_rate=0.1)
    ledger.record(Charge("run", 1, little, 10_000), 1e-5)
    spent = ledger.record(Charge("run", 2, little, 10_000), 1e-5)
    assert spent.accountant == "rdp" and spent.epsilon > PLD_CEILING
    assert spent.epsilon == ledger.ledger().epsilon(1e-5, "rdp")
    assert np.isfinite(spent.epsilon)
