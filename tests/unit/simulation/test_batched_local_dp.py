"""privacy=local on the batched backend: every site's policy, ledger and ε as a sequential site's.

The two backends draw different noise (fresh OS entropy per site and round on both), so
their models differ; what each site charges, spends and declines must not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.store import RunStore
from fedops.simulation.backend_choice import choose_backend
from fedops.simulation.engine import run_simulation, site_ledger_dir
from fedops.tasks.ledger import SiteLedger

pytestmark = pytest.mark.usefixtures("quiet_warnings")  # Opacus warns on every DP-SGD step
SITES, DELTA = 10, 1e-5


def _config(backend: str, **privacy: object) -> SimulateConfig:
    cfg = SimulateConfig(
        rounds=3, seed=0, simulation=SimulationConfig(backend=backend, num_clients=SITES)
    )
    cfg.client.epochs = 1
    cfg.privacy.name = "local"
    for key, value in privacy.items():
        setattr(cfg.privacy, key, value)
    return validate(cfg)


def _run(backend: str, run_dir: Path, **privacy: object) -> dict[str, object]:
    summary = run_simulation(_config(backend, **privacy), run_dir)
    ledgers = [SiteLedger(site_ledger_dir(run_dir, i)) for i in range(SITES)]
    store = RunStore(run_dir)
    try:
        fits = [p for r in (1, 2, 3) for p in store.participants(r) if p.phase == "fit"]
    finally:
        store.close()
    return {
        "backend": summary["backend"],
        "charges": [ledger.charges() for ledger in ledgers],
        "epsilon": [ledger.epsilon(DELTA) for ledger in ledgers],
        "fits": sorted((p.node_id, p.outcome, p.num_examples) for p in fits),
    }


@pytest.mark.parametrize(
    "privacy",
    [
        {"noise_multiplier": 1.0},
        {"noise_multiplier": 1.0, "site_max_epsilon": 6.0},  # some sites decline later rounds
        {"noise_multiplier": "auto", "target_epsilon": 5.0},  # σ derived per site from its n
    ],
    ids=["sigma", "capped", "auto"],
)
def test_each_site_charges_and_spends_what_a_sequential_site_does(
    tmp_path: Path, privacy: dict[str, object]
):
    batched = _run("vectorized", tmp_path / "batched", **privacy)
    sequential = _run("sequential", tmp_path / "sequential", **privacy)
    assert batched["backend"] == "vectorized" and sequential["backend"] == "sequential"
    assert batched["charges"] == sequential["charges"]  # event (σ, Poisson q) and steps
    assert batched["epsilon"] == sequential["epsilon"]
    assert all(charges for charges in batched["charges"])
    # the same declines, and a DP site's answer: the noised model with one example
    assert batched["fits"] == sequential["fits"]
    assert {n for _, outcome, n in batched["fits"] if outcome == "ok"} == {1}
    if "site_max_epsilon" in privacy:
        assert any(outcome != "ok" for _, outcome, _ in batched["fits"])
        assert max(batched["epsilon"]) <= 6.0


def test_local_dp_stays_on_the_batched_backend_without_a_warning(
    caplog: pytest.LogCaptureFixture,
):
    with caplog.at_level(logging.WARNING, logger="fedops.simulate"):
        assert choose_backend(_config("vectorized", noise_multiplier=1.0)) == "vectorized"
    assert not caplog.records
