"""``fedops audit export`` checks the run directory's model files against the signed log.

Threat model: the operator holding the run directory (not the coordinator's signing key)
hands on a model file other than the one the run committed: a retrained or backdoored
model, an earlier round's (stale) model, a checkpoint edited in place, or a file carrying
extra tensors that a non-strict ``load_state_dict`` would take. The logs themselves stay
intact, so every check of the logs passes; the export must still fail and name the file,
and it must not fail an honest run, a run resumed across the v1.4 digest change, or a
checkpoint no log vouches for (a crash between the checkpoint and its log entry).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedops.cli import main
from fedops.config.hydra_app import simulate_main
from fedops.core.params import digest, digest_header, le_bytes, specs_of
from fedops.runtime.audit.model_files import check_model_files
from fedops.runtime.checkpoint_file import read_checkpoint, write_safetensors


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `fedops simulate` run of 3 rounds (4 clients), audit log and all."""
    work = tmp_path_factory.mktemp("sim")
    run_dir = work / "run"
    argv = ["rounds=3", "simulation.num_clients=4", "seed=1", f"hydra.run.dir={run_dir}"]
    assert simulate_main(argv) == 0
    return run_dir


@pytest.fixture
def run(simulated: Path, tmp_path: Path) -> Path:
    """A copy of the simulated run for one test to tamper with."""
    return Path(shutil.copytree(simulated, tmp_path / "run"))


def _export(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, dict]:
    code = main(["audit", "export", str(run_dir), "--out", str(run_dir / "report")])
    _, err = capsys.readouterr()
    report = json.loads((run_dir / "report" / "compliance.json").read_text())
    return code, err, report


def _entries(run_dir: Path) -> list[dict]:
    lines = (run_dir / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _checkpoint(run_dir: Path, server_round: int) -> Path:
    return run_dir / "checkpoints" / f"round-{server_round:05d}.safetensors"


def test_an_honest_run_exports_with_every_model_file_matching(run, capsys):
    code, err, report = _export(run, capsys)
    assert code == 0, err
    rows = {r["file"]: r for r in report["model_files"]}
    kept = {f"checkpoints/{p.name}" for p in (run / "checkpoints").glob("*.safetensors")}
    assert len(kept) >= 3 and set(rows) == {"model.safetensors", *kept}
    # round 0 (the initial model) is checked against the log's initial_model entry
    assert "checkpoints/round-00000.safetensors" in rows
    assert {r["status"] for r in rows.values()} == {"ok"}
    final = json.loads((run / "summary.json").read_text())["model_digest"]
    assert rows["model.safetensors"]["digest"] == final
    assert "Model files" in (run / "report" / "compliance.html").read_text()


def test_a_log_that_does_not_verify_fails_alone_its_model_files_left_unchecked(run, capsys):
    """Only the verified prefix of a tampered log is read: its "final" model would be an
    early round's, and every honest model file would be reported as the wrong model."""
    lines = (run / "audit.jsonl").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if '"round_committed"' in line)
    entry = json.loads(lines[first])
    entry["payload"]["round"] = 99
    lines[first] = json.dumps(entry)
    (run / "audit.jsonl").write_text("\n".join(lines) + "\n")
    code, err, report = _export(run, capsys)
    assert code == 1 and "FAILED: 1 of 1 logs do not verify" in err
    assert report["mismatches"] == [] and report["model_files"] is None
    assert "holds a model no round committed" not in err
    assert "model files: not checked: the coordinator's log does not verify" in err
    assert "Not checked: the coordinator" in (run / "report" / "compliance.html").read_text()


def test_a_retrained_model_file_fails_the_export(run, capsys):
    params = read_checkpoint(run / "model.safetensors")
    params = {n: (a + np.float32(1e-3)).astype(a.dtype) for n, a in params.items()}
    write_safetensors(run / "model.safetensors", params, {"order": json.dumps(list(params))})
    code, err, report = _export(run, capsys)
    assert code == 1
    assert "model.safetensors holds a model no round committed" in err
    assert [m["kind"] for m in report["mismatches"]] == ["model_file"]


