"""DP in simulation: ε per round in metrics.jsonl, the guarantee, the budget stop, sampling, seeds.

Small in-process runs (digits, 10 clients, a few rounds) through
:func:`fedops.simulation.engine.run_simulation`, the function behind
``fedops simulate``. Every expected ε comes from Google's ``dp_accounting``
composed here, event by event (an auditor's replay), never from fedops'
own accountant: PLD with its default discretisation for Poisson sampling
and for known participation, RDP under replace-one adjacency for sampling
without replacement (the Gaussian at σ/2: one client's clipped update may
become any other, so the sum moves by up to 2C).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sqlite3
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant

from fedops.core.params import Params, digest
from fedops.core.privacy.local import steps_per_round
from fedops.runtime.privacy import CentralPrivacy, PrivacySettings
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.store import RunStore
from fedops.simulation.engine import run_simulation, site_ledger_book
from fedops.tasks import site as site_module

DELTA = 1e-5
DP_KEYS = ("epsilon", "delta", "accountant", "noise_multiplier", "clip_norm", "privacy_event")
#: the PLD headline is dp_accounting's PLD at a coarser (pessimistic) grid: an upper bound on
#: the oracle's ε, and within this of it
PLD_REL = 1e-3


@pytest.fixture(autouse=True)
def _quiet_opacus():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# -- the oracle: dp_accounting, composed here ----------------------------------------------------
def _dp_event(raw: dict[str, Any]) -> Any:
    """A round's ``privacy_event`` from metrics.jsonl as a dp_accounting event."""
    sigma = raw["noise_multiplier"]
    if raw["sampling"] == "poisson":
        return dpa.PoissonSampledDpEvent(raw["sample_rate"], dpa.GaussianDpEvent(sigma))
    if raw["sampling"] == "known":
        return dpa.GaussianDpEvent(sigma)
    assert raw["sampling"] == "fixed", raw
    return dpa.SampledWithoutReplacementDpEvent(
        raw["population"], raw["sample_size"], dpa.GaussianDpEvent(sigma / 2)
    )


def pld_epsilon(events: Iterable[Any], delta: float = DELTA) -> float:
    accountant = PLDAccountant()  # add/remove adjacency, pessimistic, 1e-4 grid
    for event in events:
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def rdp_epsilon(events: Iterable[Any], *, replace_one: bool = False, delta: float = DELTA) -> float:
    relation = dpa.NeighboringRelation.REPLACE_ONE if replace_one else None
    accountant = RdpAccountant(**({"neighboring_relation": relation} if relation else {}))
    for event in events:
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def poisson(q: float, sigma: float = 1.0) -> Any:
    return dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))


def gaussian(sigma: float = 1.0) -> Any:
    return dpa.GaussianDpEvent(sigma)


def assert_pld_bound(reported: float, oracle: float) -> None:
    """fedops' PLD ε is an upper bound on dp_accounting's, and within PLD_REL of it."""
    assert oracle * (1 - 1e-6) <= reported <= oracle * (1 + PLD_REL), (reported, oracle)


# -- runs ----------------------------------------------------------------------------------------
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
    if mode == "distributed":
        cfg.secagg.name = "secaggplus"
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
            last = store.last_round()
            assert last is not None
            self.final: Params = store.load_round(last)
            #: who trained in each round (state.sqlite's participants, fit phase)
            self.cohorts = [
                sorted(p.node_id for p in store.participants(r) if p.phase == "fit")
                for r in range(1, last + 1)
            ]
        finally:
            store.close()
        self.sentence: str = summary.get("privacy", "")

    @property
    def epsilons(self) -> list[float]:
        return [m["epsilon"] for m in self.metrics]

    def events(self) -> list[Any]:
        """The auditor's view: one dp_accounting event per committed round."""
        return [_dp_event(m["privacy_event"]) for m in self.metrics]


def _simulate(cfg: SimulateConfig, run_dir: Path) -> Finished:
    return Finished(run_dir, run_simulation(cfg, run_dir))


def _same(a: Params, b: Params) -> bool:
    return digest(a) == digest(b)


