"""A standing site's per-run ε cap (``--max-run-epsilon``), enforced by ``Site.fit``.

The ledger composes every run; the per-run cap counts one run's rows alone, so a site
can give each study a budget while ``--max-epsilon`` bounds them all together.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.core.training import TrainConfig
from fedops.tasks import load_task
from fedops.tasks.site import PolicyRefusal, Site

TRAIN = TrainConfig(epochs=1, batch_size=64, lr=0.1)
DP = {"dp_noise_multiplier": 1.0, "dp_max_grad_norm": 1.0, "dp_delta": 1e-5, "seed": 0.0}

pytestmark = pytest.mark.usefixtures("quiet_warnings")


def _site(ledger_dir: Path, **policy: float) -> Site:
    return Site(
        load_task("digits"),
        site=0,
        num_sites=3,
        train_config=TRAIN,
        ledger_dir=ledger_dir,
        **policy,
    )


def test_a_run_past_its_own_cap_is_refused_while_another_run_trains(tmp_path: Path):
    probe = _site(tmp_path / "probe")
    probe.fit(probe.initial_params(), 1, DP, run_id="probe")
    one_round = probe.ledger.epsilon(1e-5)
    # room for one round per run, not two (two compose to about sqrt(2) times one)
    site = _site(tmp_path / "site", max_run_epsilon=one_round * 1.2)
    start = site.initial_params()
    site.fit(start, 1, DP, run_id="run-a")
    with pytest.raises(PolicyRefusal, match=r"run 'run-a'.*--max-run-epsilon"):
        site.fit(start, 2, DP, run_id="run-a")
    site.fit(start, 1, DP, run_id="run-b")  # another run has its own allowance
    assert [c.run_id for c in site.ledger.charges()] == ["run-a", "run-b"]
    # ... while the ledger still composes both for the site's total
    assert site.ledger.epsilon(1e-5) > site.ledger.epsilon(1e-5, run_id="run-a")


def test_the_total_cap_still_binds_across_runs(tmp_path: Path):
    probe = _site(tmp_path / "probe")
    probe.fit(probe.initial_params(), 1, DP, run_id="probe")
    one_round = probe.ledger.epsilon(1e-5)
    site = _site(tmp_path / "site", max_run_epsilon=one_round * 10, max_epsilon=one_round * 1.2)
    start = site.initial_params()
    site.fit(start, 1, DP, run_id="run-a")
    with pytest.raises(PolicyRefusal, match="--max-epsilon"):  # a fresh run id buys nothing
        site.fit(start, 1, DP, run_id="run-b")


def test_a_per_run_cap_refuses_a_round_without_local_dp(tmp_path: Path):
    site = _site(tmp_path, max_run_epsilon=1.0)
    assert site.hides_count
    with pytest.raises(PolicyRefusal, match="--max-run-epsilon"):
        site.fit(site.initial_params(), 1, {"seed": 0.0}, run_id="run-a")