def test_an_earlier_rounds_model_handed_on_as_final_is_named_as_that_round(run, capsys):
    params = read_checkpoint(_checkpoint(run, 2))
    write_safetensors(run / "model.safetensors", params, {"order": json.dumps(list(params))})
    code, err, report = _export(run, capsys)
    assert code == 1
    assert "model.safetensors holds round 2's model" in err and "not the final" in err
    row = next(r for r in report["model_files"] if r["file"] == "model.safetensors")
    assert row["status"] == "mismatch" and row["holds_round"] == 2


def test_a_checkpoint_swapped_for_another_rounds_fails(run, capsys):
    shutil.copyfile(_checkpoint(run, 1), _checkpoint(run, 3))
    code, err, _ = _export(run, capsys)
    assert code == 1
    assert "checkpoints/round-00003.safetensors holds round 1's model" in err


def test_a_checkpoint_edited_in_place_fails_and_is_never_read_as_another(run, capsys):
    path = _checkpoint(run, 2)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # one bit of the last tensor's last byte
    path.write_bytes(bytes(data))
    code, err, report = _export(run, capsys)
    assert code == 1 and "round-00002.safetensors holds a model no round committed" in err
    row = next(r for r in report["model_files"] if r["file"].endswith("round-00002.safetensors"))
    assert row["status"] == "mismatch" and row["holds_round"] is None


def test_extra_tensors_beside_the_model_fail_even_though_the_model_matches(run, capsys):
    params = read_checkpoint(run / "model.safetensors")
    extra = {**params, "backdoor.trigger": np.ones(3, dtype=np.float32)}
    write_safetensors(run / "model.safetensors", extra, {"order": json.dumps(list(params))})
    code, err, _ = _export(run, capsys)
    assert code == 1
    assert "holds tensors outside its model and strategy state: 'backdoor.trigger'" in err


def test_a_file_that_is_no_model_fails_in_one_line_without_a_traceback(run, capsys):
    (run / "model.safetensors").write_bytes(b"\x00" * 7)
    code, err, _ = _export(run, capsys)
    assert code == 1 and "Traceback" not in err
    assert "model.safetensors" in err and "is not a model file fedops reads" in err


def test_a_checkpoint_no_round_committed_is_listed_not_failed(run, capsys):
    shutil.copyfile(_checkpoint(run, 3), _checkpoint(run, 4))
    code, err, report = _export(run, capsys)
    assert code == 0, err
    row = next(r for r in report["model_files"] if r["file"].endswith("round-00004.safetensors"))
    assert row["status"] == "unlogged"


def _write(path: Path, params: dict, **state: np.ndarray) -> str:
    """Write a checkpoint-like file; its SHA-256."""
    tensors = {**params, **{f"strategy_state/{k}": v for k, v in state.items()}}
    write_safetensors(path, tensors, {"order": json.dumps(list(params))})
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _committed(server_round: int, params: dict, sha: str = "") -> dict:
    payload = {"round": server_round, "model_digest": digest(params)}
    return {"event": "round_committed", "payload": {**payload, "checkpoint_sha256": sha}}


W1, W2 = {"w": np.zeros(4, dtype=np.float32)}, {"w": np.arange(4, dtype=np.float32)}


