"""What a site writes down (:mod:`fedops.client.site_trail`): its journal and its audit log.

Under test: without ``--run-dir`` nothing is written anywhere; with one, the
journal (``client.jsonl``) and the signed audit log (``audit.jsonl`` with its
head and key) are written in that directory, the log verifies with the site's
key, the head sent to the coordinator is the log's last entry, and the entries
use the coordinator's phase names (:func:`fedops.wire.phases.phase_of`) so the two
logs cross-check; each event the site writes to both is one call that writes the
journal's line and the log's entry; ``sent`` records only uploads with a digest in
the log (every answer in the journal); ``shared`` records the worst drift figures and
the group counts a site shared.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from fedops.client.site_trail import SiteTrail
from fedops.core.audit.anchor import anchor_of
from fedops.core.audit.verify import verify_log_bytes
from fedops.crypto import verify_ed25519
from fedops.v1 import fedops_pb2 as pb


def _entries(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]


@pytest.fixture
def trail(tmp_path: Path) -> Any:
    t = SiteTrail(tmp_path / "site", 2, "bank-a")
    yield t
    t.close()


def test_without_a_run_dir_nothing_is_kept_or_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    trail = SiteTrail(None, 0, "site-0")
    assert trail.keeping is False
    assert trail.head() is None
    trail.journal(event="registered")
    trail.audit("registered", node_id="n1")
    trail.sent(pb.Task(kind=pb.TASK_KIND_FIT, round=1), "n1", "ab" * 32, 10)
    trail.close()
    assert list(tmp_path.iterdir()) == []


def test_the_run_dir_holds_the_journal_and_the_signed_log(trail: SiteTrail, tmp_path: Path) -> None:
    run_dir = tmp_path / "site"
    assert trail.keeping is True
    trail.journal(event="registered", node_id="n1")
    trail.audit("registered", node_id="n1", run_id="run-A")
    files = {p.name for p in run_dir.iterdir()}
    assert {"client.jsonl", "audit.jsonl", "audit.head", "audit_key.pem", "audit_key.pub"} <= files
    (line,) = (run_dir / "client.jsonl").read_text().splitlines()
    journal = json.loads(line)
    assert journal["site"] == 2 and journal["event"] == "registered" and journal["node_id"] == "n1"
    assert isinstance(journal["time"], float)
    entries = _entries(run_dir)
    assert [e["event"] for e in entries] == ["log_opened", "registered"]
    assert all(e["actor"] == "bank-a" for e in entries)
    assert entries[1]["payload"] == {"node_id": "n1", "run_id": "run-A"}
    result = verify_log_bytes(
        (run_dir / "audit.jsonl").read_bytes(),
        verify_ed25519,
        public_key_pem=(run_dir / "audit_key.pub").read_bytes(),
        head=(run_dir / "audit.head").read_bytes(),
    )
    assert result.ok, result.reason
    assert result.actor == "bank-a"


def test_the_journal_appends_one_line_per_entry(trail: SiteTrail, tmp_path: Path) -> None:
    for r in (1, 2, 3):
        trail.journal(event="pushed", round=r)
    lines = (tmp_path / "site" / "client.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3]


def test_the_head_is_the_last_entry_of_the_log(trail: SiteTrail, tmp_path: Path) -> None:
    assert trail.head() == (0, _entries(tmp_path / "site")[0]["hash"])  # the opening entry
    trail.audit("one")
    trail.audit("two")
    last = _entries(tmp_path / "site")[-1]
    assert trail.head() == (2, last["hash"]) and last["seq"] == 2


def test_payloads_a_signed_entry_cannot_hold_are_made_explicit(
    trail: SiteTrail, tmp_path: Path
) -> None:
    trail.audit("privacy", epsilon=float("inf"), loss=float("nan"), where=tmp_path, pair=(1, 2))
    payload = _entries(tmp_path / "site")[-1]["payload"]
    assert payload == {"epsilon": "inf", "loss": "nan", "where": str(tmp_path), "pair": [1, 2]}


def test_a_reopened_trail_continues_the_same_chain(tmp_path: Path) -> None:
    first = SiteTrail(tmp_path / "site", 0, "bank-a")
    first.audit("before")
    first.close()
    second = SiteTrail(tmp_path / "site", 0, "bank-a")
    second.audit("after")
    second.close()
    entries = _entries(tmp_path / "site")
    assert [e["event"] for e in entries] == ["log_opened", "before", "log_reopened", "after"]
    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries))


def _journal(run_dir: Path) -> list[dict[str, Any]]:
    """The journal's lines without their time (the rest is what the site wrote)."""
    lines = (run_dir / "client.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def test_each_event_of_both_files_is_one_call_writing_its_line_and_its_entry(
    trail: SiteTrail, tmp_path: Path
) -> None:
    head = anchor_of(4, "cd" * 32)
    task = pb.Task(kind=pb.TASK_KIND_FIT, run_id="run-A", round=3, config={"lr": 0.5})
    secure = pb.Task(kind=pb.TASK_KIND_SECAGG, run_id="run-A", round=3)
    secure.secagg.mask.SetInParent()
    done = pb.Task(kind=pb.TASK_KIND_SHUTDOWN, run_id="run-A", message="the run is complete")
    trail.registered("n1", "run-A")
    trail.received(task, "n1", "ab" * 32, head)
    trail.refused(task, "INVALID_ARGUMENT", "update rejected")
    reply = pb.SecAggReply(masked=pb.SecAggMasked())
    trail.sent(secure, "n1", "ef" * 32, 40, metrics={"loss": 0.25}, secagg=reply)
    trail.sent(task, "n1", "", 0, declined="site policy: no")
    trail.finished(done, head)
    anchored = {"coordinator_head": {"seq": 4, "hash": "cd" * 32, "run_id": "run-A"}}
    assert _journal(tmp_path / "site") == [
        {"site": 2, "event": "registered", "node_id": "n1", "run_id": "run-A"},
        {
            "site": 2,
            "event": "model",
            "round": 3,
            "kind": "TASK_KIND_FIT",
            "model_digest": "ab" * 32,
            "config": {"lr": 0.5},
        },
        {
            "site": 2,
            "event": "refused",
            "round": 3,
            "code": "INVALID_ARGUMENT",
            "reason": "update rejected",
        },
        {
            "site": 2,
            "event": "pushed",
            "round": 3,
            "kind": "TASK_KIND_SECAGG",
            "num_examples": 40,
            "metrics": {"loss": 0.25},
            "model_digest": "ef" * 32,
            "secagg": "masked",
        },
        {
            "site": 2,
            "event": "pushed",
            "round": 3,
            "kind": "TASK_KIND_FIT",
            "num_examples": 0,
            "metrics": {},
            "model_digest": "",
            "declined": "site policy: no",
        },
        {"site": 2, "event": "shutdown", "run_id": "run-A"},
    ]
    assert [(e["event"], e["payload"]) for e in _entries(tmp_path / "site")[1:]] == [
        ("registered", {"node_id": "n1", "run_id": "run-A"}),
        (
            "model_received",
            {
                "round": 3,
                "phase": "fit",
                "model_digest": "ab" * 32,
                "node_id": "n1",
                "config": {"lr": 0.5},
                **anchored,
            },
        ),
        ("result_refused", {"round": 3, "code": "INVALID_ARGUMENT", "reason": "update rejected"}),
        (
            "update_sent",
            {
                "round": 3,
                "phase": "secagg_masked",
                "digest": "ef" * 32,
                "num_examples": 40,
                "node_id": "n1",
            },
        ),
        ("run_finished", {"run_id": "run-A", "message": "the run is complete", **anchored}),
    ]


