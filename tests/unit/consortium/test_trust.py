"""Pinned trust roots and current CRLs: what a replaced kit folder or an old CRL cannot get past.

The attacker here can write a party's kit folder: replace it whole with one
from a CA of their own (manifest re-signed, kit.json to match), or put back
an old CRL that the real CA signed before a party was revoked. The pin from
outside the folder (``--ca-fingerprint``) refuses the first; the CRL's
``next_update`` and the highest CRL number seen refuse the second.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from fedops.cli import main
from fedops.client.coordinator_checks import CoordinatorChecks
from fedops.consortium import crl as crl_checks
from fedops.consortium import pki
from fedops.consortium.crl import CRL_DELIVERED, CRL_STATE, CrlError, DeliveredCrl, check_crl
from fedops.consortium.kit import KitError, load_kit
from fedops.consortium.kits import add_site, init_consortium, refresh_crl, revoke, sign_manifest
from fedops.consortium.spec import ConsortiumError
from fedops.consortium.tls import Revocation
from fedops.v1 import fedops_pb2 as pb

SPEC = {
    "name": "banks",
    "coordinator": {"name": "hub", "address": "127.0.0.1:8443"},
    "sites": [{"name": "bank-a"}, {"name": "bank-b"}],
    "admins": [{"name": "alice"}],
}


def _consortium(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "c.yaml").write_text(yaml.safe_dump(SPEC))
    init_consortium(root / "c.yaml", root / "out")
    return root / "out"


@pytest.fixture
def ours(tmp_path) -> Path:
    return _consortium(tmp_path / "ours")


def _pin(cons: Path) -> str:
    return pki.fingerprint(pki.load_cert((cons / "ca" / "ca.pem").read_bytes()))


def _ca_key(cons: Path) -> pki.PrivateKey:
    return pki.load_key((cons / "ca" / "ca_key.pem").read_bytes())


# -- pinned trust roots --------------------------------------------------------------------------


def test_a_wholly_replaced_kit_is_refused_with_a_pin_and_named_in_the_error(ours, tmp_path):
    theirs = _consortium(tmp_path / "theirs")  # same names, the attacker's own CA
    kit_dir = tmp_path / "installed" / "bank-a"
    shutil.copytree(ours / "kits" / "bank-a", kit_dir)
    pin = _pin(ours)
    assert load_kit(kit_dir, ca_fingerprint=pin).ca_fingerprint == pin

    shutil.rmtree(kit_dir)
    shutil.copytree(theirs / "kits" / "bank-a", kit_dir)  # the whole folder, self-consistent
    assert load_kit(kit_dir).name == "bank-a"  # nothing inside the folder can tell
    with pytest.raises(KitError, match=r"ca\.pem: not the expected CA .*pinned " + pin):
        load_kit(kit_dir, ca_fingerprint=pin)
    colons = ":".join(pin[i : i + 2] for i in range(0, 64, 2)).upper()
    with pytest.raises(KitError, match="not the expected CA"):
        load_kit(kit_dir, ca_fingerprint=colons)
    with pytest.raises(KitError, match="--ca-fingerprint: 'abc' is not a sha256"):
        load_kit(kit_dir, ca_fingerprint="abc")


def test_kit_json_records_the_pin_and_catches_a_swapped_ca(ours, tmp_path):
    kit_dir = tmp_path / "bank-a"
    shutil.copytree(ours / "kits" / "bank-a", kit_dir)
    assert json.loads((kit_dir / "kit.json").read_text())["ca_fingerprint"] == _pin(ours)
    other_cert, other_key = pki.new_ca("banks")
    (kit_dir / "ca.pem").write_bytes(pki.cert_pem(other_cert))
    sign_manifest(kit_dir, other_key)  # the manifest re-signed, kit.json left as it was
    with pytest.raises(
        KitError, match=r"kit\.json: pins the CA sha256 .*, but ca\.pem is .*\(the CA was swapped\)"
    ):
        load_kit(kit_dir)


def test_client_coordinator_and_admin_refuse_a_replaced_kit_when_pinned(ours, tmp_path, capsys):
    theirs = _consortium(tmp_path / "theirs")
    pin = _pin(ours)
    site = ["client", "--kit", str(theirs / "kits" / "bank-a"), "--ca-fingerprint", pin]
    with pytest.raises(SystemExit) as exited:
        main([*site, "--task", "digits", "--site", "0", "--num-sites", "1"])
    assert exited.value.code == 2
    assert "not the expected CA" in capsys.readouterr().err
    coord = ["coordinator", "--kit", str(theirs / "kits" / "hub"), "--ca-fingerprint", pin]
    run_dir = ["--run-dir", str(tmp_path / "run"), "--address", "127.0.0.1:0"]
    assert main([*coord, "--task", "digits", *run_dir]) == 2
    assert "not the expected CA" in capsys.readouterr().err
    admin = ["admin", "status", "--kit", str(theirs / "kits" / "alice"), "--ca-fingerprint", pin]
    assert main([*admin, "--coordinator", "127.0.0.1:9"]) == 2  # refused before any dial
    assert "not the expected CA" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "client",
                "--ca-fingerprint",
                pin,
                "--task",
                "digits",
                "--site",
                "0",
                "--num-sites",
                "1",
            ]
        )
    assert exited.value.code == 2
    assert "--ca-fingerprint: pins a kit's CA; pass --kit too" in capsys.readouterr().err


# -- CRL freshness and rollback ------------------------------------------------------------------


def _crl(cons: Path, *, number: int, last: dt.datetime, next_: dt.datetime) -> bytes:
    ca_cert = pki.load_cert((cons / "ca" / "ca.pem").read_bytes())
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(last)
        .next_update(next_)
        .add_extension(x509.CRLNumber(number), critical=False)
        .sign(_ca_key(cons), hashes.SHA256())
    )
    return pki.crl_pem(crl)


def test_a_stale_crl_is_refused_by_the_kit_and_at_every_call(ours, tmp_path):
    hub = tmp_path / "hub"
    shutil.copytree(ours / "kits" / "hub", hub)
    kit = load_kit(hub)
    revocation = Revocation.from_kit(kit)
    site = load_kit(ours / "kits" / "bank-a").cert
    assert not revocation.is_revoked(site)

    now = dt.datetime.now(dt.UTC)
    stale = _crl(ours, number=5, last=now - dt.timedelta(days=30), next_=now - dt.timedelta(days=1))
    pki.write_public(hub / "crl.pem", stale, replace=True)
    with pytest.raises(KitError, match=r"crl\.pem: stale: its next_update .* has passed"):
        load_kit(hub)
    assert revocation.is_revoked(site)  # fails closed: nobody is let in on a stale list
    ca_cert = kit.ca_cert
    with pytest.raises(CrlError, match="stale"):
        check_crl(pki.load_crl(stale), ca_cert)


def test_a_crl_that_goes_stale_while_loaded_stops_admitting(ours, tmp_path):
    hub = tmp_path / "hub"
    shutil.copytree(ours / "kits" / "hub", hub)
    now = dt.datetime.now(dt.UTC)
    soon = _crl(
        ours, number=2, last=now - dt.timedelta(minutes=1), next_=now + dt.timedelta(seconds=1)
    )
    pki.write_public(hub / "crl.pem", soon, replace=True)
    revocation = Revocation.from_kit(load_kit(hub))
    site = load_kit(ours / "kits" / "bank-a").cert
    assert not revocation.is_revoked(site)
    time.sleep(max(0.0, (now + dt.timedelta(seconds=2) - dt.datetime.now(dt.UTC)).total_seconds()))
    # the file is unchanged: only the clock moved
    assert revocation.is_revoked(site)


def test_a_rolled_back_crl_is_refused_and_the_mark_survives_a_restart(ours, tmp_path):
    hub = ours / "kits" / "hub"
    site = load_kit(ours / "kits" / "bank-a").cert
    old = (hub / "crl.pem").read_bytes()  # number 1: bank-b not revoked yet
    revoke(ours, "bank-b")
    bank_b = load_kit(ours / "kits" / "bank-b").cert
    revocation = Revocation.from_kit(load_kit(hub))
    assert revocation.is_revoked(bank_b) and not revocation.is_revoked(site)
    assert json.loads((hub / CRL_STATE).read_text()) == {"crl_number": 2}
    assert load_kit(hub).name == "hub"  # the mark is a file the kit may hold

    current = (hub / "crl.pem").read_bytes()
    pki.write_public(hub / "crl.pem", old, replace=True)  # genuine, signed by the CA, but older
    assert revocation.is_revoked(site)  # refused: every peer, not just bank-b
    with pytest.raises(KitError, match=r"crl\.pem: rolled back: CRL number 1 is lower than 2"):
        load_kit(hub)
    # a new process (a restarted coordinator) knows the mark from disk alone
    restarted = Revocation(hub / "crl.pem", revocation._ca, state_path=hub / CRL_STATE)
    assert restarted.is_revoked(site)

    pki.write_public(hub / "crl.pem", current, replace=True)
    assert not Revocation.from_kit(load_kit(hub)).is_revoked(site)
    revoke(ours, "bank-a")  # number 3, written by the CA: accepted and the mark moves on
    assert revocation.is_revoked(site)
    assert not revocation.is_revoked(load_kit(ours / "kits" / "alice").cert)
    assert crl_checks.highest_seen(hub / CRL_STATE) == 3


def test_without_a_state_file_a_rollback_is_still_caught_in_memory(ours):
    hub = ours / "kits" / "hub"
    old = (hub / "crl.pem").read_bytes()
    revoke(ours, "bank-b")
    ca_cert = load_kit(hub).ca_cert
    revocation = Revocation(hub / "crl.pem", ca_cert)
    site = load_kit(ours / "kits" / "bank-a").cert
    assert not revocation.is_revoked(site)
    pki.write_public(hub / "crl.pem", old, replace=True)
    assert revocation.is_revoked(site)
    assert not (hub / CRL_STATE).exists()


def test_crl_checks_refuse_another_ca_and_a_bad_mark(ours, tmp_path):
    ca_cert = pki.load_cert((ours / "ca" / "ca.pem").read_bytes())
    other_cert, other_key = pki.new_ca("banks")
    with pytest.raises(CrlError, match=r"not signed by ca\.pem"):
        check_crl(pki.build_crl(other_cert, other_key, []), ca_cert)
    mark = tmp_path / CRL_STATE
    mark.write_text("{not json")
    with pytest.raises(CrlError, match="unreadable"):
        crl_checks.highest_seen(mark)
    mark.write_text(json.dumps({"crl_number": -1}))
    with pytest.raises(CrlError, match="malformed"):
        crl_checks.highest_seen(mark)


def test_a_mark_that_cannot_be_written_does_not_lock_everyone_out(ours, tmp_path, caplog):
    """A kit mounted read-only (a container's) still admits; the mark is kept in memory."""
    hub = ours / "kits" / "hub"
    unwritable = tmp_path / "no-such-dir" / CRL_STATE
    revocation = Revocation(hub / "crl.pem", load_kit(hub).ca_cert, state_path=unwritable)
    site = load_kit(ours / "kits" / "bank-a").cert
    assert not revocation.is_revoked(site)
    assert "cannot record CRL number 1" in caplog.text
    old = (hub / "crl.pem").read_bytes()
    revoke(ours, "bank-b")
    assert not revocation.is_revoked(site)
    pki.write_public(hub / "crl.pem", old, replace=True)
    assert revocation.is_revoked(site)  # the in-memory mark still catches the rollback


def test_the_ca_refreshes_a_crl_with_the_next_number_and_parties_take_it(ours, capsys):
    hub = ours / "kits" / "hub"
    revocation = Revocation.from_kit(load_kit(hub))
    site = load_kit(ours / "kits" / "bank-a").cert
    assert not revocation.is_revoked(site)
    revoke(ours, "bank-b")
    assert main(["consortium", "crl", "--out", str(ours), "--days", "7"]) == 0
    assert "valid 7 days" in capsys.readouterr().out
    crl = pki.load_crl((hub / "crl.pem").read_bytes())
    assert pki.crl_number(crl) == 3
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=7, minutes=1)
    assert pki.is_revoked(load_kit(ours / "kits" / "bank-b").cert, crl)  # revocations kept
    assert not revocation.is_revoked(site)
    assert crl_checks.highest_seen(hub / CRL_STATE) == 3
    assert main(["consortium", "crl", "--out", str(ours), "--days", "0"]) == 2


