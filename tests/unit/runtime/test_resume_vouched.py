"""A resumed coordinator trusts only the checkpoints its signed audit log committed.

Whoever holds the run directory can edit ``state.sqlite`` and the checkpoint
files, not the audit signing key. Real ``fedops simulate`` runs, tampered with
as the red team did, then resumed in process.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedops.config.hydra_app import simulate_main
from fedops.core.params import digest
from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.audit.log_file import AuditLog
from fedops.runtime.audit.run_trail import RunTrail
from fedops.runtime.checkpoint_file import (
    STATE_PREFIX,
    Checkpoint,
    decode_checkpoint,
    file_sha256,
    write_safetensors,
)
from fedops.runtime.store import RunStore


def _simulate(run_dir: Path, rounds: int, *extra: str) -> int:
    argv = [f"rounds={rounds}", "simulation.num_clients=4", "seed=1", *extra]
    return simulate_main([*argv, f"hydra.run.dir={run_dir}"])


@pytest.fixture(scope="module")
def fedavg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("fedavg") / "run"
    assert _simulate(run_dir, 3) == 0
    return run_dir


@pytest.fixture(scope="module")
def fedadam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("fedadam") / "run"
    assert _simulate(run_dir, 3, "strategy=fedadam") == 0
    return run_dir


def _copy(run_dir: Path, to: Path) -> Path:
    return Path(shutil.copytree(run_dir, to))


def _entries(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]


def _events(entries: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in entries if e["event"] == event]


def _checkpoint(run_dir: Path, server_round: int) -> Path:
    return run_dir / "checkpoints" / f"round-{server_round:05d}.safetensors"


def _params(path: Path) -> dict[str, np.ndarray]:
    return dict(decode_checkpoint(path.read_bytes()).params)


def _write_evil(run_dir: Path, name: str) -> tuple[str, str]:
    """An attacker's model, shaped like the run's, at ``checkpoints/name``: (sha256, digest)."""
    evil = {k: np.full_like(v, 0.5) for k, v in _params(_checkpoint(run_dir, 0)).items()}
    path = run_dir / "checkpoints" / name
    write_safetensors(path, evil, {"order": json.dumps(list(evil)), "strategy": "fedavg"})
    return file_sha256(path), digest(evil)


def _sql(run_dir: Path, statement: str, *args: Any) -> None:
    db = sqlite3.connect(run_dir / "state.sqlite")
    with db:
        db.execute(statement, args)
    db.close()


def _point_round_at(run_dir: Path, server_round: int, name: str, sha: str, model: str) -> None:
    _sql(
        run_dir,
        "UPDATE rounds SET checkpoint = ?, checkpoint_sha256 = ?, model_digest = ? WHERE round = ?",
        name,
        sha,
        model,
        server_round,
    )


def _committed(run_dir: Path, server_round: int) -> str | None:
    store = RunStore(run_dir)
    try:
        return store.model_digest(server_round)
    finally:
        store.close()


def test_every_commit_signs_its_checkpoint_file_and_round_0_is_signed_too(fedavg: Path):
    entries = _entries(fedavg)
    events = [e["event"] for e in entries]
    assert events.index("initial_model") == events.index("run_started") + 1
    (initial,) = _events(entries, "initial_model")
    assert initial == {
        "round": 0,
        "model_digest": _committed(fedavg, 0),
        "checkpoint_sha256": file_sha256(_checkpoint(fedavg, 0)),
    }
    commits = {p["round"]: p for p in _events(entries, "round_committed")}
    assert sorted(commits) == [1, 2, 3]
    for r, payload in commits.items():
        assert payload["checkpoint_sha256"] == file_sha256(_checkpoint(fedavg, r))
        assert payload["model_digest"] == _committed(fedavg, r)


def test_an_honest_resume_continues_from_the_last_round(fedavg: Path, tmp_path: Path):
    run = _copy(fedavg, tmp_path / "run")
    before = len(_entries(run))
    assert _simulate(run, 4) == 0
    new = _entries(run)[before:]
    assert _events(new, "checkpoint_fallback") == []
    assert _events(new, "initial_model") == []
    assert [p["round"] for p in _events(new, "round_committed")] == [4]
    assert _events(new, "run_finished")[-1]["model_digest"] == _committed(run, 4)


def _resume_with_round_3_swapped(
    fedavg: Path, tmp_path: Path, *, rounds: int
) -> tuple[Path, str | None, str, list[dict[str, Any]]]:
    """A copy of the run whose round-3 row names an attacker's model (file, sha256 and digest
    all edited to match), resumed to ``rounds``: the run, round 3's honest digest, the evil
    digest, and the entries the resume signed."""
    run = _copy(fedavg, tmp_path / "run")
    honest_3 = _committed(run, 3)
    sha, evil = _write_evil(run, "evil.safetensors")
    _point_round_at(run, 3, "evil.safetensors", sha, evil)
    before = len(_entries(run))
    assert _simulate(run, rounds) == 0
    return run, honest_3, evil, _entries(run)[before:]


def test_b1_a_swapped_checkpoint_is_neither_exported_nor_signed(fedavg: Path, tmp_path: Path):
    """Nothing left to do (rounds=3): the coordinator used to load the evil round 3, export
    it as model.safetensors and sign a run_finished naming it."""
    run, honest_3, evil, new = _resume_with_round_3_swapped(fedavg, tmp_path, rounds=3)
    assert all(e["payload"].get("model_digest") != evil for e in new)
    (fallback,) = _events(new, "checkpoint_fallback")
    assert fallback["resumed_from"] == 2 and fallback["forgotten"] == [3]
    assert "does not vouch for round 3" in fallback["reason"]
    assert [p["round"] for p in _events(new, "round_committed")] == [3]
    # round 3 again from round 2: the very model the honest run committed (seeded)
    assert _events(new, "run_finished")[-1]["model_digest"] == honest_3 == _committed(run, 3)
    assert digest(_params(run / "model.safetensors")) == honest_3


def test_b2_a_resume_never_trains_from_an_uncommitted_checkpoint(fedavg: Path, tmp_path: Path):
    run, honest_3, evil, new = _resume_with_round_3_swapped(fedavg, tmp_path, rounds=4)
    (fallback,) = _events(new, "checkpoint_fallback")
    assert fallback["resumed_from"] == 2
    assert [p["round"] for p in _events(new, "round_committed")] == [3, 4]
    assert _committed(run, 3) == honest_3  # round 4 trained on round 3 as committed
    assert all(e["payload"].get("model_digest") != evil for e in new)


def test_b2_an_added_round_the_log_never_committed_is_run_again(fedavg: Path, tmp_path: Path):
    run = _copy(fedavg, tmp_path / "run")
    sha, evil = _write_evil(run, "round-00004.safetensors")
    _sql(
        run,
        "INSERT INTO rounds VALUES (4, 0, '{}', 'round-00004.safetensors', ?, ?)",
        sha,
        evil,
    )
    before = len(_entries(run))
    assert _simulate(run, 5) == 0
    new = _entries(run)[before:]
    (fallback,) = _events(new, "checkpoint_fallback")
    assert fallback["resumed_from"] == 3 and fallback["forgotten"] == [4]
    assert "records no commit of round 4" in fallback["reason"]
    assert [p["round"] for p in _events(new, "round_committed")] == [4, 5]
    assert all(e["payload"].get("model_digest") != evil for e in new)
    assert _committed(run, 4) != evil


def _poison_moments(run_dir: Path, server_round: int) -> None:
    """FedAdam's first moments set to 50 (every weight pushed by ~lr a step), the checkpoint
    rewritten and its sha256 in state.sqlite fixed to match."""
    path = _checkpoint(run_dir, server_round)
    raw = decode_checkpoint(path.read_bytes())
    state = {k: np.full_like(v, 50.0) if k.startswith("m") else v for k, v in _moments(raw)}
    assert any(k.startswith("m") for k in state), sorted(state)
    tensors = {**raw.params, **{STATE_PREFIX + k: v for k, v in state.items()}}
    meta = {"order": json.dumps(list(raw.params)), "strategy": raw.strategy}
    write_safetensors(path, tensors, meta)
    sha = file_sha256(path)
    _sql(run_dir, "UPDATE rounds SET checkpoint_sha256 = ? WHERE round = ?", sha, server_round)


def _moments(checkpoint: Checkpoint) -> list[tuple[str, np.ndarray]]:
    return [(k, np.asarray(v)) for k, v in checkpoint.strategy_state.items()]


def test_b3_an_edited_strategy_state_is_not_resumed_from(fedadam: Path, tmp_path: Path):
    clean = _copy(fedadam, tmp_path / "clean")
    poisoned = _copy(fedadam, tmp_path / "poisoned")
    _poison_moments(poisoned, 3)
    before = len(_entries(poisoned))
    assert _simulate(clean, 4, "strategy=fedadam") == 0
    assert _simulate(poisoned, 4, "strategy=fedadam") == 0
    new = _entries(poisoned)[before:]
    (fallback,) = _events(new, "checkpoint_fallback")
    assert fallback["resumed_from"] == 2 and "does not vouch for round 3" in fallback["reason"]
    assert _events(_entries(clean)[before:], "checkpoint_fallback") == []
    # round 3 again from round 2's model and moments: the honest resume's round 4
    assert _committed(poisoned, 4) == _committed(clean, 4)
    redone = decode_checkpoint(_checkpoint(poisoned, 3).read_bytes())
    assert not any(np.any(v == 50.0) for k, v in _moments(redone) if k.startswith("m"))


def test_a_crash_between_the_commit_and_its_log_entry_runs_the_round_again(
    fedavg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The legitimate case of a round in state.sqlite the log never committed."""
    run = tmp_path / "run"
    observe = RunTrail.observe_round

    def dies_before_logging_round_3(self: RunTrail, record: Any) -> None:
        if record.server_round == 3:
            raise KeyboardInterrupt  # the coordinator stops right after the SQLite commit
        observe(self, record)

    monkeypatch.setattr(RunTrail, "observe_round", dies_before_logging_round_3)
    with pytest.raises(KeyboardInterrupt):
        _simulate(run, 3)
    monkeypatch.setattr(RunTrail, "observe_round", observe)
    assert _committed(run, 3) is not None
    entries = _entries(run)
    assert [p["round"] for p in _events(entries, "round_committed")] == [1, 2]
    (finished,) = _events(entries, "run_finished")
    assert finished.get("model_digest") is None  # round 3's model was never committed

    before = len(entries)
    assert _simulate(run, 3) == 0
    new = _entries(run)[before:]
    (fallback,) = _events(new, "checkpoint_fallback")
    assert fallback["resumed_from"] == 2 and fallback["forgotten"] == [3]
    rounds = [p["round"] for p in _events(_entries(run), "round_committed")]
    assert rounds == [1, 2, 3]  # no round committed twice
    assert _events(new, "run_finished")[-1]["model_digest"] == _committed(fedavg, 3)


