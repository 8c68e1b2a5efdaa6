"""A resumed DP run's ledger is held to the signed audit log, whatever state.sqlite says.

Threat model: whoever holds the run directory (state.sqlite, checkpoints) but not the
audit signing key. Red team 2026-12 (hunt_dp2):

1. distributed DP resumed with more ``privacy.colluders`` than its rounds were accounted
   against signed a claim against them (refused now; fewer are fine);
2. a distributed ledger was held to the logged ε only: one of other events that composes
   to as much now and less later passed (now held to the logged events, as central DP's);
3. a round charged at unmask (or released to evaluators) lived only in state.sqlite until
   it committed: a crash then an edited ledger forgot it (now signed first, in
   ``privacy_charged``, and charged again on resume);
5. a resume with another σ or clip signed a claim naming only the new one.

Every ε asserted is dp_accounting's, composed here from the events the run recorded.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant

from fedops.core.results import FitResult
from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.privacy import CentralPrivacy, PrivacySettings, restore_ledger
from fedops.runtime.privacy.distributed import DistributedPrivacy
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.store import StoreError
from fedops.simulation.engine import run_simulation

NODES = [f"n{i:02d}" for i in range(10)]
DELTA = 1e-5
DISTRIBUTED = PrivacySettings(mode="distributed", min_survivors=3)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# -- helpers ------------------------------------------------------------------------------------
def _oracle(events: list[dict[str, Any]]) -> float:
    """dp_accounting's PLD ε of recorded ``privacy_event``s (known or Poisson)."""
    accountant = PLDAccountant()
    for raw in events:
        gauss = dpa.GaussianDpEvent(raw["noise_multiplier"])
        if raw["sampling"] == "known":
            accountant.compose(gauss)
        else:
            assert raw["sampling"] == "poisson", raw
            accountant.compose(dpa.PoissonSampledDpEvent(raw["sample_rate"], gauss))
    return float(accountant.get_epsilon(DELTA))


def _assert_pld(reported: float, oracle: float) -> None:
    """fedops' PLD ε bounds dp_accounting's from above, within 1e-3."""
    assert oracle * (1 - 1e-6) <= reported <= oracle * (1 + 1e-3), (reported, oracle)


def _ran(settings: PrivacySettings, rounds: int, *, survivors: int = 5) -> CentralPrivacy:
    """A central or distributed mechanism after ``rounds`` rounds, as the driver runs them."""
    cls = DistributedPrivacy if settings.mode == "distributed" else CentralPrivacy
    dp = cls(settings, planned_rounds=10)
    params = {"w": np.zeros(4, np.float32)}
    for r in range(1, rounds + 1):
        sample = dp.sample(NODES, 5, r)
        dp.begin_round(r, sample, params)
        if cls is CentralPrivacy:
            results = [FitResult(node_id=n, params=params, num_examples=1) for n in sample.selected]
            dp.aggregate(r, params, results, sample=sample)
        dp.spend(sample.selected[:survivors])
    return dp


def _log(settings: PrivacySettings, rows: list[dict[str, Any]]) -> Commitments:
    """The signed log of those rounds as a resume reads it (charged, committed, spent)."""
    logged = Commitments()
    section = {"name": settings.mode, "colluders": settings.colluders, "seed": None}
    logged.observe("run_started", {"config": {"privacy": section}})
    for row in rows:
        logged.observe("privacy_charged", row)
        logged.observe("round_committed", {"round": row["round"], "model_digest": "m"})
        logged.observe("privacy_spent", row)
    return logged


def _rows(dp: CentralPrivacy, rounds: int) -> list[dict[str, Any]]:
    return [{"round": r, **dp.metrics()} for r in range(1, rounds + 1)]


def _honest_rows(settings: PrivacySettings, rounds: int) -> list[dict[str, Any]]:
    """Each round's metrics as it was logged (ε so far, that round's event)."""
    return [{"round": r, **_ran(settings, r).metrics()} for r in range(1, rounds + 1)]


def _config(*, rounds: int, mode: str, **privacy: Any) -> SimulateConfig:
    cfg = SimulateConfig(
        rounds=rounds, seed=0, simulation=SimulationConfig(num_clients=6, clients_per_round=5)
    )
    cfg.client.epochs = 1
    cfg.privacy.name = mode
    if mode == "distributed":
        cfg.secagg.name = "secaggplus"
    for key, value in privacy.items():
        setattr(cfg.privacy, key, value)
    return validate(cfg)


