"""Central DP in simulation: ε per round in metrics.jsonl, the guarantee, the budget stop, seeds.

Small in-process runs (digits, 10 clients, a few rounds) through
:func:`fedops.simulation.engine.run_simulation`, the function behind
``fedops simulate``. The expected ε comes from the accountant directly.
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedops.core.params import Params, digest
from fedops.core.privacy.accountant import epsilon
from fedops.runtime.settings import ConfigError
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.store import RunStore
from fedops.simulation.engine import run_simulation

DP_KEYS = ("epsilon", "delta", "noise_multiplier", "clip_norm", "sample_rate")


@pytest.fixture(autouse=True)
def _quiet_opacus():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _config(
    *,
    rounds: int = 3,
    backend: str = "sequential",
    clients_per_round: int | None = None,
    seed: int = 0,
    mode: str = "central",
    **privacy: Any,
) -> SimulateConfig:
    cfg = SimulateConfig(
        rounds=rounds,
        seed=seed,
        simulation=SimulationConfig(
            backend=backend, num_clients=10, clients_per_round=clients_per_round
        ),
    )
    cfg.client.epochs = 1
    cfg.privacy.name = mode
    if mode == "central" and privacy.pop("adaptive", False):
        cfg.privacy.adaptive, cfg.privacy.clip_norm = True, 0.1  # as privacy=central_adaptive
    if "privacy_seed" in privacy:  # privacy.seed (``seed`` is the run's)
        cfg.privacy.seed = privacy.pop("privacy_seed")
    for key, value in privacy.items():
        assert hasattr(cfg.privacy, key), key
        setattr(cfg.privacy, key, value)
    return validate(cfg)


class Finished:
    def __init__(self, run_dir: Path, summary: dict[str, Any]) -> None:
        self.summary = summary
        self.on_disk = json.loads((run_dir / "summary.json").read_text())
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        self.metrics = [json.loads(line) for line in lines]
        store = RunStore(run_dir)
        try:
            self.final: Params = store.load_round(store.last_round())
        finally:
            store.close()


def _simulate(cfg: SimulateConfig, run_dir: Path) -> Finished:
    return Finished(run_dir, run_simulation(cfg, run_dir))


def _same(a: Params, b: Params) -> bool:
    return digest(a) == digest(b)


def test_central_dp_writes_epsilon_per_round_and_a_guarantee(tmp_path: Path):
    run = _simulate(_config(clients_per_round=5), tmp_path / "run")
    assert run.summary["status"] == "completed" and "stop_reason" not in run.summary
    assert [m["round"] for m in run.metrics] == [1, 2, 3]
    for r, m in enumerate(run.metrics, start=1):
        assert all(key in m for key in DP_KEYS), m
        assert (m["delta"], m["noise_multiplier"], m["clip_norm"], m["sample_rate"]) == (
            1e-5,
            1.0,
            1.0,
            0.5,
        )
        assert m["epsilon"] == pytest.approx(epsilon([(1.0, 0.5, r)], 1e-5, "rdp"), rel=1e-9)
        assert 0 < m["epsilon_prv"] < m["epsilon"]
    eps = [m["epsilon"] for m in run.metrics]
    assert eps[0] < eps[1] < eps[2]
    sentence = run.summary["privacy"]
    assert isinstance(sentence, str) and run.on_disk["privacy"] == sentence
    assert f"ε={eps[-1]:.3g}" in sentence and "δ=1e-05" in sentence, sentence
    assert "over 3 rounds" in sentence and "5 of 10 clients per round" in sentence, sentence
    assert run.on_disk["privacy_mode"] == "central"


def test_without_privacy_nothing_is_reported(tmp_path: Path):
    run = _simulate(_config(rounds=1, mode="none"), tmp_path / "run")
    assert "privacy" not in run.summary and run.summary["privacy_mode"] == "none"
    assert not any(key in run.metrics[0] for key in DP_KEYS)


@pytest.mark.parametrize("backend", ["sequential", "vectorized"])
def test_the_budget_stops_the_run_before_the_round_that_would_exceed_it(
    tmp_path: Path, backend: str
):
    # every client every round (q = 1): rounds 1-2 fit under the target, round 3 does not
    two, three = (epsilon([(1.0, 1.0, r)], 1e-5, "rdp") for r in (2, 3))
    target = round((two + three) / 2, 3)
    run = _simulate(_config(rounds=5, backend=backend, target_epsilon=target), tmp_path / "run")
    assert run.summary["status"] == "budget_exhausted"
    assert run.on_disk["status"] == "budget_exhausted"
    assert run.summary["rounds_completed"] == 2
    assert [m["round"] for m in run.metrics] == [1, 2]
    assert run.metrics[-1]["epsilon"] == pytest.approx(two) and two <= target
    reason = run.summary["stop_reason"]
    assert "privacy.target_epsilon" in reason and "round 3" in reason, reason
    assert run.on_disk["stop_reason"] == reason
    assert "over 2 rounds" in run.summary["privacy"], run.summary["privacy"]


def test_auto_noise_spends_the_target_over_the_planned_rounds(tmp_path: Path):
    run = _simulate(
        _config(rounds=3, noise_multiplier="auto", target_epsilon=5.0), tmp_path / "run"
    )
    assert run.summary["status"] == "completed"
    sigmas = {m["noise_multiplier"] for m in run.metrics}
    assert len(sigmas) == 1
    (sigma,) = sigmas
    assert sigma > 1.0  # more noise than the default σ=1 to stay within 5 over 3 full rounds
    assert 0.99 * 5.0 <= run.metrics[-1]["epsilon"] <= 5.0
    assert f"σ={sigma:.3g}" in run.summary["privacy"]


def test_adaptive_clipping_carries_the_clip_norm_from_round_to_round(tmp_path: Path):
    run = _simulate(_config(rounds=3, adaptive=True), tmp_path / "run")
    assert run.summary["status"] == "completed"
    clip = [m["clip_norm"] for m in run.metrics]
    assert clip[0] == 0.1
    for before, after in itertools.pairwise(run.metrics):
        assert after["clip_norm"] == before["next_clip_norm"]
    # every update of a freshly trained logreg is far above 0.1: the clip norm grows
    assert clip[0] < clip[1] < clip[2]
    assert "adaptive" in run.summary["privacy"]


def test_the_noise_is_seeded_in_simulation(tmp_path: Path):
    first = _simulate(_config(rounds=2), tmp_path / "a")
    again = _simulate(_config(rounds=2), tmp_path / "b")
    assert _same(first.final, again.final)
    for name, value in first.final.items():
        np.testing.assert_array_equal(again.final[name], value)
    other = _simulate(_config(rounds=2, seed=0, privacy_seed=1), tmp_path / "c")
    assert not _same(first.final, other.final)  # another noise seed, same training
    noiseless = _simulate(_config(rounds=2, noise_multiplier=0.0), tmp_path / "d")
    assert not _same(first.final, noiseless.final)  # the noise is really there


def test_a_resumed_private_run_ends_with_the_model_of_an_uninterrupted_one(tmp_path: Path):
    whole = _simulate(_config(rounds=3, clients_per_round=10), tmp_path / "whole")
    _simulate(_config(rounds=2, clients_per_round=10), tmp_path / "part")
    resumed = _simulate(_config(rounds=3, clients_per_round=10), tmp_path / "part")
    # the accountant does continue: ε of the resumed rounds equals the uninterrupted run's
    assert [m["epsilon"] for m in resumed.metrics] == pytest.approx(
        [m["epsilon"] for m in whole.metrics], rel=1e-12
    )
    assert _same(resumed.final, whole.final)


def test_adaptive_clipping_without_noise_runs_or_is_refused_by_name(tmp_path: Path):
    try:
        cfg = _config(rounds=1, adaptive=True, noise_multiplier=0.0)
    except ConfigError as exc:
        assert exc.key == "privacy.noise_multiplier"
        return
    run = _simulate(cfg, tmp_path / "run")
    assert run.summary["status"] == "completed"


def test_local_dp_with_a_target_lets_every_site_derive_its_noise(tmp_path: Path):
    cfg = _config(mode="local", noise_multiplier="auto", target_epsilon=5.0)
    run = _simulate(cfg, tmp_path / "run")
    eps = [m["epsilon"] for m in run.metrics]
    assert eps == sorted(eps)
    # every site spends its budget over exactly the planned rounds, from below
    assert 0.99 * 5.0 <= eps[-1] <= 5.0, eps
    assert all(m["noise_multiplier"] == "auto" for m in run.metrics)
    assert "σ per site" in run.summary["privacy"]


def test_local_dp_site_policy_declines_rounds_past_its_limit(tmp_path: Path):
    cfg = _config(mode="local", noise_multiplier=1.0, rounds=3, site_max_epsilon=6.0)
    run = _simulate(cfg, tmp_path / "run")
    clients = [m["num_clients"] for m in run.metrics]
    assert clients[0] == 10 and clients[-1] < 10, clients  # sites stop once ε would pass 6
    assert all(m["epsilon"] <= 6.0 for m in run.metrics)