def test_a_swapped_initial_model_is_refused_and_never_signed(tmp_path: Path):
    """Round 1 and round 0 both swapped: nothing the log vouches for is left to resume from,
    and the failed run's run_finished names no model."""
    run = tmp_path / "run"
    assert _simulate(run, 1) == 0
    sha, evil = _write_evil(run, "evil.safetensors")
    _point_round_at(run, 1, "evil.safetensors", sha, evil)
    _point_round_at(run, 0, "evil.safetensors", sha, evil)
    before = len(_entries(run))
    assert _simulate(run, 2) != 0
    new = _entries(run)[before:]
    assert all(e["payload"].get("model_digest") != evil for e in new)
    assert _events(new, "round_committed") == []
    finished = _events(new, "run_finished")[-1]
    assert finished["status"] == "failed" and finished.get("model_digest") is None


def test_run_finished_names_no_model_the_log_never_committed(tmp_path: Path):
    store = RunStore(tmp_path)
    with AuditLog.open(tmp_path, "coordinator", fsync=False) as audit:
        trail = RunTrail(audit, store)
        trail.initial_model({"round": 0, "model_digest": "m0", "checkpoint_sha256": "s0"})
        trail.run_finished({"status": "completed", "rounds_completed": 0, "model_digest": "m0"})
        trail.run_finished({"status": "completed", "rounds_completed": 1, "model_digest": "m1"})
    store.close()
    first, second = _events(_entries(tmp_path), "run_finished")
    assert first["model_digest"] == "m0"
    assert second["model_digest"] is None and "m1" in second["model_unvouched"]


