"""A consortium on loopback: kits from ``fedops consortium init``, mTLS, roles, revocation.

One run enrols every party by CSR (keys made at the party, certificates at
the CA) and pins the CA's fingerprint at the coordinator and the sites.

Real processes: the coordinator serves with its kit, sites dial with theirs.
Raw gRPC calls with other parties' credentials check what the coordinator
refuses: plaintext, another consortium's certificate, a non-site role, one
site acting as another's node, and a certificate revoked during the run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest
from procs import Procs, metrics, query, run_fedops, wait_until

from fedops.consortium import pki
from fedops.consortium.enrol import assemble, request, sign_requests
from fedops.consortium.kit import load_kit
from fedops.consortium.kits import init_ca, init_consortium, revoke
from fedops.consortium.tls import channel_credentials
from fedops.reporting.audit.audit_commands import audit_export_command, audit_verify_command
from fedops.v1 import fedops_pb2 as pb
from fedops.v1 import fedops_pb2_grpc as pb_grpc
from fedops.wire import PROTOCOL_VERSION

pytestmark = pytest.mark.slow
#: enough rounds (a fraction of a second each) for the checks to run while the run goes on
ROUNDS = 40
#: The coordinator address written into the kits. Nothing dials it: kits are made before the
#: coordinator starts, and it binds 127.0.0.1:0 (the kernel picks the port, so no other
#: process can take it first); sites and admins are pointed at the bound port with
#: --coordinator. (Port 9, discard: nothing listens there, so a process that did use the
#: kit's address would fail at once rather than reach something else.)
KIT_ADDRESS = "127.0.0.1:9"


def _fedops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_fedops(*args, cwd=cwd)


def _init(tmp: Path, name: str, *, cli: bool = True) -> Path:
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        f"coordinator: {{name: coord, address: '{KIT_ADDRESS}'}}\n"
        "sites: [{name: bank-a}, {name: bank-b}, {name: bank-c}]\n"
        "admins: [{name: alice}]\n"
        "observers: [{name: auditor}]\n"
    )
    out = tmp / name
    if not cli:  # the same kits, without a process's seconds of imports
        init_consortium(spec, out)
        return out
    done = _fedops("consortium", "init", str(spec), "--out", str(out), "--demo-keys", cwd=tmp)
    assert done.returncode == 0, done.stderr
    return out


def _stub(kit_dir: Path, port: int) -> pb_grpc.CoordinatorStub:
    channel = grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(load_kit(kit_dir)))
    return pb_grpc.CoordinatorStub(channel)


def _register(stub: pb_grpc.CoordinatorStub, site_name: str = "") -> pb.RegisterResponse:
    request = pb.RegisterRequest(
        protocol_version=PROTOCOL_VERSION, site_name=site_name, num_train_examples=10
    )
    return stub.Register(request, timeout=10)


def _site(procs: Procs, kits: Path, name: str, index: int, port: int, tmp: Path, *extra: str):  # type: ignore[no-untyped-def]
    """One of two sites, dialling the coordinator's bound port with its kit (the run's
    coordinator sets 1 local epoch: rounds stay short)."""
    return procs.start(
        name,
        "client",
        "--kit",
        str(kits / name),
        "--coordinator",
        f"127.0.0.1:{port}",
        "--task",
        "digits",
        "--site",
        str(index),
        "--num-sites",
        "2",
        "--run-dir",
        str(tmp / name),
        *extra,
    )


def _code(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details() or ""


def test_a_consortium_trains_over_mtls_and_refuses_everyone_else(procs: Procs, tmp_path: Path):
    cons = _init(tmp_path, "banks")
    kits = cons / "kits"
    run_dir = tmp_path / "run"
    coord, port = procs.coordinator(
        "coordinator",
        run_dir,
        kit=kits / "coord",
        task="digits",
        rounds=ROUNDS,
        min_clients=1,
        liveness_timeout=8,  # 8x the heartbeat below: a loaded machine must not drop a healthy site
        heartbeat_interval=1,
        round_timeout=30,
        epochs=1,  # the run's training settings: 1 local epoch keeps rounds short
    )
    # before any site joins: plaintext, and another consortium's certificate, are refused at
    # the handshake
    plain = pb_grpc.CoordinatorStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    assert _code(lambda: _register(plain))[0] is grpc.StatusCode.UNAVAILABLE
    other = _init(tmp_path, "strangers")
    assert _code(lambda: _register(_stub(other / "kits" / "bank-a", port)))[0] is (
        grpc.StatusCode.UNAVAILABLE
    )
    # a valid certificate with the wrong role: no training calls
    for party in ("alice", "auditor"):
        code, reason = _code(lambda p=party: _register(_stub(kits / p, port)))
        assert code is grpc.StatusCode.PERMISSION_DENIED and "only sites" in reason, reason
    # a site claiming another name, and a site using another site's node
    bank_c = _stub(kits / "bank-c", port)
    code, reason = _code(lambda: _register(bank_c, site_name="bank-a"))
    assert code is grpc.StatusCode.PERMISSION_DENIED and "certificate names 'bank-c'" in reason
    mine = _register(_stub(kits / "bank-a", port))  # bank-a's certificate: a node of bank-a
    assert mine.node_id
    pull = pb.PullTaskRequest(node_id=mine.node_id, token=mine.token, wait_ms=0)
    code, reason = _code(lambda: bank_c.PullTask(pull, timeout=10))
    assert code is grpc.StatusCode.PERMISSION_DENIED and "registered by 'bank-a'" in reason

    # the sites join (the run starts), and bank-b is revoked during the run: refused at its
    # next call, the others go on
    sites = {
        name: _site(procs, kits, name, i, port, tmp_path, "--max-retries", "3")
        for i, name in enumerate(("bank-a", "bank-b"))
    }
    trained = (
        "SELECT COUNT(*) FROM participants WHERE site = ? AND phase = 'fit' AND outcome = 'ok'"
    )
    wait_until(
        lambda: metrics(run_dir) and all(query(run_dir, trained, n)[0][0] for n in sites),
        120,
        "both sites training over mTLS",
    )
    revoke(cons, "bank-b")
    assert procs.wait(coord, 240, "coordinator") == 0, procs.log("coordinator")
    assert procs.wait(sites["bank-a"], 30, "bank-a") == 0, procs.log("bank-a")
    assert sites["bank-b"].wait(timeout=120) == 1  # it cannot take part any more, and says why
    assert "the coordinator refuses this site" in procs.log("bank-b")
    assert "revoked" in procs.log("bank-b")
    # the operator sees it too: a WARNING naming the site (a few per reason, not a flood)
    assert "refused a call: the certificate of 'bank-b' is revoked" in procs.log("coordinator")

    rows = metrics(run_dir)
    assert [r["round"] for r in rows] == list(range(1, ROUNDS + 1))
    fit = query(run_dir, "SELECT DISTINCT site FROM participants WHERE outcome = 'ok'")
    assert {s for (s,) in fit} == {"bank-a", "bank-b"}  # names from the certificates
    refused = query(run_dir, "SELECT reason FROM rejections")
    assert any("revoked" in r for (r,) in refused)
    assert any("only sites" in r for (r,) in refused)
    last_b = query(
        run_dir, "SELECT MAX(round) FROM participants WHERE site = 'bank-b' AND outcome = 'ok'"
    )[0][0]
    assert last_b is not None and last_b < ROUNDS
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_a_csr_enrolled_consortium_trains_over_mtls_with_a_pinned_ca(procs: Procs, tmp_path: Path):
    spec = tmp_path / "banks.yaml"
    spec.write_text(
        "name: banks\n"
        f"coordinator: {{name: coord, address: '{KIT_ADDRESS}'}}\n"
        "sites: [{name: bank-a}, {name: bank-b}]\n"
        "admins: [{name: alice}]\n"
    )
    ca_root = tmp_path / "ca-host"
    init_ca(spec, ca_root)  # the CA alone: no party's key is made here
    pin = pki.fingerprint(pki.load_cert((ca_root / "ca" / "ca.pem").read_bytes()))
    parties = {"coord": "coordinator", "bank-a": "site", "bank-b": "site"}
    csrs = [request(name, role, tmp_path / name) for name, role in parties.items()]
    for bundle in sign_requests(csrs, ca_root, tmp_path / "signed"):
        assemble(tmp_path / bundle.name, bundle, pin)
    assert not any(b"PRIVATE KEY" in f.read_bytes() for f in (tmp_path / "signed").rglob("*.*"))

    run_dir = tmp_path / "run"
    pinned = ("--ca-fingerprint", pin)
    coord, port = procs.coordinator(
        "coordinator",
        run_dir,
        *pinned,
        kit=tmp_path / "coord",
        task="digits",
        rounds=2,
        min_clients=2,
        round_timeout=60,
        epochs=1,
    )
    sites = [
        _site(procs, tmp_path, n, i, port, tmp_path / "runs", *pinned)
        for i, n in enumerate(("bank-a", "bank-b"))
    ]
    assert procs.wait(coord, 180, "coordinator") == 0, procs.log("coordinator")
    for site in sites:
        assert site.wait(timeout=60) == 0
    assert [r["round"] for r in metrics(run_dir)] == [1, 2]
    fit = query(run_dir, "SELECT DISTINCT site FROM participants WHERE outcome = 'ok'")
    assert {s for (s,) in fit} == {"bank-a", "bank-b"}  # names from the CSR-issued certificates
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_a_tampered_kit_is_refused_before_anything_is_dialled(tmp_path: Path):
    cons = _init(tmp_path, "banks")
    kit = cons / "kits" / "bank-a"
    meta = json.loads((kit / "kit.json").read_text())
    meta["role"] = "coordinator"
    (kit / "kit.json").write_text(json.dumps(meta))
    done = _fedops(
        "client",
        "--kit",
        str(kit),
        "--task",
        "digits",
        "--site",
        "0",
        "--num-sites",
        "1",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "kit.json" in done.stderr, done.stderr
    served = _fedops(
        "coordinator",
        "--address",
        "127.0.0.1:0",  # refused before it binds; never the kit's placeholder address
        "--kit",
        str(cons / "kits" / "bank-b"),
        "--task",
        "digits",
        "--run-dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert served.returncode == 2 and "coordinator's" in served.stderr, served.stderr


def test_admins_start_and_stop_a_run_and_observers_only_watch(procs: Procs, tmp_path: Path):
    kits = _init(tmp_path, "banks") / "kits"
    run_dir = tmp_path / "run"
    coord, port = procs.coordinator(
        "coordinator",
        run_dir,
        kit=kits / "coord",
        task="digits",
        rounds=500,
        min_clients=2,
        wait_for_start=True,
        epochs=1,
    )
    for i, name in enumerate(("bank-a", "bank-b")):
        _site(procs, kits, name, i, port, tmp_path)

    def admin(verb: str, party: str) -> subprocess.CompletedProcess[str]:
        at = ("--coordinator", f"127.0.0.1:{port}")
        return _fedops(
            "admin", verb, "--kit", str(kits / party), *at, "--reason", "test", cwd=tmp_path
        )

    waiting = wait_until(
        lambda: (r := admin("status", "auditor")).returncode == 0 and "bank-b" in r.stdout and r,
        60,
        "both sites connected",
    )
    assert "waiting_for_start, round 0 of 500" in waiting.stdout
    assert metrics(run_dir) == []  # nothing runs before an admin starts it
    refused = admin("start", "auditor")
    assert refused.returncode == 1 and "may not call Admin.Start" in refused.stderr
    assert admin("start", "alice").returncode == 0
    wait_until(lambda: len(metrics(run_dir)) >= 2, 120, "two rounds after the start")
    stopped = admin("stop", "alice")
    assert stopped.returncode == 0 and "stopping" in stopped.stdout, stopped.stderr
    assert procs.wait(coord, 120, "coordinator") == 0, procs.log("coordinator")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and "alice: test" in summary["stop_reason"]
    assert 2 <= summary["rounds_completed"] < 500
    events = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    said = [(e["event"], e["payload"].get("caller")) for e in events if "admin" in e["event"]]
    assert ("admin_start", "alice") in said and ("admin_stop", "alice") in said
    # a refusal is a throttled rejection record, charged to the caller's certificate
    refusals = [e["payload"] for e in events if e["event"] == "update_rejected"]
    assert any(
        r["node_id"] == "admin:auditor" and "may not call Admin.Start" in r["reason"]
        for r in refusals
    ), refusals


def test_a_consortium_secagg_run_signs_keys_and_audit_logs_with_kit_identities(
    procs: Procs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """SecAgg+ over mTLS with no --identity-key or --trusted-keys: each site signs its keys with
    its kit's signing key and checks its neighbours' certificates against the CA; every audit
    log is signed with its party's certified key, which `audit verify --ca` names."""
    cons = _init(tmp_path, "banks", cli=False)
    kits, run_dir, names = cons / "kits", tmp_path / "run", ("bank-a", "bank-b", "bank-c")
    coord, port = procs.coordinator(
        "coordinator",
        run_dir,
        kit=kits / "coord",
        task="digits",
        rounds=2,
        min_clients=3,
        round_timeout=60,
        secagg="secaggplus",
        epochs=1,
    )
    sites = {}
    for i, name in enumerate(names):
        site = ["--kit", str(kits / name), "--coordinator", f"127.0.0.1:{port}"]
        site += ["--task", "digits", "--site", str(i)]
        site += ["--num-sites", "3", "--run-dir", str(tmp_path / name)]
        sites[name] = procs.start(name, "client", *site, "--require-secagg")
    assert procs.wait(coord, 240, "coordinator") == 0, procs.log("coordinator")
    for name, proc in sites.items():
        assert procs.wait(proc, 60, name) == 0, procs.log(name)
        assert "refused" not in procs.log(name), procs.log(name)
    rows = metrics(run_dir)
    assert [r["secagg_survivors"] for r in rows] == [3, 3], rows
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    # the coordinator delivered the CA's CRL, with which each site checked its SecAgg+ peers
    for name in names:
        entries = [json.loads(line) for line in (tmp_path / name / "audit.jsonl").open()]
        accepted = [e["payload"] for e in entries if e["event"] == "crl_accepted"]
        assert [a["crl_number"] for a in accepted] == [1], name

    ca = str(cons / "ca" / "ca.pem")
    for log_dir, certified in (
        (run_dir, "'coord' (role coordinator"),
        (tmp_path / "bank-a", "'bank-a' (role site"),
    ):
        assert not (log_dir / "audit_key.pem").exists()  # the kit's key, not a generated one
        done = _fedops("audit", "verify", str(log_dir / "audit.jsonl"), "--ca", ca, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"certified by the consortium CA for {certified}" in done.stderr, done.stderr
    # in this process from here on (each `fedops` process costs seconds of imports)
    site_logs = [tmp_path / n / "audit.jsonl" for n in names]
    assert audit_export_command(run_dir, None, site_logs, Path(ca)) == 0
    report = json.loads((run_dir / "compliance.json").read_text())
    assert [p["certified"]["name"] for p in report["parties"]] == ["coord", *names]
    # the CA of another consortium did not certify these keys
    other = _init(tmp_path, "strangers", cli=False) / "ca" / "ca.pem"
    assert audit_verify_command(run_dir, None, other) == 1
    assert "not issued by the consortium CA" in capsys.readouterr().err
    # with the CA's CRL: a log whose key was revoked since no longer verifies (its holder can
    # sign entries with any date); the others still do
    crl = cons / "ca" / "crl.pem"
    assert audit_verify_command(site_logs[1], None, Path(ca), crl=crl) == 0
    revoke(cons, "bank-b")
    assert audit_verify_command(site_logs[0], None, Path(ca), crl=crl) == 0
    capsys.readouterr()
    assert audit_verify_command(site_logs[1], None, Path(ca), crl=crl) == 1
    assert "'bank-b', serial" in capsys.readouterr().err
    assert audit_export_command(run_dir, None, site_logs, Path(ca), crl=crl) == 1
    assert "was revoked on" in capsys.readouterr().err
    assert audit_verify_command(site_logs[0], None, None, crl=crl) == 1  # --crl needs --ca
    assert "give the CA's certificate (--ca)" in capsys.readouterr().err


def test_tls_mistakes_are_named_at_once(procs: Procs, tmp_path: Path):
    """Issue 18 #9: another consortium's kit, or a plaintext agent, against a TLS coordinator
    was "unreachable (UNAVAILABLE)" after minutes of retries."""
    cons = _init(tmp_path, "banks", cli=False)
    _, port = procs.coordinator(
        "coordinator", tmp_path / "run", kit=cons / "kits" / "coord", task="digits"
    )
    other = _init(tmp_path, "strangers", cli=False)
    site = ["--task", "digits", "--site", "0", "--num-sites", "1"]
    stranger = procs.start(
        "stranger", "client", "--kit", str(other / "kits" / "bank-a"),
        "--coordinator", f"127.0.0.1:{port}", *site,
    )  # fmt: skip
    assert procs.wait(stranger, 60, "stranger") == 1
    assert "TLS handshake with 127.0.0.1" in procs.log("stranger"), procs.log("stranger")
    assert "retry 2/" not in procs.log("stranger")  # at once, not after minutes
    plain = procs.start(
        "plain", "client", "--coordinator", f"127.0.0.1:{port}", *site, "--retry-for", "2s"
    )
    assert procs.wait(plain, 60, "plain") == 1
    assert "giving up (--retry-for 2 s)" in procs.log("plain"), procs.log("plain")
    assert "does it need TLS, a consortium kit (--kit)?" in procs.log("plain")