# -- central DP, Poisson sampling (the default) --------------------------------------------------
def test_central_dp_writes_epsilon_per_round_and_a_guarantee(tmp_path: Path):
    run = _simulate(_config(clients_per_round=5), tmp_path / "run")
    assert run.summary["status"] == "completed" and "stop_reason" not in run.summary
    assert [m["round"] for m in run.metrics] == [1, 2, 3]
    for r, m in enumerate(run.metrics, start=1):
        assert all(key in m for key in DP_KEYS), m
        assert (m["delta"], m["noise_multiplier"], m["clip_norm"], m["accountant"]) == (
            DELTA,
            1.0,
            1.0,
            "pld",
        )
        # Poisson at q = 5/10: the mechanism the round ran, as the accountant saw it
        assert m["privacy_event"] == {
            "noise_multiplier": 1.0,
            "sampling": "poisson",
            "sample_rate": 0.5,
        }
        assert "Poisson" in m["privacy_mechanism"] and "PLD" in m["privacy_mechanism"]
        assert_pld_bound(m["epsilon"], pld_epsilon([poisson(0.5)] * r))
        assert m["epsilon_rdp"] == pytest.approx(rdp_epsilon([poisson(0.5)] * r), rel=1e-9)
        # a party that knows who took part gets no amplification by sampling
        known = pld_epsilon([gaussian(1.0)] * r)
        assert_pld_bound(m["epsilon_known_participants"], known)
        assert known > 1.2 * m["epsilon"]
    eps = run.epsilons
    assert eps[0] < eps[1] < eps[2]
    sentence = run.sentence
    assert isinstance(sentence, str) and run.on_disk["privacy"] == sentence
    assert f"ε={eps[-1]:.3g}" in sentence and "δ=1e-05" in sentence, sentence
    assert "over 3 rounds" in sentence, sentence
    # it names the sampling, the adjacency, the accountant and the parties
    for words in ("Poisson", "add/remove", "PLD", "released models", "coordinator"):
        assert words in sentence, (words, sentence)
    assert f"ε={run.metrics[-1]['epsilon_known_participants']:.3g}" in sentence, sentence
    assert "NOT private" not in sentence
    assert run.on_disk["privacy_mode"] == "central"


def test_the_summary_epsilon_is_an_auditors_replay_of_the_recorded_events(tmp_path: Path):
    run = _simulate(_config(rounds=4, clients_per_round=3, noise_multiplier=1.3), tmp_path / "run")
    # every committed round recorded the mechanism it ran: Poisson at 3/10 with σ = 1.3
    events = [m["privacy_event"] for m in run.metrics]
    assert events == [{"noise_multiplier": 1.3, "sampling": "poisson", "sample_rate": 0.3}] * 4
    # the auditor composes them with dp_accounting's PLD accountant, and gets the summary's ε
    replayed = pld_epsilon(run.events())
    final = run.summary["final_metrics"]["epsilon"]
    assert_pld_bound(final, replayed)
    assert f"ε={replayed:.3g}" in run.sentence, (replayed, run.sentence)
    # and the ε written every round is the replay of the events so far
    for r, m in enumerate(run.metrics, start=1):
        assert_pld_bound(m["epsilon"], pld_epsilon(run.events()[:r]))
    # the signed audit log carries the same events, so the auditor needs nothing else
    audit = [
        json.loads(line) for line in (tmp_path / "run" / "audit.jsonl").read_text().splitlines()
    ]
    spent = [e["payload"] for e in audit if e["event"] == "privacy_spent"]
    assert [e["round"] for e in spent] == [1, 2, 3, 4]
    assert [e["privacy_event"] for e in spent] == events
    assert all("Poisson" in e["privacy_mechanism"] for e in spent)
    assert_pld_bound(
        spent[-1]["epsilon"], pld_epsilon(_dp_event(e["privacy_event"]) for e in spent)
    )


def test_without_privacy_nothing_is_reported(tmp_path: Path):
    run = _simulate(_config(rounds=1, mode="none"), tmp_path / "run")
    assert "privacy" not in run.summary and run.summary["privacy_mode"] == "none"
    assert not any(key in run.metrics[0] for key in DP_KEYS)
    assert math.isfinite(run.metrics[0]["train_loss"])  # the sites' losses, without DP


def test_central_dp_releases_no_exact_clipped_fraction_and_no_site_losses(tmp_path: Path):
    for name, adaptive in (("fixed", False), ("adaptive", True)):
        run = _simulate(_config(rounds=2, adaptive=adaptive), tmp_path / name)
        for m in run.metrics:
            assert "dp_clipped_fraction" not in m, m  # the exact fraction is outside the noise
            assert "train_loss" not in m, m  # the sites' own losses are outside the mechanism
        lines = (tmp_path / name / "metrics.jsonl").read_text()
        assert "dp_clipped_fraction" not in lines and "train_loss" not in lines