def _entries(run: Path, event: str) -> list[dict[str, Any]]:
    lines = (run / "audit.jsonl").read_text().splitlines()
    return [e["payload"] for e in map(json.loads, lines) if e["event"] == event]


def _key(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True)


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- 1: privacy.colluders may not rise on resume -----------------------------------------------
def _colluding(c: int) -> PrivacySettings:
    return PrivacySettings(mode="distributed", min_survivors=3, colluders=c)


def test_more_colluders_on_resume_is_refused_naming_the_key():
    ran = _ran(_colluding(0), 2)
    rows = _rows(ran, 2)
    resumed = DistributedPrivacy(_colluding(4), planned_rounds=10)
    with pytest.raises(StoreError, match=r"^privacy.colluders: this run spent 2 rounds") as info:
        restore_ledger(resumed, ran.ledger_json(), rows, logged=_log(_colluding(0), rows))
    assert "\n" not in str(info.value)
    assert "keep privacy.colluders at most 0, or start a new run directory" in str(info.value)
    assert resumed.guarantee().startswith("none claimed: the resume was refused")


@pytest.mark.parametrize("record", ["ledger", "log", "metrics"])
def test_each_record_alone_tells_the_colluders_the_rounds_were_accounted_against(record: str):
    """state.sqlite edited to hide it (ledger regime stripped, metrics deleted): the signed
    log's config still tells; and the ledger or the metrics rows do alone."""
    ran = _ran(_colluding(1), 2)
    saved, rows = ran.ledger_json(), _rows(ran, 2)
    logged = _log(_colluding(1), rows) if record == "log" else None
    if record != "ledger":
        del saved["regime"]
    metrics = rows if record == "metrics" else []
    with pytest.raises(StoreError, match=r"^privacy.colluders: "):
        restore_ledger(DistributedPrivacy(_colluding(2), planned_rounds=10), saved, metrics,
                       logged=logged)  # fmt: skip


def test_fewer_colluders_on_resume_is_allowed_and_then_the_floor():
    """Rounds accounted against 4 had more noise than a claim against 2 needs; once rounds
    ran against 2, 3 is more than those were accounted for."""
    ran = _ran(_colluding(4), 2)
    rows = _rows(ran, 2)
    resumed = DistributedPrivacy(_colluding(2), planned_rounds=10)
    restore_ledger(resumed, ran.ledger_json(), rows, logged=_log(_colluding(4), rows))
    assert "up to 2 colluding sites" in resumed.guarantee()
    with pytest.raises(StoreError, match=r"^privacy.colluders: .* at most 2"):
        restore_ledger(DistributedPrivacy(_colluding(3), planned_rounds=10),
                       resumed.ledger_json(), rows, logged=None)  # fmt: skip


def test_the_cli_refuses_more_colluders_in_one_line(tmp_path: Path):
    run = tmp_path / "run"
    run_simulation(_config(rounds=1, mode="distributed", colluders=0), run)
    with pytest.raises(StoreError, match=r"^privacy.colluders: this run spent 1 round "):
        run_simulation(_config(rounds=2, mode="distributed", colluders=1), run)
    assert [m["round"] for m in _metrics(run)] == [1]
    assert "up to 1 colluding site" not in (run / "audit.jsonl").read_text()


# -- 2: a distributed ledger is held to the logged events, not only to the logged ε -------------
def test_a_distributed_ledger_of_amplified_events_is_refused():
    """The red team's ledger: one Poisson event (q=0.02, σ=0.4067) for two rounds, which
    composes to at least the logged ε at its δ; distributed DP never accounts sampling."""
    ran = _ran(DISTRIBUTED, 2)
    rows = _honest_rows(DISTRIBUTED, 2)
    crafted = ran.ledger_json()
    crafted["events"] = [
        {"noise_multiplier": 0.4067, "sampling": "poisson", "sample_rate": 0.02, "rounds": 2}
    ]
    assert _oracle([crafted["events"][0]] * 2) >= rows[-1]["epsilon"]
    resumed = DistributedPrivacy(DISTRIBUTED, planned_rounds=10)
    with pytest.raises(StoreError, match="holds rounds sampled 'poisson'"):
        restore_ledger(resumed, crafted, rows, logged=_log(DISTRIBUTED, rows))
    assert resumed.guarantee().startswith("none claimed")


