"""The compliance export checks each party's heads as the other side anchored them.

Threat model (issue 17, finding 3, and its red team): whoever holds a site's run directory
and key may rewrite that site's log (fewer entries, another actor name, other node ids);
a coordinator's operator may do the same to its log. Every such rewrite must fail the
export, and anchors the export cannot check must be listed, never silently passed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fedops.core.audit.pseudonyms import Pseudonyms
from fedops.reporting.audit.compliance import export_compliance
from fedops.runtime.audit.log_file import LOG_NAME, PSEUDONYM_KEY_NAME, AuditLog

NODE = "node-0001-abcdef"


def _site(site_dir: Path, actor: str = "site-a", node: str = NODE, rounds: int = 3) -> list[dict]:
    with AuditLog.open(site_dir, actor, fsync=False) as log:
        for r in range(1, rounds + 1):
            log.record("model_received", {"round": r, "phase": "fit", "model_digest": "a" * 64,
                                          "node_id": node})  # fmt: skip
            log.record("update_sent", {"round": r, "phase": "fit", "node_id": node,
                                       "digest": "", "num_examples": 1})  # fmt: skip
    return [json.loads(x) for x in (site_dir / LOG_NAME).read_text().splitlines()]


def _coordinator(run_dir: Path, site_entries: list[dict], *, sealed: bool = False) -> None:
    """A coordinator log that anchored the site's head after each of its updates."""
    log = AuditLog.open(run_dir, "coordinator", fsync=False)
    log.record("run_started", {"run_id": "run-1"})
    if sealed:
        key = os.urandom(32)
        (run_dir / PSEUDONYM_KEY_NAME).write_bytes(key)
        log.redact = Pseudonyms(key, "run-1")
    log.record("node_joined", {"node_id": NODE, "site": "site-a"})
    sent = [e for e in site_entries if e["event"] == "update_sent"]
    for e in sent:
        log.record("model_sent", {"round": e["payload"]["round"], "phase": "fit",
                                  "model_digest": "a" * 64, "nodes": [NODE]})  # fmt: skip
        head = {"seq": e["seq"] - 1, "hash": site_entries[e["seq"] - 1]["hash"]}
        log.record("update_received", {"round": e["payload"]["round"], "node_id": NODE,
                                       "site": "site-a", "phase": "fit", "digest": "",
                                       "num_examples": 1, "site_head": head})  # fmt: skip
    log.close()


def _export(run_dir: Path, site_dir: Path) -> dict:
    return export_compliance(run_dir, run_dir / "out", [site_dir / LOG_NAME])


def _rewrite(site_dir: Path, **kw) -> None:
    """The site's operator rewrites its whole log with its own key (kept), shorter."""
    for name in (LOG_NAME, "audit.head"):
        (site_dir / name).unlink()
    _site(site_dir, rounds=1, **kw)


def test_an_honest_pair_of_logs_passes_with_every_anchor_checked(tmp_path):
    entries = _site(tmp_path / "site")
    _coordinator(tmp_path / "run", entries)
    report = _export(tmp_path / "run", tmp_path / "site")
    assert report["ok"], report["mismatches"]
    assert report["anchors_checked"] == 3 and report["anchors_unchecked"] == []


def test_a_rewritten_site_log_fails_whatever_it_calls_itself(tmp_path):
    for i, actor in enumerate(("site-a", "site-a.", "someone-else")):
        site = tmp_path / f"site{i}"
        _coordinator(tmp_path / f"run{i}", _site(site))
        _rewrite(site, actor=actor)  # the red team renamed the actor: anchors were skipped
        report = _export(tmp_path / f"run{i}", site)
        lost = [m for m in report["mismatches"] if m["kind"] == "anchor_missing"]
        assert lost and not report["ok"], (actor, report["mismatches"])


def test_a_site_log_rewritten_under_other_node_ids_fails(tmp_path):
    _coordinator(tmp_path / "run", _site(tmp_path / "site"))
    _rewrite(tmp_path / "site", node="node-9999-ffffff")
    report = _export(tmp_path / "run", tmp_path / "site")
    assert not report["ok"]
    assert any("names no node" in m["message"] for m in report["mismatches"])
    assert len(report["anchors_unchecked"]) == 3  # listed, not passed


def test_sealed_heads_under_central_dp_are_checked_with_the_key_and_listed_without(tmp_path):
    run = tmp_path / "run"
    entries = _site(tmp_path / "site")
    _coordinator(run, entries, sealed=True)
    logged = [json.loads(x) for x in (run / LOG_NAME).read_text().splitlines()]
    heads = [e["payload"]["site_head"] for e in logged if e["event"] == "update_received"]
    assert heads and all(set(h) == {"mac"} for h in heads)  # sealed: no seq to link rounds by
    assert _export(run, tmp_path / "site")["anchors_checked"] == 3
    _rewrite(tmp_path / "site")
    assert not _export(run, tmp_path / "site")["ok"]
    (run / PSEUDONYM_KEY_NAME).rename(tmp_path / "kept.key")
    report = _export(run, tmp_path / "site")
    assert len(report["anchors_unchecked"]) == 3
    assert all("participants.key" in m for m in report["anchors_unchecked"])


def test_a_site_log_spanning_runs_is_checked_only_against_this_runs_heads(tmp_path):
    entries = _site(tmp_path / "site")
    _coordinator(tmp_path / "run", entries)
    coordinator = [json.loads(x) for x in (tmp_path / "run" / LOG_NAME).read_text().splitlines()]
    bogus = {"seq": len(coordinator) + 50, "hash": "b" * 64}

    def received(run_id: str) -> None:
        payload = {"round": 9, "phase": "fit", "model_digest": "a" * 64, "node_id": NODE}
        payload["coordinator_head"] = {**bogus, "run_id": run_id}
        with AuditLog.open(tmp_path / "site", "site-a", fsync=False) as log:
            log.record("model_received", payload)

    received("an-earlier-run")  # the same site dir served another run before
    report = _export(tmp_path / "run", tmp_path / "site")
    assert not [m for m in report["mismatches"] if m["kind"] == "anchor_missing"]
    received("run-1")
    report = _export(tmp_path / "run", tmp_path / "site")
    assert [m for m in report["mismatches"] if m["kind"] == "anchor_missing"]