def test_commitments_survive_pseudonymised_payloads(tmp_path: Path):
    """Central DP hides who took part in round_committed; the digests stay readable."""
    run = tmp_path / "run"
    assert _simulate(run, 2, "privacy=central") == 0
    entries = _entries(run)
    commits = _events(entries, "round_committed")
    assert commits and all(p.get("participants_pseudonymous") for p in commits)
    sha, evil = _write_evil(run, "evil.safetensors")
    _point_round_at(run, 2, "evil.safetensors", sha, evil)
    before = len(entries)
    assert _simulate(run, 2, "privacy=central") == 0
    new = _entries(run)[before:]
    (fallback,) = _events(new, "checkpoint_fallback")
    assert fallback["resumed_from"] == 1
    assert all(e["payload"].get("model_digest") != evil for e in new)


def _line(event: str, payload: dict[str, Any]) -> bytes:
    return json.dumps({"event": event, "payload": payload}).encode()


def test_older_entries_vouch_for_the_model_only_and_a_fallback_forgets_later_rounds():
    found = Commitments.from_lines(
        [
            _line("round_committed", {"round": 1, "model_digest": "m1"}),  # before sha256
            _line("round_committed", {"round": 2, "model_digest": "m2", "checkpoint_sha256": "s2"}),
            _line("round_committed", {"round": 3, "model_digest": "m3", "checkpoint_sha256": "s3"}),
            _line("checkpoint_fallback", {"resumed_from": 2, "forgotten": [3]}),
        ]
    )
    assert found.refusal(0, "any", "any") is None  # no initial_model: as before
    assert found.refusal(1, "whatever", "m1") is None  # the strategy state is unverifiable
    assert found.refusal(1, "whatever", "other") is not None
    assert found.refusal(2, "s2", "m2") is None
    assert found.refusal(2, "edited", "m2") is not None
    assert found.refusal(3, "s3", "m3") is not None  # forgotten by the fallback
    found.observe("initial_model", {"round": 0, "model_digest": "m0", "checkpoint_sha256": "s0"})
    assert found.refusal(0, "s0", "m0") is None and found.refusal(0, "x", "m0") is not None


