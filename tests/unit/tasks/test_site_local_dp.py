"""A site's local DP policy, enforced at the site through the real ``Site.fit`` path.

The site's privacy ledger lives in its run directory: a restarted agent (a new
:class:`Site` on the same directory) continues from it and refuses once its
cap would be passed; a ledger that does not read back refuses DP training.
δ is the site's: a coordinator may ask for a smaller one, and one that is not
a probability is refused by name. What a round cost is the site's to know:
its ledger and ``on_spend`` (the agent's audit log) have it, its answer does not.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant

from fedops.client.agent import _check_ledger, site_policy
from fedops.config import ClientConfig
from fedops.core.privacy.local import steps_per_round
from fedops.core.training import TrainConfig
from fedops.tasks import ledger as site_ledger
from fedops.tasks import load_task
from fedops.tasks.ledger import Charge, SiteLedger, Spent
from fedops.tasks.site import PolicyRefusal, Site, accounting_delta, local_dp
from fedops.tasks.site_policy import PolicyViolation, SitePolicy

TRAIN = TrainConfig(epochs=1, batch_size=64, lr=0.1)
DP = {"dp_noise_multiplier": 1.0, "dp_max_grad_norm": 1.0, "dp_delta": 1e-5, "seed": 0.0}


pytestmark = pytest.mark.usefixtures("quiet_warnings")  # Opacus warns on every DP-SGD step


def _site(ledger_dir: Path | None = None, **policy: float) -> Site:
    return Site(
        load_task("digits"),
        site=0,
        num_sites=3,
        train_config=TRAIN,
        ledger_dir=ledger_dir,
        **policy,
    )


def _charged(site: Site) -> list[Spent]:
    """What the site tells its own audit log about each DP round, as a list."""
    spent: list[Spent] = []
    site.on_spend = spent.append
    return spent


def _oracle(site: Site, sigma: float, rounds: int, delta: float) -> float:
    q, steps = steps_per_round(site.num_train_examples, TRAIN)
    accountant = PLDAccountant()
    accountant.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps * rounds)
    return float(accountant.get_epsilon(delta))


def test_the_charged_epsilon_is_dp_accountings_for_the_rounds_trained(tmp_path: Path):
    site = _site(tmp_path)
    charged = _charged(site)
    start = site.initial_params()
    for server_round in (1, 2):
        _, n, metrics = site.fit(start, server_round, DP, run_id="run-1")
        assert (n, metrics) == (1, {})  # the answer carries no ε (it depends on n)
        oracle = _oracle(site, 1.0, server_round, 1e-5)
        spent = charged[-1]
        assert oracle * (1 - 1e-6) <= spent.epsilon <= oracle * (1 + 1e-2)
        assert spent.epsilon == pytest.approx(site.ledger.epsilon(1e-5), rel=1e-12)
        assert (spent.charge.run_id, spent.charge.server_round) == ("run-1", server_round)
        assert (spent.delta, spent.accountant) == (1e-5, "pld")


def test_the_round_is_committed_to_the_ledger_file_before_fit_returns(tmp_path: Path):
    site = _site(tmp_path)
    site.fit(site.initial_params(), 4, DP, run_id="run-7")
    with sqlite3.connect(tmp_path / SiteLedger.FILE) as conn:  # another reader, at once
        rows = conn.execute("SELECT run_id, round, steps FROM charges").fetchall()
    assert rows == [("run-7", 4, steps_per_round(site.num_train_examples, TRAIN)[1])]


def test_a_round_the_ledger_cannot_record_returns_no_update(tmp_path: Path, monkeypatch):
    site = _site(tmp_path)

    def disk_full(path: Path, charge: Charge) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(site_ledger, "_append", disk_full)
    with pytest.raises(PolicyRefusal, match="disk is full"):
        site.fit(site.initial_params(), 1, DP)
    assert SiteLedger(tmp_path).charges() == []


def test_a_restarted_site_refuses_once_its_persisted_epsilon_would_pass_its_cap(tmp_path: Path):
    probe = _site()
    two, three = (_oracle(probe, 1.0, n, 1e-5) for n in (2, 3))
    cap = (two + three) / 2  # room for two rounds, not for three
    site = _site(tmp_path, max_epsilon=cap)
    start = site.initial_params()
    for server_round in (1, 2):
        site.fit(start, server_round, DP, run_id="run-1")
    restarted = _site(tmp_path, max_epsilon=cap)  # the agent restarts mid-run
    assert restarted.ledger.epsilon(1e-5) == pytest.approx(site.ledger.epsilon(1e-5))
    with pytest.raises(PolicyRefusal, match=r"--max-epsilon") as refused:
        restarted.fit(start, 3, DP, run_id="run-1")
    assert f"{three:.3g}" in str(refused.value)
    # nor does a new run start the count again: ε is over every run this site trained in
    with pytest.raises(PolicyRefusal, match=r"--max-epsilon"):
        _site(tmp_path, max_epsilon=cap).fit(start, 1, DP, run_id="run-2")
    assert len(SiteLedger(tmp_path).charges()) == 2


def test_two_agents_on_one_ledger_cannot_both_pass_a_cap_one_round_fits(
    tmp_path: Path, monkeypatch
):
    """Red team, issue 16: the cap was checked, then training ran, then the charge was
    written, with nothing held between: two processes on one run directory both passed.
    Training is slowed down here so that the second check falls inside the first round."""
    from fedops.tasks import site as site_module

    probe = _site()
    two = _oracle(probe, 1.0, 2, 1e-5)
    cap = two * 0.99  # room for one round (its RDP alone is below: a PLD check), not two
    real = site_module.train_private

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(site_module, "train_private", slow)
    sites = [_site(tmp_path, max_epsilon=cap) for _ in range(2)]  # two agents, one directory
    start = sites[0].initial_params()
    outcomes: list[str] = []

    def fit(site: Site, run: str) -> None:
        try:
            site.fit(start, 1, DP, run_id=run)
            outcomes.append("trained")
        except PolicyRefusal as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=fit, args=(s, f"run-{i}")) for i, s in enumerate(sites)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outcomes.count("trained") == 1, outcomes
    assert any("--max-epsilon" in o for o in outcomes), outcomes
    assert len(SiteLedger(tmp_path).charges()) == 1
    assert SiteLedger(tmp_path).epsilon(1e-5) <= cap


def test_a_corrupt_ledger_refuses_dp_training_but_not_plain_training(tmp_path: Path):
    (tmp_path / SiteLedger.FILE).write_bytes(b"\x00garbage" * 64)
    site = _site(tmp_path)
    with pytest.raises(PolicyRefusal, match=r"privacy ledger .* cannot be read"):
        site.fit(site.initial_params(), 1, DP)
    with pytest.raises(PolicyRefusal, match="cannot be read"):  # a restart does not forget it
        _site(tmp_path).fit(site.initial_params(), 1, DP)
    _, _, metrics = site.fit(site.initial_params(), 1, {"seed": 0.0})
    assert "local_epsilon" not in metrics


@pytest.mark.parametrize(("asked", "used"), [(1e-3, 1e-5), (1e-5, 1e-5), (1e-7, 1e-7)])
def test_the_site_accounts_at_its_own_delta_or_a_smaller_one(asked: float, used: float):
    site = _site()
    charged = _charged(site)
    site.fit(site.initial_params(), 1, {**DP, "dp_delta": asked})
    assert charged[-1].delta == used
    assert charged[-1].epsilon == pytest.approx(site.ledger.epsilon(used), rel=1e-12)
    assert accounting_delta({"dp_delta": asked}, 1e-5) == used
    assert accounting_delta({}, 3e-6) == 3e-6  # the coordinator says nothing: the site's


def test_a_larger_coordinator_delta_does_not_lower_the_epsilon_a_cap_is_checked_at():
    probe = _site()
    one = _oracle(probe, 1.0, 1, 1e-5)
    assert _oracle(probe, 1.0, 1, 0.1) < 0.9 * one
    site = _site(max_epsilon=0.95 * one)  # passes at δ = 0.1, not at the site's 1e-5
    with pytest.raises(PolicyRefusal, match="--max-epsilon"):
        site.fit(site.initial_params(), 1, {**DP, "dp_delta": 0.1})


@pytest.mark.parametrize("bad", [0.0, 1.0, 5.0, -1e-5, math.nan, math.inf, "lots"])
def test_a_coordinator_delta_that_is_not_a_probability_is_refused_by_name(bad):
    site = _site()
    with pytest.raises(PolicyRefusal, match="dp_delta"):
        site.fit(site.initial_params(), 1, {**DP, "dp_delta": bad})
    assert site.ledger.charges() == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"dp_noise_multiplier": 1.0}, "dp_max_grad_norm is missing"),
        ({**DP, "dp_max_grad_norm": -1.0}, "max_grad_norm"),
        ({**DP, "dp_noise_multiplier": math.nan}, "noise_multiplier"),
        ({"dp_target_epsilon": -2.0, "dp_max_grad_norm": 1.0}, "target epsilon"),
        ({"dp_target_epsilon": 2.0, "dp_max_grad_norm": 1.0, "dp_rounds": 0.0}, "rounds"),
        ({"dp_target_epsilon": 2.0, "dp_max_grad_norm": 1.0, "dp_rounds": math.inf}, "infinity"),
    ],
)
def test_local_dp_settings_that_cannot_be_used_are_refused(config, message: str):
    with pytest.raises(PolicyRefusal, match=message):
        local_dp(config, 500, TRAIN)


def test_auto_sigma_calibrates_at_the_accounting_delta_over_the_planned_steps():
    site = _site()
    config = {"dp_target_epsilon": 3.0, "dp_max_grad_norm": 1.0, "dp_rounds": 3.0}
    config |= {"dp_delta": 1e-3}  # the site's 1e-5 is smaller: σ is calibrated at that
    start = site.initial_params()
    charged = _charged(site)
    for r in (1, 2, 3):
        site.fit(start, r, config)
    spent = [c.epsilon for c in charged]
    assert spent == sorted(spent)
    assert 0.99 * 3.0 <= spent[-1] <= 3.0
    assert site.ledger.epsilon(1e-5) == pytest.approx(spent[-1], rel=1e-12)


def test_site_delta_policy_from_the_flag_the_kit_and_the_default():
    cfg = ClientConfig(task="digits", site=0, num_sites=1)
    assert site_policy(cfg, None).max_delta == 1e-5
    kit = SimpleNamespace(policy={"max_delta": 1e-7})
    assert site_policy(cfg, kit).max_delta == 1e-7  # type: ignore[arg-type]
    flagged = ClientConfig(task="digits", site=0, num_sites=1, dp_delta=1e-6)
    assert site_policy(flagged, kit).max_delta == 1e-6  # type: ignore[arg-type]
    for bad in (0.0, 1.0, 2.0, math.nan):
        with pytest.raises(ValueError, match="max_delta"):
            SitePolicy(max_delta=bad)
        with pytest.raises(ValueError, match="dp_delta"):
            ClientConfig(task="digits", site=0, num_sites=1, dp_delta=bad)
    with pytest.raises(ValueError, match="δ"):
        _site(max_delta=5.0)


def test_an_agent_with_a_privacy_cap_needs_a_persisted_ledger(tmp_path: Path):
    cfg = ClientConfig(task="digits", site=0, num_sites=3)
    with pytest.raises(PolicyViolation, match="needs --run-dir"):
        _check_ledger(cfg, _site(), SitePolicy(max_epsilon=3.0))
    _check_ledger(cfg, _site(), SitePolicy())  # no cap: in memory, with a warning
    _check_ledger(cfg, _site(tmp_path), SitePolicy(max_epsilon=3.0))


def test_simulated_sites_keep_their_ledger_in_memory():
    site = _site()
    site.fit(site.initial_params(), 1, DP)
    assert site.ledger.path is None and len(site.ledger.charges()) == 1
    assert np.isfinite(site.ledger.epsilon(1e-5))
