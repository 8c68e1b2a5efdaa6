"""privacy=local on the batched backend: every site's policy, ledger and ε as a sequential site's.

The two backends draw different noise (fresh OS entropy per site and round on both), so
their models differ; what each site charges, spends and declines must not.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.store import RunStore
from fedops.simulation import local_dp_sites
from fedops.simulation.backend_choice import choose_backend
from fedops.simulation.engine import run_simulation, site_ledger_book
from fedops.tasks import ledger_book
from fedops.tasks.ledger_book import LedgerBook

pytestmark = pytest.mark.usefixtures("quiet_warnings")  # Opacus warns on every DP-SGD step
SITES, DELTA = 10, 1e-5
LATEST_ROUND = "SELECT round, count(*) FROM charges GROUP BY round ORDER BY round DESC LIMIT 1"


def _config(backend: str, rounds: int = 3, **privacy: object) -> SimulateConfig:
    cfg = SimulateConfig(
        rounds=rounds, seed=0, simulation=SimulationConfig(backend=backend, num_clients=SITES)
    )
    cfg.client.epochs = 1
    cfg.privacy.name = "local"
    for key, value in privacy.items():
        setattr(cfg.privacy, key, value)
    return validate(cfg)


def _run(backend: str, run_dir: Path, rounds: int = 3, **privacy: object) -> dict[str, object]:
    summary = run_simulation(_config(backend, rounds, **privacy), run_dir)
    book = site_ledger_book(run_dir)  # one file for every simulated site, on both backends
    store = RunStore(run_dir)
    try:
        fits = [p for r in range(1, rounds + 1) for p in store.participants(r) if p.phase == "fit"]
    finally:
        store.close()
    return {
        "backend": summary["backend"],
        "charges": [book.charges(i) for i in range(SITES)],
        "epsilon": [book.epsilon(i, DELTA) for i in range(SITES)],
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


@pytest.mark.parametrize("backend", ["vectorized", "sequential"])
def test_a_resumed_simulation_continues_each_site_spend_on_either_backend(
    tmp_path: Path, backend: str
):
    """Two rounds, then resumed to four: every site's ledger, ε and declines as in an
    uninterrupted run (so the cap counts what each site spent before the restart)."""
    privacy = {"noise_multiplier": 1.0, "site_max_epsilon": 6.0}
    _run(backend, tmp_path / "resumed", rounds=2, **privacy)
    resumed = _run(backend, tmp_path / "resumed", rounds=4, **privacy)
    straight = _run(backend, tmp_path / "straight", rounds=4, **privacy)
    assert all(resumed["charges"]) and resumed["charges"] == straight["charges"]
    assert resumed["epsilon"] == straight["epsilon"]
    assert resumed["fits"] == straight["fits"]
    assert any(outcome != "ok" for _, outcome, _ in resumed["fits"])  # the cap bit


def test_a_round_charges_every_site_before_any_update_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """When the first update of a round becomes an event, every charge of that round is
    already committed in the book (read by a new connection, as after a crash)."""
    seen: list[tuple[int, int]] = []  # (round, its charges in the file) at each update
    real = local_dp_sites.fit_event

    def watched(*args: Any, **kwargs: Any) -> Any:
        with sqlite3.connect(tmp_path / "run" / "site_ledgers" / LedgerBook.FILE) as conn:
            seen.append(conn.execute(LATEST_ROUND).fetchone())
        return real(*args, **kwargs)

    monkeypatch.setattr(local_dp_sites, "fit_event", watched)
    done = _run("vectorized", tmp_path / "run", noise_multiplier=1.0, site_max_epsilon=6.0)
    per_round = Counter(c.server_round for charges in done["charges"] for c in charges)
    assert seen and all(count == per_round[r] for r, count in seen), (seen, per_round)
    assert sum(per_round.values()) == len(seen)  # one update used per charge, none before


def test_a_round_the_book_cannot_record_sends_no_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real = ledger_book._insert

    def disk_full_in_round_two(path: Path, rows: Any) -> None:
        if rows and rows[0][2] == 2:  # (site, run_id, round, event, steps)
            raise sqlite3.OperationalError("database or disk is full")
        real(path, rows)

    monkeypatch.setattr(ledger_book, "_insert", disk_full_in_round_two)
    done = _run("vectorized", tmp_path / "run", rounds=2, noise_multiplier=1.0)
    store = RunStore(tmp_path / "run")
    try:
        second = store.participants(2)
    finally:
        store.close()
    fits = [p for p in second if p.phase == "fit"]
    assert fits and all("could not record" in (p.reason or "") for p in fits), fits
    assert all(c.server_round == 1 for charges in done["charges"] for c in charges)


@pytest.mark.parametrize("backend", ["vectorized", "sequential"])
def test_a_damaged_book_refuses_dp_training_on_resume(tmp_path: Path, backend: str):
    _run(backend, tmp_path / "run", rounds=1, noise_multiplier=1.0)
    path = tmp_path / "run" / "site_ledgers" / LedgerBook.FILE
    path.write_bytes(b"not a database" * 100)
    run_simulation(_config(backend, 2, noise_multiplier=1.0), tmp_path / "run")
    store = RunStore(tmp_path / "run")
    try:
        fits = [p for p in store.participants(2) if p.phase == "fit"]
    finally:
        store.close()
    assert fits and all("cannot be read" in (p.reason or "") for p in fits), fits
    assert path.read_bytes() == b"not a database" * 100  # never replaced by an empty book