# -- the CRL a coordinator delivers to sites ----------------------------------------------------


def _task(crl: bytes, **fields) -> pb.Task:
    return pb.Task(kind=pb.TASK_KIND_SECAGG, run_id="r", round=3, crl=crl, **fields)


def test_a_site_takes_the_cas_crl_from_the_coordinator_and_nothing_older_or_forged(ours, tmp_path):
    """The coordinator relays the CRL; it cannot forge one (the CA signs), roll it back (the
    site keeps the highest number it accepted, across restarts) or pass a stale one."""
    ca_cert = load_kit(ours / "kits" / "bank-a").ca_cert
    bank_b = load_kit(ours / "kits" / "bank-b").cert
    state = tmp_path / CRL_STATE
    audit: list[tuple[str, dict]] = []
    checks = CoordinatorChecks(
        lambda event, **p: audit.append((event, p)),
        anchors=False,
        crl=DeliveredCrl(ca_cert, state_path=state),
    )
    assert checks.crl is not None and checks.crl.is_revoked(bank_b)  # fail closed: no CRL yet
    first = (ours / "ca" / "crl.pem").read_bytes()
    assert checks.refusal(_task(first)) == ""
    assert not checks.crl.is_revoked(bank_b)
    assert audit == [("crl_accepted", {"round": 3, "crl_number": 1})]
    assert checks.refusal(_task(first)) == "" and len(audit) == 1  # news only once

    revoke(ours, "bank-b")
    assert checks.refusal(_task((ours / "ca" / "crl.pem").read_bytes())) == ""
    assert checks.crl.is_revoked(bank_b)
    assert crl_checks.highest_seen(state) == 2

    now = dt.datetime.now(dt.UTC)
    forged = _crl(
        _consortium(tmp_path / "theirs"), number=9, last=now, next_=now + dt.timedelta(days=1)
    )
    stale = _crl(ours, number=7, last=now - dt.timedelta(days=9), next_=now - dt.timedelta(days=1))
    for pem, words in (
        (first, "rolled back: CRL number 1 is lower than 2"),
        (forged, "not signed by ca.pem"),
        (stale, "stale"),
        (b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "not a readable PEM CRL"),
    ):
        reason = checks.refusal(_task(pem))
        assert "the CRL the coordinator sent is refused" in reason and words in reason, reason
        assert audit[-1][0] == "crl_refused"
        assert checks.crl.is_revoked(bank_b)  # the accepted CRL stays in force
    # a restarted site knows the mark from disk: the old CRL is refused on its first task
    restarted = DeliveredCrl(ca_cert, state_path=state)
    with pytest.raises(CrlError, match="rolled back"):
        restarted.offer(first)


