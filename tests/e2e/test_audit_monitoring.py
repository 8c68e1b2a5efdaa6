"""A real coordinator and three bank agents: signed audit logs, monitoring, metrics, reports.

Everything runs as separate ``fedops`` processes on 127.0.0.1: the agents
keep their own audit logs, the coordinator serves Prometheus metrics, and
afterwards the CLI verifies every log, exports the compliance report and
renders the run report.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import urllib.request
from pathlib import Path

import matplotlib.image
import pytest
import torch
from procs import Procs, metrics, run_fedops, wait_until
from safetensors.torch import load_file

from fedops.coordinator.listening import read_listening
from fedops.tasks import load_task

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TASK = str(ROOT / "simulations" / "tasks" / "bank_credit.py")
SITES = 3
ROUNDS = 6
FAIRNESS_KEYS = {
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
    "group_accuracy_gap",
    "site_accuracy_gap",
}


_fedops = run_fedops


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) ([-+.eE0-9naif]+)", line)
        if match:
            values[match[1]] = float(match[2])
    return values


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("audit")
    procs = Procs(work)
    coord_dir = work / "coordinator"
    try:
        coord, port = procs.coordinator(
            "coordinator",
            coord_dir,
            task=TASK,
            rounds=ROUNDS,
            min_clients=SITES,
            metrics_port=0,  # the kernel picks it; listening.json says which
            lr=0.1,  # the run's training settings: the coordinator's
        )
        listening = read_listening(coord_dir, coord.pid)
        assert listening is not None and listening.metrics is not None, listening
        metrics_port = int(listening.metrics.rpartition(":")[2])
        for site in range(SITES):
            procs.client(f"bank{site}", port, site, SITES, task=TASK)
        wait_until(lambda: len(metrics(coord_dir)) >= 1, 180, "round 1")
        early = _scrape(metrics_port)
        wait_until(lambda: len(metrics(coord_dir)) >= 3, 180, "round 3")
        later = _scrape(metrics_port)
        assert procs.wait(coord, 300, "coordinator") == 0, procs.log("coordinator")
        for name, proc in procs.procs[1:]:
            assert procs.wait(proc, 60, name) == 0, procs.log(name)
    finally:
        procs.kill_all()
    return {"work": work, "coord": coord_dir, "early": early, "later": later}


def test_metrics_endpoint_counters_move_during_the_run(run):
    early, later = run["early"], run["later"]
    # metrics.jsonl is written as a round commits, the counters just after: a scrape
    # may trail the file by one round
    assert later["fedops_rounds_total"] > early["fedops_rounds_total"]
    assert later["fedops_round"] == later["fedops_rounds_total"] >= 2
    assert later["fedops_connected_nodes"] == SITES
    assert later["fedops_round_duration_seconds_count"] == later["fedops_rounds_total"]
    assert 0 < later["fedops_eval_accuracy"] <= 1
    psi = [v for k, v in later.items() if k.startswith("fedops_drift_max_psi{")]
    assert len(psi) == SITES and all(v == 0 for v in psi)  # the banks' data never changes


def test_every_round_reports_drift_and_pooled_fairness(run):
    rows = metrics(run["coord"])
    assert [r["round"] for r in rows] == list(range(1, ROUNDS + 1))
    for row in rows:
        assert set(row["fairness"]) == FAIRNESS_KEYS
        assert set(row["drift"]) == {f"site-{i}" for i in range(SITES)}
        assert set(row["sites"]) == {f"site-{i}" for i in range(SITES)}
        assert row["drift_alerts"] == []  # the banks' data never changes
    model = load_file(run["coord"] / "model.safetensors")
    net = load_task(TASK).build_model()
    assert set(model) == set(net.state_dict())
    net.load_state_dict(model)
    assert net(torch.zeros(1, 6)).shape == (1, 2)


def _logs(run) -> list[Path]:
    return [run["coord"] / "audit.jsonl"] + [
        run["work"] / f"bank{i}" / "audit.jsonl" for i in range(SITES)
    ]


def test_each_party_log_verifies_and_a_one_byte_edit_is_caught(run, tmp_path):
    for log in _logs(run):
        ok = _fedops("audit", "verify", str(log), "--public-key", str(log.parent / "audit_key.pub"))
        assert ok.returncode == 0, ok.stderr
        assert "OK:" in ok.stderr
        data = bytearray(log.read_bytes())
        at = data.index(b'"round":2') + len(b'"round":')
        data[at] = ord("7")  # one byte: round 2 becomes round 7 in one entry
        copy = tmp_path / f"{log.parent.name}.jsonl"
        copy.write_bytes(bytes(data))
        line = data[:at].count(b"\n") + 1
        bad = _fedops(
            "audit", "verify", str(copy), "--public-key", str(log.parent / "audit_key.pub")
        )
        assert bad.returncode == 1
        assert f"line {line} " in bad.stderr, bad.stderr


def test_site_logs_record_what_they_shared(run):
    entries = [
        json.loads(x) for x in (run["work"] / "bank0" / "audit.jsonl").read_text().split("\n") if x
    ]
    events = [e["event"] for e in entries]
    assert events[0] == "log_opened" and "site_started" in events
    assert events.count("model_received") == 2 * ROUNDS  # fit and evaluation each round
    assert events.count("update_sent") == ROUNDS
    assert events.count("drift_report") == ROUNDS
    assert events.count("fairness_counts") == ROUNDS
    assert events[-1] == "run_finished"


def test_compliance_export_cross_checks_model_digests(run):
    sites = [str(p) for p in _logs(run)[1:]]
    out = _fedops(
        "audit", "export", str(run["coord"]), *(a for s in sites for a in ("--site-log", s))
    )
    assert out.returncode == 0, out.stderr
    report = json.loads((run["coord"] / "compliance.json").read_text())
    assert report["ok"] and report["mismatches"] == []
    assert len(report["parties"]) == SITES + 1
    assert len(report["rounds"]) >= 2 * ROUNDS  # fit and evaluate phases of every round
    html = (run["coord"] / "compliance.html").read_text()
    assert "<script" not in html


def _truncate_and_rebuild_head(run_dir: Path, keep: int) -> None:
    """The attack of issue 17 (finding 3): cut the log after ``keep`` lines and rebuild
    ``audit.head`` from the new last line, which carries its own signature: no key needed."""
    log = run_dir / "audit.jsonl"
    lines = log.read_bytes().split(b"\n")[:keep]
    log.write_bytes(b"\n".join(lines) + b"\n")
    last = json.loads(lines[-1])
    head = {"seq": last["seq"], "hash": last["hash"], "signature": last["signature"]}
    (run_dir / "audit.head").write_text(json.dumps(head))


@pytest.mark.parametrize("victim", ["coordinator", "bank1"])
def test_a_truncated_log_with_a_rebuilt_head_is_caught_by_the_other_partys_anchors(
    run, tmp_path, victim
):
    copy = tmp_path / "run"
    shutil.copytree(run["work"], copy)
    coord = copy / "coordinator"
    target = coord if victim == "coordinator" else copy / victim
    lines = (target / "audit.jsonl").read_text().splitlines()
    _truncate_and_rebuild_head(target, keep=len(lines) * 2 // 3)
    # the log alone still verifies: its own head cannot show the cut
    alone = _fedops("audit", "verify", str(target / "audit.jsonl"))
    assert alone.returncode == 0, alone.stderr
    sites = [str(copy / f"bank{i}" / "audit.jsonl") for i in range(SITES)]
    out = _fedops("audit", "export", str(coord), *(a for s in sites for a in ("--site-log", s)))
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads((coord / "compliance.json").read_text())
    lost = [m["message"] for m in report["mismatches"] if m["kind"] == "anchor_missing"]
    assert lost, report["mismatches"]
    named = "the coordinator's log" if victim == "coordinator" else "the log of site 'site-1'"
    assert all(m.startswith(named) for m in lost), lost
    assert all("cut off its end" in m for m in lost), lost


def test_every_result_and_task_carries_the_senders_head(run, tmp_path):
    coordinator = [json.loads(x) for x in (run["coord"] / "audit.jsonl").read_text().splitlines()]
    received = [e for e in coordinator if e["event"] == "update_received"]
    assert received and all("site_head" in e["payload"] for e in received)
    site = [json.loads(x) for x in (run["work"] / "bank0" / "audit.jsonl").read_text().splitlines()]
    fetched = [e for e in site if e["event"] == "model_received"]
    assert fetched and all("coordinator_head" in e["payload"] for e in fetched)
    out = tmp_path / "report"
    sites = [str(p) for p in _logs(run)[1:]]
    done = _fedops(
        "audit", "export", str(run["coord"]), "--out", str(out),
        *(a for s in sites for a in ("--site-log", s)),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "compliance.json").read_text())
    assert report["anchors_checked"] >= len(received) and report["anchors_unchecked"] == []


def test_run_report_embeds_real_plots(run):
    out = _fedops("report", str(run["coord"]))
    assert out.returncode == 0, out.stderr
    html = (run["coord"] / "report.html").read_text()
    images = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 5  # curves, per-site accuracy, drift heatmap and lines, fairness
    for data in images:
        raw = base64.b64decode(data)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = matplotlib.image.imread(io.BytesIO(raw))
        assert pixels.shape[0] >= 150 and pixels.shape[1] >= 200
        assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0