def test_a_store_rolled_back_past_committed_rounds_is_said_and_recorded(
    fedavg: Path, tmp_path: Path
):
    """Round 3's rows deleted from state.sqlite: the resume starts from round 2, which the
    log vouches for, but never silently: a checkpoint_fallback names the rounds redone."""
    run = _copy(fedavg, tmp_path / "run")
    honest_3 = _committed(run, 3)
    _sql(run, "DELETE FROM rounds WHERE round = 3")
    _sql(run, "DELETE FROM participants WHERE round = 3")
    before = len(_entries(run))
    assert _simulate(run, 3) == 0
    new = _entries(run)[before:]
    (fallback,) = _events(new, "checkpoint_fallback")
    assert fallback["resumed_from"] == 2 and fallback["forgotten"] == [3]
    assert "rolled back" in fallback["reason"]
    assert [p["round"] for p in _events(new, "round_committed")] == [3]
    assert _committed(run, 3) == honest_3


def test_a_privacy_ledger_rolled_back_in_state_sqlite_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Central DP: the ledger put back to round 1's would let the run spend ε again; the
    signed log's privacy_spent entries say how much was spent, and the resume refuses."""
    run = tmp_path / "run"
    assert _simulate(run, 3, "privacy=central") == 0
    spent = [p["epsilon"] for p in _events(_entries(run), "privacy_spent")]
    assert len(spent) == 3 and spent == sorted(spent) and spent[0] < spent[-1]
    honest = _copy(run, tmp_path / "honest")
    assert _simulate(honest, 4, "privacy=central") == 0  # the untouched ledger resumes
    _sql(run, "DELETE FROM privacy_spent WHERE round >= 2")
    capsys.readouterr()
    before = len(_entries(run))
    assert _simulate(run, 4, "privacy=central") != 0
    err = capsys.readouterr().err
    assert "privacy ledger in state.sqlite" in err and "rolled back" in err
    assert _events(_entries(run)[before:], "round_committed") == []