def test_a_run_not_finished_since_its_last_commit_keeps_its_last_finishs_model(tmp_path):
    """Finished at round 1, resumed, crashed after committing round 2: the model file is
    round 1's, from that finish, and nothing else: not round 0's initial model, which a red
    team copied over it, nor round 2's."""
    w0 = {"w": np.ones(4, dtype=np.float32)}
    entries = [
        {"event": "initial_model", "payload": {"round": 0, "model_digest": digest(w0)}},
        _committed(1, W1),
        {"event": "run_finished", "payload": {"model_digest": digest(W1)}},
        _committed(2, W2),
    ]
    _write(tmp_path / "model.safetensors", W1)
    check = check_model_files(tmp_path, entries)
    assert [r["status"] for r in check.rows] == ["ok"] and not check.mismatches
    for stale, held in ((w0, 0), (W2, 2)):
        _write(tmp_path / "model.safetensors", stale)
        check = check_model_files(tmp_path, entries)
        assert len(check.mismatches) == 1 and check.rows[0]["holds_round"] == held


def test_run_finished_must_name_the_last_committed_rounds_model(tmp_path):
    """A store edited under a restarted coordinator must not get another model signed as
    final and pass: the log's own run_finished is held to its last round_committed."""
    entries = [
        _committed(1, W1),
        _committed(2, W2),
        {"event": "run_finished", "payload": {"model_digest": digest(W1)}},
    ]
    _write(tmp_path / "model.safetensors", W1)
    check = check_model_files(tmp_path, entries)
    messages = [m["message"] for m in check.mismatches]
    assert any(m.startswith("run_finished names the model") for m in messages), messages
    assert any("holds round 1's model" in m and "not the final" in m for m in messages)


def test_a_checkpoint_whose_state_differs_from_the_committed_file_fails(tmp_path):
    """The model matches, the strategy state (FedAdam's moments, say) was edited."""
    (tmp_path / "checkpoints").mkdir()
    path = _checkpoint(tmp_path, 1)
    sha = _write(path, W2, m=np.zeros(4, dtype=np.float32))
    entries = [_committed(1, W2, sha)]
    assert [r["status"] for r in check_model_files(tmp_path, entries).rows] == ["ok"]
    _write(path, W2, m=np.full(4, 50.0, dtype=np.float32))
    (row,) = check_model_files(tmp_path, entries).rows
    assert row["status"] == "mismatch" and "strategy state" in row["message"]


def test_round_zero_is_checked_against_its_initial_model_entry(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    sha = _write(_checkpoint(tmp_path, 0), W1)
    entry = {"event": "initial_model", "payload": {"round": 0, "model_digest": digest(W1)}}
    entries = [{**entry, "payload": {**entry["payload"], "checkpoint_sha256": sha}}]
    assert [r["status"] for r in check_model_files(tmp_path, entries).rows] == ["ok"]
    _write(_checkpoint(tmp_path, 0), W2)
    assert len(check_model_files(tmp_path, entries).mismatches) == 1


def test_files_the_store_never_names_are_listed_unlogged_and_not_counted(run, capsys):
    for odd in ("round-3.safetensors", "round-000003.safetensors", "evil.safetensors"):
        shutil.copyfile(_checkpoint(run, 3), run / "checkpoints" / odd)
    code = main(["audit", "export", str(run), "--out", str(run / "report")])
    out = capsys.readouterr().out
    report = json.loads((run / "report" / "compliance.json").read_text())
    assert code == 0, out
    unlogged = {r["file"] for r in report["model_files"] if r["status"] == "unlogged"}
    assert {"checkpoints/round-3.safetensors", "checkpoints/evil.safetensors"} <= unlogged
    assert "checkpoints/round-000003.safetensors" in unlogged
    ok = sum(r["status"] == "ok" for r in report["model_files"])
    assert 0 < ok < len(report["model_files"])
    assert f", {ok} model files match the log, no mismatches" in out


def test_a_missing_final_model_is_listed(run, capsys):
    (run / "model.safetensors").unlink()
    code, err, report = _export(run, capsys)
    assert code == 0, err
    row = next(r for r in report["model_files"] if r["file"] == "model.safetensors")
    assert row["status"] == "missing"


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "sparse", "directory"])
def test_a_file_that_would_hang_or_fill_memory_is_refused_without_reading_it(run, capsys, kind):
    model = run / "model.safetensors"
    model.unlink()
    if kind == "fifo":
        os.mkfifo(model)
    elif kind == "dev_zero":
        model.symlink_to("/dev/zero")
    elif kind == "directory":
        model.mkdir()
    else:  # a valid small header, then 8 GiB of holes
        good = _checkpoint(run, 3).read_bytes()
        with model.open("wb") as f:
            f.write(good)
            f.truncate(8 << 30)
    code, err, _ = _export(run, capsys)
    assert code == 1 and "Traceback" not in err and "model.safetensors" in err