def test_a_distributed_ledger_of_other_known_events_is_refused():
    """One known event of less noise that composes to more than the logged ε now (and less
    than the logged rounds after a few more): the logged events themselves must be there."""
    ran = _ran(DISTRIBUTED, 2)
    rows = _honest_rows(DISTRIBUTED, 2)
    sigma = ran.ledger.history[0][0].noise_multiplier
    crafted = ran.ledger_json()
    crafted["events"] = [{"noise_multiplier": sigma / 1.5, "sampling": "known", "rounds": 1}]
    assert _oracle([crafted["events"][0]]) >= rows[-1]["epsilon"]
    with pytest.raises(StoreError, match=r"lacks rounds the signed audit log recorded \(2 of"):
        restore_ledger(DistributedPrivacy(DISTRIBUTED, planned_rounds=10), crafted, rows,
                       logged=_log(DISTRIBUTED, rows))  # fmt: skip


def test_a_distributed_round_aborted_before_unmasking_is_not_owed():
    """Its entry logs effective_noise_multiplier null: it spent nothing, and the ledger
    rightly lacks its (worst-case) event."""
    ran = _ran(DISTRIBUTED, 2)
    rows = _honest_rows(DISTRIBUTED, 2)
    logged = _log(DISTRIBUTED, rows)
    aborted = {**rows[-1], "round": 3, "effective_noise_multiplier": None}
    aborted["privacy_event"] = {"noise_multiplier": 0.01, "sampling": "known"}
    logged.observe("round_committed", {"round": 3, "model_digest": "m"})
    logged.observe("privacy_spent", aborted)
    assert sum(logged.privacy_events.values()) == 2
    resumed = DistributedPrivacy(DISTRIBUTED, planned_rounds=10)
    restore_ledger(resumed, ran.ledger_json(), rows, logged=logged)
    assert resumed.ledger.rounds == 2


# -- 3: a charge is signed before its ledger is committed ---------------------------------------
def test_a_charge_and_the_commit_that_confirms_it_count_once():
    event = {"noise_multiplier": 1.0, "sampling": "known"}
    entry = {"round": 1, "privacy_event": event, "epsilon": 1.0, "delta": DELTA}
    logged = Commitments()
    logged.observe("privacy_charged", {**entry, "accountant": "pld"})
    assert sum(logged.privacy_events.values()) == 1 and logged.unconfirmed == {
        1: '{"noise_multiplier": 1.0, "sampling": "known"}'
    }
    logged.observe("privacy_spent", {**entry, "accountant": "pld"})
    assert sum(logged.privacy_events.values()) == 1 and not logged.unconfirmed
    # a round charged, the coordinator stopped, then run again: both sums were seen
    logged.observe("privacy_charged", {**entry, "round": 2, "accountant": "pld"})
    logged.observe("privacy_charged", {**entry, "round": 2, "accountant": "pld"})
    logged.observe("privacy_spent", {**entry, "round": 2, "accountant": "pld"})
    assert sum(logged.privacy_events.values()) == 3 and not logged.unconfirmed


def test_a_ledger_lacking_an_unconfirmed_charge_is_charged_again_not_under_reported():
    ran = _ran(DISTRIBUTED, 3)
    rows = _honest_rows(DISTRIBUTED, 3)
    logged = _log(DISTRIBUTED, rows[:2])
    logged.observe("privacy_charged", rows[2])  # round 3 unmasked, then the crash
    saved = _ran(DISTRIBUTED, 2).ledger_json()  # state.sqlite's row 3 deleted
    resumed = DistributedPrivacy(DISTRIBUTED, planned_rounds=10)
    restore_ledger(resumed, saved, rows[:2], logged=logged)
    assert resumed.ledger.rounds == 3
    _assert_pld(resumed.epsilon(), _oracle([r["privacy_event"] for r in rows]))
    assert resumed.epsilon() == pytest.approx(ran.epsilon())
    # a committed round the ledger lacks is still refused, not charged again
    with pytest.raises(StoreError, match="lacks rounds the signed audit log recorded"):
        restore_ledger(DistributedPrivacy(DISTRIBUTED, planned_rounds=10),
                       _ran(DISTRIBUTED, 1).ledger_json(), [], logged=logged)  # fmt: skip