def test_a_resume_at_another_delta_or_accountant_is_compared_like_with_like(tmp_path: Path):
    """δ or the headline accountant changed on resume change ε, not what was spent: the
    ledger is held to each logged ε at that entry's own δ and accountant."""
    run = tmp_path / "run"
    assert _simulate(run, 2, "privacy=central") == 0
    assert _simulate(run, 3, "privacy=central", "privacy.delta=0.01") == 0
    assert _simulate(run, 4, "privacy=central", "privacy.accountant=rdp") == 0
    spent = _events(_entries(run), "privacy_spent")
    assert spent[2]["epsilon"] < spent[1]["epsilon"]  # δ = 0.01 gives a smaller ε
    assert {(p["delta"], p["accountant"]) for p in spent} == {
        (1e-05, "pld"),
        (0.01, "pld"),
        (1e-05, "rdp"),
    }
    _sql(run, "DELETE FROM privacy_spent WHERE round >= 2")  # round 1's ledger put back
    assert _simulate(run, 5, "privacy=central", "privacy.delta=0.01") != 0


@pytest.mark.parametrize("name", [b"A", "../audit.jsonl", "evil.safetensors", 7])
def test_a_row_naming_no_checkpoint_file_is_refused_and_nothing_is_moved(
    fedavg: Path, tmp_path: Path, name: Any
):
    """A BLOB, a path out of checkpoints/ or a name the store never writes: the resume
    falls back without a traceback, and no file outside checkpoints/ is set aside."""
    run = _copy(fedavg, tmp_path / "run")
    honest_3 = _committed(run, 3)
    _sql(run, "UPDATE rounds SET checkpoint = ? WHERE round = 3", name)
    log_bytes = (run / "audit.jsonl").read_bytes()
    assert _simulate(run, 3) == 0
    assert (run / "audit.jsonl").read_bytes().startswith(log_bytes)  # not renamed away
    new = _entries(run)[len(log_bytes.splitlines()) :]
    (fallback,) = _events(new, "checkpoint_fallback")
    assert fallback["resumed_from"] == 2 and _committed(run, 3) == honest_3


def _edit_ledger(run_dir: Path, edit: Any) -> None:
    """Rewrite the newest committed privacy ledger in state.sqlite with ``edit(ledger)``."""
    db = sqlite3.connect(run_dir / "state.sqlite")
    with db:
        server_round, text = db.execute(
            "SELECT round, ledger_json FROM privacy_spent ORDER BY round DESC LIMIT 1"
        ).fetchone()
        ledger = json.loads(text)
        edit(ledger)
        db.execute(
            "UPDATE privacy_spent SET ledger_json = ? WHERE round = ?",
            (json.dumps(ledger), server_round),
        )
    db.close()


CENTRAL = ("privacy=central", "simulation.num_clients=10", "simulation.clients_per_round=3")


@pytest.mark.parametrize(
    "edit",
    [
        # red team: as much ε now as the log's, less after more rounds (σ 0.5, q 0.02)
        lambda led: led.update(
            events=[
                {"noise_multiplier": 0.5, "sampling": "poisson", "sample_rate": 0.02, "rounds": 2}
            ]
        ),
        lambda led: led.update(known_events=[]),  # the ε for readers of the records, dropped
    ],
    ids=["crafted_events", "no_known_events"],
)
def test_a_ledger_of_other_events_than_the_log_recorded_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any
):
    run = tmp_path / "run"
    assert _simulate(run, 3, *CENTRAL) == 0
    _edit_ledger(run, edit)
    capsys.readouterr()
    assert _simulate(run, 5, *CENTRAL) != 0
    err = capsys.readouterr().err
    assert "lacks rounds the signed audit log recorded" in err, err


def test_a_dp_round_spent_then_run_again_after_a_crash_resumes_and_exports_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """Central DP commits round 3's ledger, then dies before logging the round: the resume
    runs round 3 again and its ledger counts both releases, which the log names too (each
    signed as charged, before its ledger was committed). The export's recomputation of the
    ε logged after counts both and must not flag it."""
    from fedops.cli import main

    run = tmp_path / "run"
    observe = RunTrail.observe_round

    def dies_before_logging_round_3(self: RunTrail, record: Any) -> None:
        if record.server_round == 3:
            raise KeyboardInterrupt
        observe(self, record)

    monkeypatch.setattr(RunTrail, "observe_round", dies_before_logging_round_3)
    with pytest.raises(KeyboardInterrupt):
        _simulate(run, 3, *CENTRAL)
    monkeypatch.setattr(RunTrail, "observe_round", observe)
    assert _simulate(run, 4, *CENTRAL) == 0
    capsys.readouterr()
    assert main(["audit", "export", str(run), "--out", str(run / "rep")]) == 0, (
        capsys.readouterr().err
    )
    report = json.loads((run / "rep" / "compliance.json").read_text())
    (headline,) = [r for r in report["privacy_recomputed"] if r["key"] == "epsilon"]
    assert headline["rounds"] == 5 and headline["ok"]  # the first round 3 counted too
    assert headline["logged"] == pytest.approx(headline["recomputed"], rel=1e-9)
    charged = [p["round"] for p in _events(_entries(run), "privacy_charged")]
    assert charged == [1, 2, 3, 3, 4]