def test_an_old_long_lived_crl_cannot_unrevoke_a_site_for_a_kit_issued_after_it(ours, tmp_path):
    """Red team (issue 17): a coordinator fed a new site the CRL from before a revocation.
    A kit records the CA's CRL number when it is issued, and CRLs live 30 days by default."""
    first = (ours / "ca" / "crl.pem").read_bytes()  # number 1, from init
    revoke(ours, "bank-b")  # number 2
    new_site = add_site(ours, "bank-new")
    kit = load_kit(new_site)
    assert kit.crl_floor == 2
    delivered = DeliveredCrl(kit.ca_cert, state_path=tmp_path / CRL_DELIVERED, floor=kit.crl_floor)
    with pytest.raises(CrlError, match="rolled back: CRL number 1 is lower than 2"):
        delivered.offer(first)
    assert delivered.is_revoked(load_kit(ours / "kits" / "bank-b").cert)  # still fail closed
    crl = pki.load_crl((ours / "ca" / "crl.pem").read_bytes())
    lifetime = crl.next_update_utc - crl.last_update_utc
    assert dt.timedelta(days=29) < lifetime <= dt.timedelta(days=30, minutes=5)  # clock skew
    assert delivered.offer((ours / "ca" / "crl.pem").read_bytes())


def test_a_site_kit_keeps_working_when_it_holds_an_old_crl_pem(ours, tmp_path):
    """Red team (issue 17): an operator who copied crl.pem into a site kit (as the README
    once said) could not restart the site once the coordinator delivered a newer CRL."""
    site = tmp_path / "bank-a"
    shutil.copytree(ours / "kits" / "bank-a", site)
    pki.write_public(site / "crl.pem", (ours / "ca" / "crl.pem").read_bytes())  # number 1
    kit = load_kit(site)
    revoke(ours, "bank-b")
    delivered = DeliveredCrl(kit.ca_cert, state_path=site / CRL_DELIVERED, floor=kit.crl_floor)
    assert delivered.offer((ours / "ca" / "crl.pem").read_bytes())  # number 2, recorded
    stale = _crl(ours, number=3, last=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                 next_=dt.datetime(2020, 2, 1, tzinfo=dt.UTC))  # fmt: skip
    pki.write_public(site / "crl.pem", stale, replace=True)
    restarted = load_kit(site)  # neither the delivered mark nor a stale crl.pem stops it
    assert restarted.crl_path is None and restarted.name == "bank-a"
    again = DeliveredCrl(kit.ca_cert, state_path=site / CRL_DELIVERED, floor=kit.crl_floor)
    assert again.highest == 2