def test_the_operator_may_release_site_metrics_outside_the_guarantee(tmp_path: Path):
    run = _simulate(_config(rounds=2, release_site_metrics=True), tmp_path / "run")
    assert all(math.isfinite(m["train_loss"]) for m in run.metrics), run.metrics
    assert all("dp_clipped_fraction" not in m for m in run.metrics)


@pytest.mark.parametrize("backend", ["sequential", "vectorized"])
def test_the_budget_stops_the_run_before_the_round_that_would_exceed_it(
    tmp_path: Path, backend: str
):
    # every client every round (q = 1): rounds 1-2 fit under the target, round 3 does not
    two, three = (pld_epsilon([gaussian(1.0)] * r) for r in (2, 3))
    target = round((two + three) / 2, 3)
    run = _simulate(_config(rounds=5, backend=backend, target_epsilon=target), tmp_path / "run")
    assert run.summary["status"] == "budget_exhausted"
    assert run.on_disk["status"] == "budget_exhausted"
    assert run.summary["rounds_completed"] == 2
    assert [m["round"] for m in run.metrics] == [1, 2]
    assert_pld_bound(run.metrics[-1]["epsilon"], two)
    assert run.metrics[-1]["epsilon"] <= target
    reason = run.summary["stop_reason"]
    assert "privacy.target_epsilon" in reason and "round 3" in reason, reason
    assert run.on_disk["stop_reason"] == reason
    assert "over 2 rounds" in run.sentence, run.sentence


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
    # the oracle agrees that σ spends at most the target, and barely less
    assert 0.99 * 5.0 <= pld_epsilon([gaussian(sigma)] * 3) <= 5.0
    assert f"σ={sigma:.3g}" in run.sentence


def test_adaptive_clipping_carries_the_clip_norm_from_round_to_round(tmp_path: Path):
    # count noise 0.6: the centred count Σ(b_i − ½) has sensitivity ½, so it is a Gaussian at
    # 2·0.6 and the update's σ_Δ solves σ_Δ⁻² + (2·0.6)⁻² = σ⁻² (Andrew et al. 2021)
    run = _simulate(_config(rounds=3, adaptive=True, count_noise=0.6), tmp_path / "run")
    assert run.summary["status"] == "completed"
    clip = [m["clip_norm"] for m in run.metrics]
    assert clip[0] == 0.1
    for before, after in itertools.pairwise(run.metrics):
        assert after["clip_norm"] == before["next_clip_norm"]
    for m in run.metrics:
        b = m["dp_noised_unclipped_fraction"]
        # C ← C·exp(−η(b̄ − γ)) with η = 0.2, γ = 0.5, from the *noised* fraction
        assert m["next_clip_norm"] == pytest.approx(
            m["clip_norm"] * math.exp(-0.2 * (b - 0.5)), rel=1e-12
        )
        assert m["update_noise_multiplier"] == pytest.approx((1 - 1 / 1.2**2) ** -0.5, rel=1e-12)
        # every update of a freshly trained logreg is far above these clips: the true fraction
        # is 0, and the centred count's noise is 0.6/10 = 0.06 (an uncentred sum would read ½)
        assert abs(b) < 0.4, b
        assert m["privacy_event"]["noise_multiplier"] == 1.0  # the pair spends one σ=1 round
    assert clip[0] < clip[1] < clip[2]
    assert "adaptive" in run.sentence


def test_adaptive_clipping_without_noise_runs_and_claims_no_privacy(tmp_path: Path):
    """Decided (issue 21): allowed, as a non-private baseline; its ε is infinite."""
    run = _simulate(_config(rounds=2, adaptive=True, noise_multiplier=0.0), tmp_path / "run")
    assert run.summary["status"] == "completed"
    assert [float(e) for e in run.epsilons] == [math.inf, math.inf]  # JSON: "inf"


def test_poisson_cohorts_vary_in_size_and_the_mean_divides_by_the_expected_size(tmp_path: Path):
    run = _simulate(_config(rounds=6, clients_per_round=5), tmp_path / "run")
    sizes = [len(c) for c in run.cohorts]
    assert [m["num_clients"] for m in run.metrics] == sizes
    # Poisson at 1/2 of 10: six sizes all equal to 5 has probability 0.246^6 ≈ 2e-4
    assert len(set(sizes)) > 1, sizes