def test_a_sent_report_is_shared_in_the_log_after_the_update(
    trail: SiteTrail, tmp_path: Path
) -> None:
    report = pb.SiteReport(fairness=[pb.GroupConfusion(group=0, n=10, correct=7)])
    task = pb.Task(kind=pb.TASK_KIND_EVALUATE, round=5)
    trail.sent(task, "n1", "", 10, metrics={"accuracy": 0.7}, report=report)
    assert [e["event"] for e in _entries(tmp_path / "site")] == ["log_opened", "fairness_counts"]
    (pushed,) = _journal(tmp_path / "site")
    assert pushed["event"] == "pushed" and pushed["metrics"] == {"accuracy": 0.7}
    assert "declined" not in pushed and "secagg" not in pushed


def test_sent_records_an_upload_with_its_digest_only(trail: SiteTrail, tmp_path: Path) -> None:
    task = pb.Task(kind=pb.TASK_KIND_FIT, round=3)
    trail.sent(task, "n1", "", 0)  # a declined task: no model, no entry
    trail.sent(task, "n1", "ab" * 32, 40)
    entries = _entries(tmp_path / "site")
    assert [e["event"] for e in entries] == ["log_opened", "update_sent"]
    assert entries[-1]["payload"] == {
        "round": 3,
        "phase": "fit",
        "digest": "ab" * 32,
        "num_examples": 40,
        "node_id": "n1",
    }


def test_shared_records_the_worst_drift_figures_and_the_group_counts(
    trail: SiteTrail, tmp_path: Path
) -> None:
    report = pb.SiteReport(
        drift=[
            pb.DriftStatistic(feature="x0", psi=0.5, js=0.125, ks=0.25),
            pb.DriftStatistic(feature="x1", psi=0.25, js=0.375, ks=0.125),
            pb.DriftStatistic(feature="x2", psi=0.0, js=0.0, ks=0.75),
        ],
        fairness=[
            pb.GroupConfusion(group=0, n=10, tp=4, fp=1, tn=3, fn=2, correct=7),
            pb.GroupConfusion(group=1, n=6, tp=1, fp=1, tn=3, fn=1, correct=4),
        ],
    )
    trail.shared(5, report)
    drift, fairness = _entries(tmp_path / "site")[-2:]
    assert drift["event"] == "drift_report"
    assert drift["payload"] == {
        "round": 5,
        "psi": 0.5,
        "js": 0.375,
        "ks": 0.75,
        "psi_feature": "x0",
        "js_feature": "x1",
        "ks_feature": "x2",
    }
    assert fairness["event"] == "fairness_counts"
    assert fairness["payload"] == {
        "round": 5,
        "groups": {"0": [10, 4, 1, 3, 2, 7], "1": [6, 1, 1, 3, 1, 4]},
    }


def test_an_empty_report_records_nothing(trail: SiteTrail, tmp_path: Path) -> None:
    trail.shared(5, pb.SiteReport())
    assert [e["event"] for e in _entries(tmp_path / "site")] == ["log_opened"]
