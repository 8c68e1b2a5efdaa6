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