def test_an_upgraded_site_keeps_its_old_mark_and_refuses_long_lived_crls(ours, tmp_path):
    """Red team 2 (issue 17): the mark moved to crl-delivered.json, so a site upgraded from
    crl-seen.json forgot it; and an 825-day CRL from before the upgrade stayed replayable."""
    ca_cert = load_kit(ours / "kits" / "bank-a").ca_cert
    site = tmp_path / "bank-a"
    site.mkdir()
    crl_checks.record_seen(site / CRL_STATE, 2)  # what the old release recorded
    delivered = DeliveredCrl(ca_cert, state_path=site / CRL_DELIVERED, floor=1)
    assert delivered.highest == 2
    now = dt.datetime.now(dt.UTC)
    old = _crl(ours, number=1, last=now - dt.timedelta(days=3), next_=now + dt.timedelta(days=800))
    with pytest.raises(CrlError, match="rolled back"):
        delivered.offer(old)
    long_lived = _crl(ours, number=5, last=now, next_=now + dt.timedelta(days=825))
    with pytest.raises(CrlError, match="valid for 825 days; a site takes CRLs valid at most 90"):
        delivered.offer(long_lived)
    assert delivered.offer(_crl(ours, number=6, last=now, next_=now + dt.timedelta(days=30)))
    with pytest.raises(ConsortiumError, match=r"--days: must be 1\.\.90"):
        refresh_crl(ours, days=825)
    refresh_crl(ours, days=90)  # the longest the CA may issue: sites take it (red team 3)
    assert DeliveredCrl(ca_cert).offer((ours / "ca" / "crl.pem").read_bytes())
