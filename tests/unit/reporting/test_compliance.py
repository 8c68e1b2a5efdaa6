"""fedops.reporting.audit.compliance: every party's log verified, digests cross-checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedops.reporting.audit.audit_commands import audit_export_command, audit_verify_command
from fedops.reporting.audit.compliance import export_compliance
from fedops.reporting.audit.run_logs import NotARunDirectory
from fedops.runtime.audit.log_file import LOG_NAME, PUBLIC_NAME, AuditLog

MODEL = {
    (r, phase): f"{r}{phase[0]}".ljust(64, "0") for r in (1, 2) for phase in ("fit", "evaluate")
}
SITES = {"hospital-a": "node-1", "<b>x</b>": "node-2"}


def _update(site: str, r: int) -> str:
    return f"{site}{r}".encode().hex()[:64].ljust(64, "f")


def _coordinator(run_dir: Path, *, rejected: str | None = None) -> None:
    with AuditLog.open(run_dir, "coordinator", fsync=False) as log:
        for site, node in SITES.items():
            log.record("site_joined", {"site": site, "node_id": node})
        for (r, phase), digest in MODEL.items():
            log.record("model_sent", {"round": r, "phase": phase, "model_digest": digest,
                                      "nodes": list(SITES.values())})  # fmt: skip
            if phase != "fit":
                continue
            for site, node in SITES.items():
                if site == rejected:
                    log.record("update_rejected", {"round": r, "node_id": node, "site": site,
                                                   "reason": "norm too large"})  # fmt: skip
                    continue
                log.record("update_received", {"round": r, "node_id": node, "site": site,
                                               "phase": phase, "digest": _update(site, r),
                                               "num_examples": 10})  # fmt: skip
        log.record("privacy_spent", {"epsilon": 1.5})
        log.record("drift_report", {"psi": 0.05})


def _site(site_dir: Path, site: str, *, wrong_model_round: int | None = None) -> Path:
    node = SITES[site]
    with AuditLog.open(site_dir, site, fsync=False) as log:
        log.record("joined", {"node_id": node})
        for (r, phase), digest in MODEL.items():
            received = "e" * 64 if r == wrong_model_round and phase == "fit" else digest
            log.record("model_received", {"round": r, "phase": phase, "model_digest": received,
                                          "node_id": node})  # fmt: skip
            if phase == "fit":
                sent = {"round": r, "phase": phase, "node_id": node, "digest": _update(site, r)}
                log.record("update_sent", {**sent, "num_examples": 10})
    return site_dir / LOG_NAME


@pytest.fixture
def run(tmp_path):
    """A coordinator run directory with one site inside it and one given explicitly."""
    run_dir = tmp_path / "run"
    _coordinator(run_dir)
    _site(run_dir / "sites" / "a", "hospital-a")  # discovered
    outside = _site(tmp_path / "elsewhere", "<b>x</b>")
    return run_dir, outside


def test_matching_logs_pass(run, capsys):
    run_dir, outside = run
    report = export_compliance(run_dir, site_logs=[outside])
    assert report["ok"], report["mismatches"]
    assert [p["actor"] for p in report["parties"]] == ["coordinator", "<b>x</b>", "hospital-a"]
    assert all(p["ok"] and len(p["fingerprint"]) == 16 for p in report["parties"])
    assert [(r["round"], r["phase"]) for r in report["rounds"]] == [
        (1, "fit"), (1, "evaluate"), (2, "fit"), (2, "evaluate")
    ]  # fmt: skip
    fit = report["rounds"][0]
    assert {s["update_status"] for s in fit["sites"]} == {"match"}
    assert all(s["model_match"] for r in report["rounds"] for s in r["sites"])
    categories = report["events"]["categories"]
    assert categories["joins"] == 4 and categories["privacy"] == 1 and categories["drift"] == 1
    stored = json.loads((run_dir / "compliance.json").read_text())
    assert stored["ok"] and stored["rounds"] == report["rounds"]
    assert audit_export_command(run_dir, None, [outside]) == 0
    assert "OK: 3 logs verified" in capsys.readouterr().out


def test_a_different_model_digest_is_a_mismatch(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _coordinator(run_dir)
    _site(run_dir / "a", "hospital-a")
    _site(run_dir / "b", "<b>x</b>", wrong_model_round=2)
    report = export_compliance(run_dir, tmp_path / "out")
    assert not report["ok"]
    [mismatch] = report["mismatches"]
    assert mismatch["kind"] == "model_digest" and mismatch["round"] == 2
    assert mismatch["site"] == "<b>x</b>" and mismatch["site_digest"] == "e" * 64
    assert (tmp_path / "out" / "compliance.html").exists()
    assert audit_export_command(run_dir, tmp_path / "out", []) == 1
    assert "FAILED: 1 mismatch" in capsys.readouterr().err


def test_html_is_self_contained_and_escaped(run):
    run_dir, outside = run
    export_compliance(run_dir, site_logs=[outside])
    page = (run_dir / "compliance.html").read_text()
    assert "<script" not in page.lower() and "http" not in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_rejected_updates_are_accounted_for(tmp_path):
    run_dir = tmp_path / "run"
    _coordinator(run_dir, rejected="hospital-a")
    _site(run_dir / "a", "hospital-a")
    report = export_compliance(run_dir)
    assert report["ok"], report["mismatches"]
    statuses = {s["update_status"] for r in report["rounds"] for s in r["sites"]}
    assert statuses == {"rejected", None}
    assert report["events"]["categories"]["rejections"] == 2


def test_missing_and_unsent_updates_are_mismatches(tmp_path):
    run_dir = tmp_path / "run"
    _coordinator(run_dir)
    with AuditLog.open(run_dir / "a", "hospital-a", fsync=False) as log:
        log.record("model_received", {"round": 1, "phase": "fit", "model_digest": MODEL[1, "fit"],
                                      "node_id": "node-1"})  # fmt: skip
        log.record("update_sent", {"round": 3, "phase": "fit", "node_id": "node-1",
                                   "digest": "ab" * 32, "num_examples": 1})  # fmt: skip
    kinds = sorted(m["kind"] for m in export_compliance(run_dir)["mismatches"])
    # round 3 never arrived; the coordinator's rounds 1 and 2 from node-1 were never sent
    assert kinds == ["update_missing", "update_not_sent", "update_not_sent"]


def test_a_tampered_site_log_fails_the_report(run):
    run_dir, outside = run
    lines = outside.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"node-2", b"node-9")
    outside.write_bytes(b"\n".join(lines))
    report = export_compliance(run_dir, site_logs=[outside])
    assert not report["ok"]
    bad = [p for p in report["parties"] if not p["ok"]]
    assert len(bad) == 1 and bad[0]["first_bad"] == 3 and "line 3" in bad[0]["reason"]


def test_a_missing_coordinator_log_is_no_run_directory_and_nothing_is_written(tmp_path):
    with pytest.raises(NotARunDirectory, match=r"holds no audit\.jsonl"):
        export_compliance(tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "state.sqlite").write_bytes(b"")  # a run's records, its log gone: a failure
    with pytest.raises(NotARunDirectory, match="log is missing") as lost:
        export_compliance(tmp_path)
    assert lost.value.lost


def test_verify_command(run, capsys):
    run_dir, outside = run
    assert audit_verify_command(run_dir, None) == 0
    err = capsys.readouterr().err
    assert err.startswith("OK: ") and "chain and signatures valid" in err and "first use" in err
    assert audit_verify_command(run_dir / LOG_NAME, run_dir / PUBLIC_NAME) == 0
    assert "pinned key" in capsys.readouterr().err
    assert audit_verify_command(run_dir, outside.parent / PUBLIC_NAME) == 1
    assert capsys.readouterr().err.startswith("FAILED: ")
    assert audit_verify_command(run_dir, run_dir / "no-such.pub") == 1
    assert audit_verify_command(run_dir / "nothing-here.jsonl", None) == 1


def test_masked_updates_with_no_site_digest_are_not_flagged(tmp_path):
    run_dir = tmp_path / "run"
    _coordinator(run_dir)
    with AuditLog.open(run_dir / "a", "hospital-a", fsync=False) as log:
        for r in (1, 2):
            log.record("update_sent", {"round": r, "phase": "fit", "node_id": "node-1",
                                       "digest": "", "num_examples": 10})  # fmt: skip
    report = export_compliance(run_dir)
    assert report["ok"], report["mismatches"]


@pytest.mark.parametrize("committed_before_crash", [False, True])
def test_an_update_logged_just_before_a_crash_is_flagged_only_if_its_round_was_committed(
    tmp_path, committed_before_crash
):
    """The coordinator logs an upload, dies before acknowledging it, and redoes the round.

    The site never got the acknowledgement, so its log has no ``update_sent`` for that
    upload (it retrains and sends again under its new node id). The early upload reached
    no model unless its round was committed before the crash, which is what is flagged.
    """
    run_dir, digest = tmp_path / "run", "cd" * 32
    with AuditLog.open(run_dir, "coordinator", fsync=False) as log:
        log.record("update_received", {"round": 3, "node_id": "node-1", "site": "hospital-a",
                                       "phase": "fit", "digest": "ab" * 32,
                                       "num_examples": 5})  # fmt: skip
        if committed_before_crash:
            log.record("round_committed", {"round": 3})
    with AuditLog.open(run_dir, "coordinator", fsync=False) as log:  # restarted: log_reopened
        log.record("update_received", {"round": 3, "node_id": "node-9", "site": "hospital-a",
                                       "phase": "fit", "digest": digest,
                                       "num_examples": 5})  # fmt: skip
        log.record("round_committed", {"round": 3})
    with AuditLog.open(run_dir / "a", "hospital-a", fsync=False) as log:
        log.record("joined", {"node_id": "node-1"})
        log.record("joined", {"node_id": "node-9"})
        log.record("update_sent", {"round": 3, "phase": "fit", "node_id": "node-9",
                                   "digest": digest, "num_examples": 5})  # fmt: skip
        # a site log that mentions node-1 at all, so its updates are cross-checked
        log.record("model_received", {"round": 3, "phase": "fit", "model_digest": "0" * 64,
                                      "node_id": "node-1"})  # fmt: skip
    report = export_compliance(run_dir)
    kinds = [m["kind"] for m in report["mismatches"] if m["kind"].startswith("update")]
    if committed_before_crash:
        assert kinds == ["update_not_sent"] and report["abandoned_updates"] == []
    else:
        assert kinds == []
        assert report["abandoned_updates"] == [{"round": 3, "phase": "fit", "node_id": "node-1"}]