def test_the_charge_is_signed_before_the_ledger_is_committed(tmp_path: Path, monkeypatch):
    from fedops.runtime.store import RunStore

    order: list[str] = []
    real = RunStore.spend_privacy

    def spend(self: RunStore, server_round: int, ledger: Any) -> None:
        order.append(f"store {server_round}")
        real(self, server_round, ledger)

    monkeypatch.setattr(RunStore, "spend_privacy", spend)
    from fedops.runtime.audit.run_trail import RunTrail

    real_sign = RunTrail.privacy_charged

    def sign(self: RunTrail, charge: Any) -> None:
        order.append(f"sign {charge['round']}")
        real_sign(self, charge)

    monkeypatch.setattr(RunTrail, "privacy_charged", sign)
    run_simulation(_config(rounds=2, mode="distributed"), tmp_path / "run")
    # distributed: signed and committed at unmask, committed again (unchanged) after
    assert order == ["sign 1", "store 1", "store 1", "sign 2", "store 2", "store 2"]


def _crash_after_unmask(monkeypatch: pytest.MonkeyPatch, crash_round: int) -> None:
    real = DistributedPrivacy.unmasked

    def unmasked(self: DistributedPrivacy, survivors: int) -> None:
        real(self, survivors)
        if self.ledger.rounds >= crash_round:
            raise KeyboardInterrupt("coordinator killed right after the unmask")

    monkeypatch.setattr(DistributedPrivacy, "unmasked", unmasked)


def test_a_crash_after_unmask_then_a_deleted_ledger_row_still_counts_the_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The red team's crash window: round 3's sum unmasked and charged, the coordinator
    killed before the round committed, state.sqlite's ledger row 3 deleted, resumed."""
    run = tmp_path / "run"
    with monkeypatch.context() as patched:
        _crash_after_unmask(patched, 3)
        with pytest.raises(KeyboardInterrupt):
            run_simulation(_config(rounds=4, mode="distributed"), run)
    with sqlite3.connect(run / "state.sqlite") as db:
        db.execute("DELETE FROM privacy_spent WHERE round = 3")
    db.close()
    run_simulation(_config(rounds=4, mode="distributed"), run)
    rows = _metrics(run)
    assert [m["round"] for m in rows] == [1, 2, 3, 4]
    # five sums were seen: rounds 1, 2, 3 (killed; every site survived, as in its re-run), 3
    # again and 4
    seen = [m["privacy_event"] for m in rows] + [rows[2]["privacy_event"]]
    _assert_pld(rows[-1]["epsilon"], _oracle(seen))
    summary = json.loads((run / "summary.json").read_text())
    assert "over 5 rounds" in summary["privacy"]
    charged = [c["privacy_event"] for c in _entries(run, "privacy_charged")]
    assert sorted(map(_key, charged)) == sorted(map(_key, seen))