def test_an_explicit_noise_multiplier_changed_on_resume_is_used_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Not σ=auto: the configuration's σ is the one the resumed rounds add and account."""
    run = tmp_path / "run"
    assert _simulate(run, 2, *CENTRAL) == 0
    capsys.readouterr()
    assert _simulate(run, 3, *CENTRAL, "privacy.noise_multiplier=1.5") == 0
    said = "".join(capsys.readouterr())  # (Hydra's logging handler, not caplog's)
    assert "resumed with privacy.noise_multiplier=1.5 (the run had 1 so far)" in said
    sigmas = [
        p["privacy_event"]["noise_multiplier"] for p in _events(_entries(run), "privacy_spent")
    ]
    assert sigmas == [1.0, 1.0, 1.5]


def test_rounds_of_other_events_sharing_a_twin_need_its_rounds_summed():
    """Three logged events (other sampling rates) with the same known-participant twin,
    twice each: the known ledger owes the twin six rounds, not two (red team)."""
    from fedops.core.privacy.accountant import PrivacyLedger, RoundEvent, known_event
    from fedops.runtime.privacy.central_dp import CentralPrivacy
    from fedops.runtime.privacy.privacy_settings import PrivacySettings

    events = [
        RoundEvent(noise_multiplier=1.0, sampling="poisson", sample_rate=q) for q in (0.3, 0.5, 0.7)
    ]
    dp = CentralPrivacy(PrivacySettings(mode="central"), planned_rounds=6)
    dp.ledger, dp.known = PrivacyLedger(), PrivacyLedger()
    for event in events:
        dp.ledger.record(event, 2)
    logged = {json.dumps(e.to_json(), sort_keys=True): 2 for e in events}
    dp.known.record(known_event(events[0]), 2)
    assert "4 of the 6 known-participant rounds" in dp.missing_rounds(logged)
    dp.known.record(known_event(events[0]), 4)
    assert dp.missing_rounds(logged) == ""


def test_a_logged_event_is_compared_as_the_ledger_writes_it_back():
    """σ logged as 2 and read back as 2.0 are one event, not a missing round."""
    from fedops.core.privacy.accountant import PrivacyLedger, RoundEvent
    from fedops.runtime.privacy.central_dp import CentralPrivacy
    from fedops.runtime.privacy.privacy_settings import PrivacySettings

    found = Commitments()
    payload = {"epsilon": 1.0, "delta": 1e-5, "accountant": "pld"}
    event = {"noise_multiplier": 2, "sampling": "poisson", "sample_rate": 0.5}
    found.observe("privacy_spent", {**payload, "privacy_event": event})
    dp = CentralPrivacy(PrivacySettings(mode="central"), planned_rounds=1)
    dp.ledger, dp.known = PrivacyLedger(), PrivacyLedger()
    dp.ledger.record(RoundEvent.from_json(event))
    dp.known.record(RoundEvent(noise_multiplier=2.0, sampling="known"))
    assert dp.missing_rounds(found.privacy_events) == ""


def test_a_fifo_in_place_of_the_last_checkpoint_is_passed_over_not_waited_on(
    fedavg: Path, tmp_path: Path
):
    """The store reads a checkpoint as the export does (regular file, as long as its
    header says): a FIFO named round-00003.safetensors used to block the resume forever."""
    import os
    import threading

    run = _copy(fedavg, tmp_path / "run")
    _checkpoint(run, 3).unlink()
    os.mkfifo(_checkpoint(run, 3))
    store, outcome = RunStore(run), []
    reader = threading.Thread(target=lambda: outcome.append(store.newest_intact(3)), daemon=True)
    reader.start()
    reader.join(30)
    store.close()
    assert not reader.is_alive(), "the store blocked on a FIFO"
    ((server_round, _),) = outcome
    assert server_round == 2