@pytest.mark.parametrize("seed", [None, 5])
def test_each_client_joins_a_round_with_probability_q(seed: int | None):
    """Inclusion frequencies of central DP's sampler match q = m/N (the accounted rate)."""
    privacy = CentralPrivacy(PrivacySettings(seed=seed), planned_rounds=1)
    nodes = [f"node-{i:03d}" for i in range(100)]
    draws, q = 2000, 0.3
    counts = dict.fromkeys(nodes, 0)
    sizes = []
    for r in range(1, draws + 1):
        sample = privacy.sample(nodes, 30, r)
        assert sample.population == 100 and sample.denominator == 30.0  # fixed, whatever drawn
        assert len(set(sample.selected)) == len(sample.selected)
        sizes.append(len(sample.selected))
        for node in sample.selected:
            counts[node] += 1
    sd = math.sqrt(q * (1 - q) / draws)
    z = [(c / draws - q) / sd for c in counts.values()]
    assert max(abs(x) for x in z) < 5.5, max(z, key=abs)
    assert sum(x * x for x in z) < 180  # χ² with 100 degrees of freedom: p < 1e-6 above
    mean = sum(sizes) / draws
    assert abs(mean - 30) < 5 * math.sqrt(100 * q * (1 - q) / draws), mean
    assert len(set(sizes)) > 5  # the cohort's size is random too


# -- seeds: deployment draws from the OS; privacy.seed is for experiments ------------------------
def test_the_run_seed_does_not_seed_the_noise(tmp_path: Path):
    # every client every round: the cohort is fixed, and training is seeded by the run seed
    quiet = [_simulate(_config(rounds=2, noise_multiplier=0.0), tmp_path / f"q{i}") for i in (1, 2)]
    assert _same(quiet[0].final, quiet[1].final)  # without noise the runs agree bit for bit
    noisy = [_simulate(_config(rounds=2), tmp_path / f"n{i}") for i in (1, 2)]
    assert not _same(noisy[0].final, noisy[1].final)  # same run seed, different noise
    assert not _same(noisy[0].final, quiet[0].final)
    for run in noisy:
        assert "NOT private" not in run.sentence and "privacy.seed" not in run.sentence


def test_the_run_seed_does_not_seed_the_cohorts(tmp_path: Path):
    first, second = (
        _simulate(_config(rounds=3, clients_per_round=5, seed=0), tmp_path / name)
        for name in ("a", "b")
    )
    # Poisson at 1/2 from the CSPRNG: three equal cohorts in a row have probability 2^-30
    assert first.cohorts != second.cohorts, first.cohorts
    assert not _same(first.final, second.final)


def test_a_privacy_seed_makes_a_run_reproducible_and_says_it_is_not_private(tmp_path: Path):
    cfg = _config(rounds=3, clients_per_round=5, privacy_seed=7)
    first, again = _simulate(cfg, tmp_path / "a"), _simulate(cfg, tmp_path / "b")
    assert first.cohorts == again.cohorts
    assert _same(first.final, again.final)
    for name, value in first.final.items():
        np.testing.assert_array_equal(again.final[name], value)
    for run in (first, again):
        assert "NOT private" in run.sentence and "privacy.seed=7" in run.sentence, run.sentence
    other = _simulate(_config(rounds=3, clients_per_round=5, privacy_seed=8), tmp_path / "c")
    assert other.cohorts != first.cohorts or not _same(other.final, first.final)


# -- resume: the committed ledger ----------------------------------------------------------------
def test_a_resumed_private_run_ends_with_the_model_of_an_uninterrupted_one(tmp_path: Path):
    cfg = {"clients_per_round": 10, "privacy_seed": 3}
    whole = _simulate(_config(rounds=3, **cfg), tmp_path / "whole")
    _simulate(_config(rounds=2, **cfg), tmp_path / "part")
    resumed = _simulate(_config(rounds=3, **cfg), tmp_path / "part")
    # the accountant does continue: ε of the resumed rounds equals the uninterrupted run's
    assert resumed.epsilons == pytest.approx(whole.epsilons, rel=1e-12)
    assert_pld_bound(resumed.epsilons[-1], pld_epsilon([gaussian(1.0)] * 3))
    assert "over 3 rounds" in resumed.sentence, resumed.sentence
    assert _same(resumed.final, whole.final)