def test_a_central_release_before_the_round_commits_survives_a_deleted_ledger_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Central DP: round 2's noised model went to the evaluators, then the coordinator died
    before saving the round, and its ledger row was deleted: the signed charge still counts."""
    from fedops.runtime.store import RunStore

    run = tmp_path / "run"
    cfg = _config(rounds=3, mode="central", release_site_metrics=True)
    real_save = RunStore.save_round

    def crash_in_round_2(self: RunStore, server_round: int, *args: Any, **kwargs: Any) -> None:
        if server_round == 2:
            raise KeyboardInterrupt("coordinator killed")
        real_save(self, server_round, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(RunStore, "save_round", crash_in_round_2)
        with pytest.raises(KeyboardInterrupt):
            run_simulation(cfg, run)
    with sqlite3.connect(run / "state.sqlite") as db:
        db.execute("DELETE FROM privacy_spent WHERE round = 2")
    db.close()
    run_simulation(cfg, run)
    rows = _metrics(run)
    assert [m["round"] for m in rows] == [1, 2, 3]
    released = [m["privacy_event"] for m in rows] + [rows[1]["privacy_event"]]  # round 2 twice
    _assert_pld(rows[-1]["epsilon"], _oracle(released))
    charged = [c["privacy_event"] for c in _entries(run, "privacy_charged")]
    assert sorted(map(_key, charged)) == sorted(map(_key, released))


# -- 5: a claim over rounds of more than one σ or clip says so ---------------------------------
@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_a_resume_with_another_sigma_or_clip_says_they_varied(mode: str):
    before = PrivacySettings(mode=mode, min_survivors=3)
    ran = _ran(before, 2)
    rows = _rows(ran, 2)
    cls = DistributedPrivacy if mode == "distributed" else CentralPrivacy
    sigma = "varied across rounds (now 2): see each round's privacy_event"
    for changed, said in (({"noise_multiplier": 2.0}, sigma),
                          ({"clip_norm": 0.5}, "clip varied across rounds (now 0.5)")):  # fmt: skip
        resumed = cls(PrivacySettings(mode=mode, min_survivors=3, **changed), planned_rounds=10)
        restore_ledger(resumed, ran.ledger_json(), rows)
        sentence = resumed.guarantee()
        assert said in sentence, sentence
        assert "σ=2" not in sentence and "clip 0.5" not in sentence
        # and it stays said after a further resume with the same settings
        again = cls(PrivacySettings(mode=mode, min_survivors=3, **changed), planned_rounds=10)
        restore_ledger(again, resumed.ledger_json(), rows)
        assert said in again.guarantee()
    same = cls(before, planned_rounds=10)
    restore_ledger(same, ran.ledger_json(), rows)
    assert "varied" not in same.guarantee() and "σ=1" in same.guarantee()


# -- 4: local DP with σ=auto: more rounds (or a smaller target) on resume -----------------------
def _local(rounds: int, target: float = 3.0) -> Any:
    from fedops.runtime.privacy.local_dp import LocalPrivacy

    settings = PrivacySettings(mode="local", noise_multiplier=None, target_epsilon=target)
    return LocalPrivacy(settings, planned_rounds=rounds)


def _local_ran(rounds: int, done: int, target: float = 3.0) -> Any:
    dp = _local(rounds, target)
    for _ in range(done):
        dp.spend([])
    return dp


def _site_epsilon(plans: list[tuple[int, int]], target: float = 3.0) -> float:
    """dp_accounting's ε of a site (n=1000, batch 50, one epoch) that ran ``done`` rounds
    at the σ calibrated for ``planned``, for each (planned, done)."""
    import dataclasses

    from fedops.core.privacy.local import noise_for_local_target, steps_per_round
    from fedops.core.training import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in {"epochs": 1, "batch_size": 50}.items() if k in names})
    q, steps = steps_per_round(1000, cfg)
    accountant = PLDAccountant()
    for planned, done in plans:
        sigma = noise_for_local_target(target, DELTA, 1000, cfg, planned)
        event = dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
        accountant.compose(event, steps * done)
    return float(accountant.get_epsilon(DELTA))


def test_local_auto_resumed_with_more_rounds_is_refused_naming_rounds():
    """A site without --max-epsilon calibrates afresh for the new total on top of what it
    spent: 10 + 10 rounds end past the target the claim names (the red team's 3.70 > 3)."""
    assert _site_epsilon([(10, 10), (20, 10)]) > 3.0 * 1.1
    ran = _local_ran(10, 10)
    resumed = _local(20)
    with pytest.raises(StoreError, match=r"^rounds: this run's sites calibrated σ to reach ε=3 "):
        restore_ledger(resumed, ran.ledger_json(), [])
    assert resumed.guarantee().startswith("none claimed")
    with pytest.raises(StoreError, match=r"^privacy.target_epsilon: "):
        restore_ledger(_local(10, target=2.0), ran.ledger_json(), [])


def test_local_auto_resumed_with_fewer_rounds_or_a_larger_target_stays_within_it():
    assert _site_epsilon([(10, 4), (6, 2)]) <= 3.0 * (1 + 1e-6)
    ran = _local_ran(10, 4)
    for resumed in (_local(6), _local(10, target=4.0), _local(10)):
        restore_ledger(resumed, ran.ledger_json(), [])
        assert resumed.rounds == 4 and not resumed.refusal
    changed = _local(6)
    restore_ledger(changed, ran.ledger_json(), [])
    assert "earlier rounds asked for other noise" in changed.guarantee()
    same = _local(10)
    restore_ledger(same, ran.ledger_json(), [])
    assert "earlier rounds" not in same.guarantee()
