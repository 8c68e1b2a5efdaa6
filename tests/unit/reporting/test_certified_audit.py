"""Audit logs signed with a kit's key: written beside its certificate, verified against the CA.

Real kits from a provisioned consortium (and a second consortium with the
same party names, whose CA is not ours), real Ed25519 signatures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from fedops.cli import main
from fedops.consortium.kit import Kit, load_kit
from fedops.consortium.kits import init_consortium
from fedops.reporting.audit.audit_commands import audit_export_command, audit_verify_command
from fedops.reporting.audit.compliance import export_compliance
from fedops.reporting.audit.logs import CERT_NAME
from fedops.runtime.audit.log_file import (
    HEAD_NAME,
    KEY_NAME,
    LOG_NAME,
    PUBLIC_NAME,
    AuditError,
    AuditLog,
)

MODEL = "ab" * 32


def _provision(root: Path) -> Path:
    spec = {
        "name": "banks",
        "coordinator": {"name": "hub", "address": "127.0.0.1:8443"},
        "sites": [{"name": "bank-a"}, {"name": "bank-b"}],
        "admins": [{"name": "alice"}],
    }
    (root / "banks.yaml").write_text(yaml.safe_dump(spec))
    init_consortium(root / "banks.yaml", root / "out")
    return root / "out"


@pytest.fixture(scope="module")
def banks(tmp_path_factory) -> Path:
    return _provision(tmp_path_factory.mktemp("banks"))


@pytest.fixture(scope="module")
def strangers(tmp_path_factory) -> Path:
    return _provision(tmp_path_factory.mktemp("strangers"))


def _kit(root: Path, name: str) -> Kit:
    return load_kit(root / "kits" / name)


def _ca(root: Path) -> Path:
    return root / "ca" / "ca.pem"


def _write(run_dir: Path, actor: str, kit: Kit | None, *, site: bool = False) -> Path:
    identity = kit.signing_identity() if kit is not None else None
    with AuditLog.open(run_dir, actor, fsync=False, identity=identity) as log:
        if site:
            log.record("model_received", {"round": 1, "phase": "fit", "model_digest": MODEL,
                                          "node_id": f"node-{actor}"})  # fmt: skip
        else:
            log.record("model_sent", {"round": 1, "phase": "fit", "model_digest": MODEL,
                                      "nodes": ["node-bank-a", "node-bank-b"]})  # fmt: skip
    return run_dir / LOG_NAME


# -- writing ---------------------------------------------------------------------------------------


def test_a_kit_signs_the_log_and_its_certificate_lies_beside_it(banks, tmp_path):
    kit = _kit(banks, "hub")
    _write(tmp_path, "coordinator", kit)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {LOG_NAME, HEAD_NAME, PUBLIC_NAME, CERT_NAME}  # no generated audit_key.pem
    assert (tmp_path / CERT_NAME).read_bytes() == kit.signing_cert_pem
    assert (tmp_path / PUBLIC_NAME).read_bytes() == kit.signing_identity().public_pem()
    first = json.loads((tmp_path / LOG_NAME).read_text().splitlines()[0])
    assert first["payload"]["public_key"].encode() == kit.signing_identity().public_pem()
    # reopening with the same kit continues the chain
    with AuditLog.open(tmp_path, "coordinator", fsync=False, identity=kit.signing_identity()):
        pass
    assert audit_verify_command(tmp_path, None, _ca(banks)) == 0


def test_reopening_with_another_key_is_refused(banks, tmp_path):
    _write(tmp_path, "bank-a", _kit(banks, "bank-a"))
    before = {n: (tmp_path / n).read_bytes() for n in (CERT_NAME, PUBLIC_NAME, LOG_NAME)}
    with pytest.raises(AuditError, match="does not verify with the kit's signing key"):
        AuditLog.open(tmp_path, "bank-a", identity=_kit(banks, "bank-b").signing_identity())
    with pytest.raises(AuditError, match=f"its key {tmp_path / KEY_NAME} is missing"):
        AuditLog.open(tmp_path, "bank-a")  # without the kit
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # nothing overwritten

    own = tmp_path / "own"
    _write(own, "bank-a", None)  # a self-generated key first, then the kit: refused too
    with pytest.raises(
        AuditError, match=r"does not verify with the kit's signing key.*new --run-dir"
    ):
        AuditLog.open(own, "bank-a", identity=_kit(banks, "bank-a").signing_identity())
    assert not (own / CERT_NAME).exists()


# -- audit verify --ca ----------------------------------------------------------------------------


def test_verify_ca_names_the_certified_party(banks, tmp_path, capsys):
    _write(tmp_path, "bank-a", _kit(banks, "bank-a"), site=True)
    assert main(["audit", "verify", str(tmp_path / LOG_NAME), "--ca", str(_ca(banks))]) == 0
    err = capsys.readouterr().err
    assert err.startswith("OK: ") and "certified by the consortium CA for 'bank-a'" in err
    assert "role site" in err and "consortium 'banks'" in err


def test_verify_ca_refuses_a_self_generated_key(banks, tmp_path, capsys):
    _write(tmp_path, "bank-a", None)
    assert audit_verify_command(tmp_path, None, _ca(banks)) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED: ") and f"{CERT_NAME}: missing" in err
    assert "self-generated key" in err


def test_verify_ca_refuses_another_cas_certificate(banks, strangers, tmp_path, capsys):
    _write(tmp_path, "bank-a", _kit(strangers, "bank-a"))  # same name, another consortium
    assert audit_verify_command(tmp_path, None, _ca(strangers)) == 0
    capsys.readouterr()
    assert audit_verify_command(tmp_path, None, _ca(banks)) == 1
    assert "not issued by the consortium CA" in capsys.readouterr().err


def test_verify_ca_refuses_a_certificate_for_another_key(banks, tmp_path, capsys):
    _write(tmp_path, "bank-a", None)  # signed with a generated key
    shutil.copy(banks / "kits" / "bank-a" / "signing.crt", tmp_path / CERT_NAME)
    assert audit_verify_command(tmp_path, None, _ca(banks)) == 1
    err = capsys.readouterr().err
    assert "not the pinned key" in err and f"the key {CERT_NAME} certifies for 'bank-a'" in err


def test_verify_ca_still_catches_a_tampered_log(banks, tmp_path, capsys):
    log = _write(tmp_path, "bank-a", _kit(banks, "bank-a"), site=True)
    lines = log.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(MODEL, "cd" * 32)
    log.write_text("".join(lines))
    assert audit_verify_command(tmp_path, None, _ca(banks)) == 1
    assert "line 2 (seq 1): payload digest mismatch" in capsys.readouterr().err


def test_verify_ca_and_public_key_are_exclusive(banks, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "verify", str(tmp_path), "--ca", "a.pem", "--public-key", "b.pub"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert audit_verify_command(tmp_path, None, tmp_path / "no-ca.pem") == 1
    assert "cannot read the CA certificate" in capsys.readouterr().err


# -- audit export --ca -----------------------------------------------------------------------------


def test_export_ca_pins_every_log_and_names_the_parties(banks, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _write(run_dir, "coordinator", _kit(banks, "hub"))
    sites = [_write(tmp_path / s, s, _kit(banks, s), site=True) for s in ("bank-a", "bank-b")]
    assert audit_export_command(run_dir, None, sites, _ca(banks)) == 0
    assert "certified 'bank-b' (site)" in capsys.readouterr().out
    report = json.loads((run_dir / "compliance.json").read_text())
    assert report["ok"] and report["ca_pinned"]
    certified = [
        (p["role"], p["certified"]["name"], p["certified"]["role"]) for p in report["parties"]
    ]
    assert certified == [
        ("coordinator", "hub", "coordinator"),
        ("site", "bank-a", "site"),
        ("site", "bank-b", "site"),
    ]
    html = (run_dir / "compliance.html").read_text()
    assert "certified by the CA" in html and "bank-a (site, banks)" in html
    # without --ca nothing is pinned, and nothing is claimed
    assert all(p["certified"] is None for p in export_compliance(run_dir, None, sites)["parties"])


def test_export_ca_fails_a_log_without_a_certificate_or_in_the_wrong_role(banks, tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir, "coordinator", _kit(banks, "hub"))
    own = _write(tmp_path / "own", "bank-a", None, site=True)
    report = export_compliance(run_dir, None, [own], ca_pem=_ca(banks).read_bytes())
    assert not report["ok"]
    assert f"{CERT_NAME}: missing" in report["parties"][1]["reason"]

    posing = tmp_path / "posing"
    _write(posing, "coordinator", _kit(banks, "alice"))  # an admin's key on a coordinator log
    report = export_compliance(posing, None, [], ca_pem=_ca(banks).read_bytes())
    assert not report["ok"]
    assert (
        "certifies 'alice' in role 'admin', but this is a coordinator log"
        in (report["parties"][0]["reason"])
    )