def test_a_run_that_lost_its_committed_ledger_refuses_to_resume(tmp_path: Path):
    _simulate(_config(rounds=2), tmp_path / "run")
    with sqlite3.connect(tmp_path / "run" / "state.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM privacy_spent").fetchone()[0] == 2
        db.execute("DELETE FROM privacy_spent")
    with pytest.raises(ValueError, match="no committed privacy ledger"):
        run_simulation(_config(rounds=3), tmp_path / "run")


def test_a_round_released_but_not_saved_is_still_counted_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # the coordinator dies after round 2's noised model went to the evaluators, before the
    # round was saved: the ledger was committed first, so the resumed run counts that release
    real_save = RunStore.save_round

    def crash_in_round_2(self: RunStore, server_round: int, *args: Any, **kwargs: Any) -> None:
        if server_round == 2:
            raise RuntimeError("coordinator killed")
        real_save(self, server_round, *args, **kwargs)

    monkeypatch.setattr(RunStore, "save_round", crash_in_round_2)
    with pytest.raises(RuntimeError, match="coordinator killed"):
        run_simulation(_config(rounds=3), tmp_path / "run")
    monkeypatch.setattr(RunStore, "save_round", real_save)
    resumed = _simulate(_config(rounds=3), tmp_path / "run")
    assert [m["round"] for m in resumed.metrics] == [1, 2, 3]
    # round 2 ran twice and both releases count: 4 Gaussian rounds at q = 1 after round 3
    for m, spent in zip(resumed.metrics, (1, 3, 4), strict=True):
        assert_pld_bound(m["epsilon"], pld_epsilon([gaussian(1.0)] * spent))


# -- other mechanisms ----------------------------------------------------------------------------
def test_fixed_size_sampling_is_accounted_without_replacement_under_replace_one(tmp_path: Path):
    run = _simulate(
        _config(rounds=3, clients_per_round=5, sampling="fixed", accountant="rdp"), tmp_path / "run"
    )
    assert [len(c) for c in run.cohorts] == [5, 5, 5]
    event = dpa.SampledWithoutReplacementDpEvent(10, 5, dpa.GaussianDpEvent(0.5))
    for r, m in enumerate(run.metrics, start=1):
        assert m["accountant"] == "rdp"
        assert m["privacy_event"] == {
            "noise_multiplier": 1.0,
            "sampling": "fixed",
            "population": 10,
            "sample_size": 5,
        }
        assert m["epsilon"] == pytest.approx(rdp_epsilon([event] * r, replace_one=True), rel=1e-9)
        assert "epsilon_pld" not in m  # dp_accounting's PLD has no such event
    # replace-one at σ/2 costs more than Poisson's add/remove at σ
    assert run.epsilons[-1] > pld_epsilon([poisson(0.5)] * 3)
    for words in ("without replacement", "replace-one", "RDP", "over 3 rounds"):
        assert words in run.sentence, (words, run.sentence)


def test_published_participants_are_accounted_without_amplification(tmp_path: Path):
    run = _simulate(
        _config(rounds=2, clients_per_round=5, publish_participants=True), tmp_path / "run"
    )
    for r, m in enumerate(run.metrics, start=1):
        assert m["privacy_event"] == {"noise_multiplier": 1.0, "sampling": "known"}
        assert_pld_bound(m["epsilon"], pld_epsilon([gaussian(1.0)] * r))
        assert "epsilon_known_participants" not in m  # the headline already is that bound
    assert "no amplification" in run.sentence, run.sentence


def test_distributed_dp_is_accounted_without_amplification_and_with_its_colluders(
    tmp_path: Path,
):
    runs = {
        c: _simulate(
            _config(rounds=2, clients_per_round=5, mode="distributed", colluders=c),
            tmp_path / f"c{c}",
        )
        for c in (0, 2)
    }
    for c, run in runs.items():
        assert run.summary["status"] == "completed", run.summary
        for r, m in enumerate(run.metrics, start=1):
            assert m["privacy_event"]["sampling"] == "known"  # the coordinator picks the cohort
            sigma = m["effective_noise_multiplier"]
            assert m["privacy_event"]["noise_multiplier"] == sigma
            # dropouts none here (5 of 5 survive): σ·√((5 − c)/5); the grid scales the
            # noise to cover the stochastic rounding, so it costs nothing
            assert sigma == pytest.approx(math.sqrt((5 - c) / 5), rel=1e-9)
            assert_pld_bound(m["epsilon"], pld_epsilon(run.events()[:r]))
            assert "train_loss" not in m
        assert f"up to {c} colluding" in run.sentence, run.sentence
        assert "coordinator" in run.sentence and "no amplification" in run.sentence
    # the colluders' shares are subtracted: exactly √(3/5) of the honest noise is left
    for honest, colluded in zip(runs[0].metrics, runs[2].metrics, strict=True):
        ratio = colluded["effective_noise_multiplier"] / honest["effective_noise_multiplier"]
        assert ratio == pytest.approx(math.sqrt(3 / 5), rel=1e-9)
    assert runs[2].epsilons[-1] > runs[0].epsilons[-1]


