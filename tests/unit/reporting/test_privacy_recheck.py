"""``audit export`` recomputes the ε a coordinator's log reports from the events it logged.

Threat model: a coordinator (a modified build, or one resumed from a rolled-back ledger)
reports in its signed ``privacy_spent`` entries less ε than the round events it logged
compose to. The auditor must catch it from the log alone, at each entry's own δ and
accountant, for the headline ε and the known-participant ε; and must not flag an honest
log: distributed DP's rounds that unmasked nothing, local DP (no event), resumes at
another δ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedops.cli import main
from fedops.config.hydra_app import simulate_main
from fedops.core.privacy.accountant import PrivacyLedger, RoundEvent, epsilon, known_event
from fedops.reporting.audit.privacy_recheck import recheck_privacy

POISSON = RoundEvent(noise_multiplier=1.0, sampling="poisson", sample_rate=0.3)
STRONGER = RoundEvent(noise_multiplier=2.0, sampling="poisson", sample_rate=0.3)


def _eps(events: list[RoundEvent], delta: float = 1e-5, accountant: str = "pld") -> float:
    ledger = PrivacyLedger()
    for event in events:
        ledger.record(event)
    return epsilon(ledger.history, delta, accountant)


def _spent(server_round: int, event: RoundEvent, eps: float, **extra: object) -> dict:
    payload = {"round": server_round, "privacy_event": event.to_json(), "epsilon": eps}
    return {
        "event": "privacy_spent",
        "payload": {"delta": 1e-5, "accountant": "pld", **payload, **extra},
    }


def test_an_honest_log_recomputes_to_what_it_reports():
    events = [POISSON, POISSON, STRONGER]
    entries = [_spent(r + 1, e, _eps(events[: r + 1])) for r, e in enumerate(events)]
    rows, mismatches = recheck_privacy(entries)
    assert not mismatches
    assert [(r["key"], r["rounds"], r["ok"]) for r in rows] == [("epsilon", 3, True)]


def test_a_log_reporting_less_than_its_events_compose_to_is_a_mismatch():
    events = [POISSON, POISSON, POISSON]
    entries = [_spent(r + 1, e, _eps(events[: r + 1])) for r, e in enumerate(events)]
    entries[-1]["payload"]["epsilon"] = _eps(events[:2])  # round 3 reported as round 2's ε
    _, mismatches = recheck_privacy(entries)
    assert [m["kind"] for m in mismatches] == ["privacy_epsilon"]
    assert "round 3's epsilon" in mismatches[0]["message"]


def test_the_known_participant_epsilon_is_recomputed_from_each_events_twin():
    events = [POISSON, POISSON]
    known = [known_event(e) for e in events]
    entries = [
        _spent(r + 1, e, _eps(events[: r + 1]), epsilon_known_participants=_eps(known[: r + 1]))
        for r, e in enumerate(events)
    ]
    assert not recheck_privacy(entries)[1]
    entries[-1]["payload"]["epsilon_known_participants"] = _eps(events)  # the amplified one
    (mismatch,) = recheck_privacy(entries)[1]
    assert "epsilon_known_participants" in mismatch["message"]


def test_a_distributed_round_that_unmasked_nothing_is_not_counted():
    spent = _eps([POISSON])
    entries = [
        _spent(1, POISSON, spent, effective_noise_multiplier=1.0),
        _spent(2, POISSON, spent, effective_noise_multiplier=None),  # aborted: nothing spent
    ]
    assert not recheck_privacy(entries)[1]


def test_each_delta_and_accountant_is_checked_at_its_own_newest_entry():
    events = [POISSON, POISSON, POISSON]
    entries = [_spent(1, POISSON, _eps(events[:1])), _spent(2, POISSON, _eps(events[:2]))]
    entries.append(_spent(3, POISSON, _eps(events, 0.01), delta=0.01))  # resumed at δ = 0.01
    rows, mismatches = recheck_privacy(entries)
    assert not mismatches and sorted((r["delta"], r["rounds"]) for r in rows) == [
        (1e-5, 2),
        (0.01, 3),
    ]


@pytest.mark.parametrize("event", [None, {"sampling": "poisson"}, "not an event"])
def test_entries_without_a_usable_event_are_not_checked(event: object):
    entry = {"event": "privacy_spent", "payload": {"round": 1, "epsilon": 0.1, "delta": 1e-5,
             "accountant": "pld", "privacy_event": event}}  # fmt: skip
    assert recheck_privacy([entry]) == ([], [])


def test_a_real_central_dp_run_exports_with_its_epsilon_recomputed(tmp_path: Path, capsys):
    run = tmp_path / "run"
    argv = ["rounds=3", "privacy=central", "simulation.num_clients=10"]
    assert simulate_main([*argv, "simulation.clients_per_round=3", f"hydra.run.dir={run}"]) == 0
    assert main(["audit", "export", str(run), "--out", str(run / "rep")]) == 0
    report = json.loads((run / "rep" / "compliance.json").read_text())
    keys = {(r["key"], r["rounds"], r["ok"]) for r in report["privacy_recomputed"]}
    assert keys == {("epsilon", 3, True), ("epsilon_known_participants", 3, True)}
    assert (
        "ε recomputed from the logged round events" in (run / "rep" / "compliance.html").read_text()
    )


# -- charges: a round spent before it was committed (red team 2026-12, hunt_dp2) ---------------
def _charged(server_round: int, event: RoundEvent, eps: float, **extra: object) -> dict:
    entry = _spent(server_round, event, eps, **extra)
    return {**entry, "event": "privacy_charged"}


def test_a_charge_confirmed_by_its_commit_is_counted_once():
    events = [POISSON, POISSON]
    entries = []
    for r, event in enumerate(events, start=1):
        eps = _eps(events[:r])
        entries += [_charged(r, event, eps), _spent(r, event, eps)]
    rows, mismatches = recheck_privacy(entries)
    assert not mismatches and [(r["rounds"], r["ok"]) for r in rows] == [(2, True)]


def test_a_charged_round_the_resumed_run_forgot_is_a_mismatch():
    """Round 2 charged, the coordinator killed before committing it, its ledger row
    deleted: the resumed run reports round 2 again as if round 2's first sum never was."""
    entries = [_charged(1, POISSON, _eps([POISSON])), _spent(1, POISSON, _eps([POISSON]))]
    entries.append(_charged(2, POISSON, _eps([POISSON] * 2)))  # then the crash
    forgot = _eps([POISSON] * 2)  # the re-run of round 2 over a ledger of one round
    entries += [_charged(2, POISSON, forgot), _spent(2, POISSON, forgot)]
    (mismatch,) = recheck_privacy(entries)[1]
    assert mismatch["kind"] == "privacy_epsilon" and "3 round events" in mismatch["message"]
    honest = _eps([POISSON] * 3)
    entries[-2:] = [_charged(2, POISSON, honest), _spent(2, POISSON, honest)]
    assert not recheck_privacy(entries)[1]