def test_a_run_resumed_across_the_digest_change_checks_in_each_rounds_algorithm(tmp_path):
    """Rounds committed before fedops.v1.4 logged bare SHA-256 digests."""
    old, new = {"w": np.ones(3, dtype=np.float32)}, {"w": np.full(3, 2.0, dtype=np.float32)}
    h = hashlib.sha256(digest_header(specs_of(old)))
    h.update(le_bytes(old["w"]))
    entries = [
        {"event": "round_committed", "payload": {"round": 1, "model_digest": h.hexdigest()}},
        {"event": "round_committed", "payload": {"round": 2, "model_digest": digest(new)}},
        {"event": "run_finished", "payload": {"model_digest": digest(new)}},
    ]
    (tmp_path / "checkpoints").mkdir()
    write_safetensors(_checkpoint(tmp_path, 1), old, {"order": '["w"]'})
    write_safetensors(_checkpoint(tmp_path, 2), new, {"order": '["w"]'})
    write_safetensors(tmp_path / "model.safetensors", new, {"order": '["w"]'})
    check = check_model_files(tmp_path, entries)
    assert [r["status"] for r in check.rows] == ["ok", "ok", "ok"] and not check.mismatches
    # the old round's model handed on as final is found in SHA-256 and named
    write_safetensors(tmp_path / "model.safetensors", old, {"order": '["w"]'})
    check = check_model_files(tmp_path, entries)
    assert check.rows[-1]["holds_round"] == 1


@pytest.mark.parametrize("recorded", [7, "", "md5:abc", "blake3:" + "Z" * 64, None])
def test_a_final_digest_it_cannot_read_in_the_log_never_passes(tmp_path, recorded):
    entries = [
        _committed(1, W2),
        {"event": "run_finished", "payload": {"model_digest": recorded}},
    ]
    _write(tmp_path / "model.safetensors", W2)
    check = check_model_files(tmp_path, entries)
    if isinstance(recorded, str) and recorded:  # it names no model the log committed
        assert "audit.jsonl" in [m["file"] for m in check.mismatches]
    else:  # it names none: the file is held to the last committed round alone
        assert not check.mismatches and check.rows[-1]["status"] == "ok"


def test_a_final_model_the_coordinator_would_not_vouch_for_fails(tmp_path):
    """Its store named a final model the log never committed: it signed none, said why."""
    entries = [
        _committed(1, W2),
        {
            "event": "run_finished",
            "payload": {"model_digest": None, "model_unvouched": "state.sqlite names another"},
        },
    ]
    _write(tmp_path / "model.safetensors", W2)
    check = check_model_files(tmp_path, entries)
    assert [m["file"] for m in check.mismatches] == ["audit.jsonl"]
    assert (
        "did not vouch for its final model: 'state.sqlite names another'"
        in (check.mismatches[0]["message"])
    )


def test_a_round_forgotten_by_a_fallback_no_longer_vouches_for_its_old_file(tmp_path):
    """After a checkpoint_fallback to round 1, round 2's old entry vouches for nothing."""
    (tmp_path / "checkpoints").mkdir()
    _write(_checkpoint(tmp_path, 2), W2)
    entries = [
        _committed(1, W1),
        _committed(2, W2),
        {"event": "checkpoint_fallback", "payload": {"resumed_from": 1, "forgotten": [2]}},
    ]
    (row,) = check_model_files(tmp_path, entries).rows
    assert row["status"] == "unlogged"