# -- local DP ------------------------------------------------------------------------------------
def _site_epsilons(run_dir: Path, sites: int = 10) -> list[float]:
    """Each simulated site's ε, from its own ledger (the coordinator is never told it)."""
    book = site_ledger_book(run_dir)
    return [book.epsilon(i, DELTA) for i in range(sites)]


def test_local_dp_with_a_target_lets_every_site_derive_its_noise(tmp_path: Path):
    cfg = _config(mode="local", noise_multiplier="auto", target_epsilon=5.0)
    run = _simulate(cfg, tmp_path / "run")
    # every site spends its budget over exactly the planned rounds, from below
    spent = _site_epsilons(tmp_path / "run")
    assert all(0.99 * 5.0 <= eps <= 5.0 for eps in spent), spent
    assert all(m["noise_multiplier"] == "auto" and m["target_epsilon"] == 5.0 for m in run.metrics)
    assert not any("epsilon" in m for m in run.metrics)  # no site's ε reaches the coordinator
    assert "σ per site" in run.sentence


def test_local_dp_site_policy_declines_rounds_past_its_limit(tmp_path: Path):
    cfg = _config(mode="local", noise_multiplier=1.0, rounds=3, site_max_epsilon=6.0)
    run = _simulate(cfg, tmp_path / "run")
    clients = [m["num_clients"] for m in run.metrics]
    assert clients[0] == 10 and clients[-1] < 10, clients  # sites stop once ε would pass 6
    assert all(eps <= 6.0 for eps in _site_epsilons(tmp_path / "run"))
    # a DP site answers with its noised model alone: one example, no metrics
    store = RunStore(tmp_path / "run")
    try:
        fits = [p for r in (1, 2, 3) for p in store.participants(r) if p.phase == "fit"]
    finally:
        store.close()
    assert {p.num_examples for p in fits if p.outcome == "ok"} == {1}, fits


def test_a_resumed_local_dp_simulation_continues_what_each_site_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Red team F6: simulated sites kept their ledgers in memory, so a crashed and resumed
    run counted each site's ε from zero again (site_max_epsilon=2.2 ended at 2.81)."""
    trained: dict[str, list[tuple[float, int, float]]] = {}
    real = site_module.train_private

    def recording(model: Any, data: Any, cfg: Any, dp: Any, records: Any = None) -> Any:
        x, _ = data  # which site: its rows, the same in both runs
        q, steps = steps_per_round(records or len(x), cfg)
        key = hashlib.sha256(x.numpy().tobytes()).hexdigest()
        trained.setdefault(key, []).append((q, steps, dp.noise_multiplier))
        return real(model, data, cfg, dp, records=records)

    monkeypatch.setattr(site_module, "train_private", recording)
    cap, run_dir = 5.0, tmp_path / "run"
    _simulate(_config(mode="local", noise_multiplier=1.0, rounds=3, site_max_epsilon=cap), run_dir)
    first = {key: len(calls) for key, calls in trained.items()}
    resumed = _simulate(
        _config(mode="local", noise_multiplier=1.0, rounds=6, site_max_epsilon=cap), run_dir
    )
    assert [m["round"] for m in resumed.metrics] == [1, 2, 3, 4, 5, 6]
    assert any(len(trained[key]) > n for key, n in first.items())  # trained after resuming
    assert any(n == 3 for n in first.values())  # and before: from 3 rounds of spending
    for key, calls in trained.items():
        accountant = PLDAccountant()  # everything this site trained, composed independently
        for q, steps, sigma in calls:
            accountant.compose(poisson(q, sigma), steps)
        assert accountant.get_epsilon(DELTA) <= cap, (key, calls)