# -- what the rounds claim may not change within a run ----------------------------------------
KNOWN = RoundEvent(noise_multiplier=1.0, sampling="known")


def _distributed(server_round: int, colluders: int, eps: float) -> dict:
    sites = f"up to {colluders} colluding site{'s' if colluders != 1 else ''}"
    return _spent(
        server_round, KNOWN, eps,
        privacy_mechanism=f"known participation (no amplification by sampling), add/remove-one "
        f"client adjacency, {sites}, PLD accountant",
        privacy_holds_against=f"the coordinator, {sites}, and anyone who sees the released "
        "models or the run's records",
    )  # fmt: skip


def test_a_resume_against_more_colluders_is_a_claim_mismatch():
    """The red team's run: 2 rounds against 0 colluders, resumed against 4 (its ε is the
    composition of the logged events, so the ε check alone passes it)."""
    entries = [_distributed(r, 0 if r <= 2 else 4, _eps([KNOWN] * r)) for r in range(1, 5)]
    mismatches = recheck_privacy(entries)[1]
    assert [m["kind"] for m in mismatches] == ["privacy_claim"]
    assert (
        "up to 4 colluding sites, but round 1's noise was accounted against up to 0"
        in (mismatches[0]["message"])
    )


def test_fewer_colluders_another_accountant_or_sampling_rate_is_no_mismatch():
    entries = [_distributed(r, 4 if r <= 2 else 2, _eps([KNOWN] * r)) for r in range(1, 5)]
    assert not recheck_privacy(entries)[1]
    central = "secret Poisson sampling of clients{}, add/remove-one client adjacency, {} accountant"
    against = "anyone who sees only the released models"
    rows = [(" (q=0.3 of 10)", "PLD"), ("", "PLD"), ("", "RDP")]
    entries = [
        _spent(r, POISSON, _eps([POISSON] * r, accountant="pld"),
               privacy_mechanism=central.format(*row), privacy_holds_against=against)
        for r, row in enumerate(rows, start=1)
    ]  # fmt: skip
    assert not recheck_privacy(entries)[1]


def test_a_change_of_mechanism_within_a_run_is_a_claim_mismatch():
    central = "secret Poisson sampling of clients, add/remove-one client adjacency, PLD accountant"
    published = "participants published (no amplification by sampling), " + central[36:]
    entries = [
        _spent(1, POISSON, _eps([POISSON]), privacy_mechanism=central,
               privacy_holds_against="anyone who sees only the released models"),
        _spent(2, POISSON, _eps([POISSON] * 2), privacy_mechanism=published,
               privacy_holds_against="anyone, the coordinator excepted"),
    ]  # fmt: skip
    (mismatch,) = recheck_privacy(entries)[1]
    assert mismatch["kind"] == "privacy_claim"
    assert "round 2's privacy_spent claims 'participants published" in mismatch["message"]
    assert "round 1's claimed 'secret Poisson sampling" in mismatch["message"]
