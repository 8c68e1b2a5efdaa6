"""Enrolment by CSR: keys made at each party, certificates at the CA, kits assembled at the party.

Real keys, real CSRs, real certificates. What is asserted is what the threat
model needs: the CA's folders never hold a party's private key (every file it
wrote is read back), the CA refuses requests it did not expect, and a party
refuses a signed bundle from a CA other than the one it was told of out of band.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fedops.cli import main
from fedops.consortium import pki
from fedops.consortium.enrol import EnrolError, assemble, read_request, request, sign_requests
from fedops.consortium.kit import KitError, load_kit
from fedops.consortium.kits import init_ca, init_consortium, register_site
from fedops.consortium.spec import ConsortiumError
from fedops.crypto import Identity

SPEC = {
    "name": "banks",
    "coordinator": {"name": "hub", "address": "127.0.0.1:8443"},
    "sites": [{"name": "bank-a", "policy": {"max_rounds": 7}}, {"name": "bank-b"}],
    "admins": [{"name": "alice"}],
    "observers": [{"name": "auditor"}],
}
PARTIES = {"hub": "coordinator", "bank-a": "site", "bank-b": "site", "auditor": "observer"}


def _ca(root: Path, name: str = "banks") -> tuple[Path, str]:
    """A CA made without keys for anyone; its folder and its fingerprint."""
    root.mkdir(parents=True, exist_ok=True)
    spec_file = root / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump({**SPEC, "name": name}))
    init_ca(spec_file, root / name)
    ca_cert = pki.load_cert((root / name / "ca" / "ca.pem").read_bytes())
    return root / name, pki.fingerprint(ca_cert)


@pytest.fixture
def ca(tmp_path) -> tuple[Path, str]:
    return _ca(tmp_path / "ca-host")


def _enrol(tmp_path: Path, ca_root: Path, pin: str, names: dict[str, str]) -> dict[str, Path]:
    """Each party requests at its own folder, the CA signs, each party assembles."""
    csrs = [request(n, r, tmp_path / "party" / n) for n, r in names.items()]
    bundles = sign_requests(csrs, ca_root, tmp_path / "signed")
    for bundle in bundles:
        assemble(tmp_path / "party" / bundle.name, bundle, pin)
    return {n: tmp_path / "party" / n for n in names}


def test_a_csr_enrolled_party_gets_a_verified_kit_whose_keys_never_left_it(tmp_path, ca):
    ca_root, pin = ca
    keys = {}
    for name, role in PARTIES.items():
        request(name, role, tmp_path / "party" / name)
        keys[name] = {
            f: (tmp_path / "party" / name / f).read_bytes() for f in ("key.pem", "signing.key")
        }
    csrs = [tmp_path / "party" / n / f"{n}.csr" for n in PARTIES]
    bundles = sign_requests(csrs, ca_root, tmp_path / "signed")
    assert [b.name for b in bundles] == list(PARTIES)

    # everything the CA wrote or holds: no private key but its own, none of the parties' bytes
    for folder in (ca_root, tmp_path / "signed"):
        for path in folder.rglob("*"):
            if not path.is_file() or path == ca_root / "ca" / "ca_key.pem":
                continue
            data = path.read_bytes()
            assert b"PRIVATE KEY" not in data, path
            for party in keys.values():
                assert all(secret not in data for secret in party.values()), path
    for bundle in bundles:
        assert {p.name for p in bundle.iterdir()} <= {
            "ca.pem",
            "cert.pem",
            "signing.crt",
            "kit.json",
            "manifest.json",
            "crl.pem",
        }

    for bundle in bundles:
        kit = assemble(tmp_path / "party" / bundle.name, bundle, pin)
        name = bundle.name
        assert (kit.name, kit.role, kit.consortium) == (name, PARTIES[name], "banks")
        assert kit.ca_fingerprint == pin
        assert kit.key_pem == keys[name]["key.pem"]  # the party's own key, untouched
        assert kit.signing_key_pem == keys[name]["signing.key"]
        assert pki.same_key(kit.cert, pki.load_key(kit.key_pem))
        assert Identity.from_pem(kit.signing_key_pem, kit.signing_cert_pem).public_pem()
        for private in ("key.pem", "signing.key"):
            mode = stat.S_IMODE((kit.directory / private).stat().st_mode)
            assert mode == 0o600, (name, private)
        assert not list(kit.directory.glob("*.csr"))
        info = json.loads((kit.directory / "kit.json").read_text())
        assert info["ca_fingerprint"] == pin
        assert load_kit(kit.directory, ca_fingerprint=pin).name == name
    assert load_kit(tmp_path / "party" / "bank-a").policy == {"max_rounds": 7}
    hub = load_kit(tmp_path / "party" / "hub")
    assert hub.crl_path is not None
    sans = hub.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    serials = json.loads((ca_root / "ca" / "serials.json").read_text())
    assert {n: e["role"] for n, e in serials.items()} == PARTIES
    assert all(e["enrolled"] == "csr" for e in serials.values())


def _refused_batch(tmp_path: Path, ca_root: Path, csrs: list[Path], match: str) -> None:
    before = (ca_root / "ca" / "serials.json").read_bytes()
    with pytest.raises(ConsortiumError, match=match):
        sign_requests(csrs, ca_root, tmp_path / "signed")
    assert (ca_root / "ca" / "serials.json").read_bytes() == before  # nothing issued
    assert not (tmp_path / "signed").exists() or not any((tmp_path / "signed").iterdir())


def test_the_ca_refuses_requests_it_did_not_expect_and_issues_none_of_the_batch(tmp_path, ca):
    ca_root, _ = ca
    good = request("bank-a", "site", tmp_path / "a")
    as_coordinator = request("bank-b", "coordinator", tmp_path / "b")
    stranger = request("mallory", "site", tmp_path / "m")
    other = request("auditor", "observer", tmp_path / "o", consortium="strangers")
    _refused_batch(tmp_path, ca_root, [good, as_coordinator], "listed as 'site'")
    _refused_batch(tmp_path, ca_root, [good, stranger], "'mallory' is not a party of 'banks'")
    _refused_batch(tmp_path, ca_root, [good, other], "for consortium 'strangers'")
    again = request("bank-a", "site", tmp_path / "a2")
    _refused_batch(tmp_path, ca_root, [good, again], "already has certificates")

    # a request altered after it was signed: its signature no longer verifies
    text = good.read_bytes()
    tls_block, signing_block = text.split(b"-----END CERTIFICATE REQUEST-----\n", 1)
    der = bytearray(x509.load_pem_x509_csr(text).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the ECDSA signature
    forged = tmp_path / "forged.csr"
    body = base64.encodebytes(bytes(der))
    forged.write_bytes(
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + body
        + b"-----END CERTIFICATE REQUEST-----\n"
        + signing_block
    )
    with pytest.raises(EnrolError, match="does not verify"):
        read_request(forged)
    one_only = tmp_path / "one.csr"
    one_only.write_bytes(tls_block + b"-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(EnrolError, match="expected two CSRs"):
        read_request(one_only)

    assert [b.name for b in sign_requests([good], ca_root, tmp_path / "signed")] == ["bank-a"]
    _refused_batch(tmp_path / "later", ca_root, [again], "'bank-a' already has certificates")


def test_a_bundle_from_another_ca_is_refused_before_anything_is_copied(tmp_path, ca):
    ca_root, pin = ca
    theirs, their_pin = _ca(tmp_path / "attacker")
    party = tmp_path / "party" / "bank-a"
    csr = request("bank-a", "site", party)
    before = {p.name: p.read_bytes() for p in party.iterdir()}
    (evil,) = sign_requests([csr], theirs, tmp_path / "evil")  # an attacker's CA signs it too
    with pytest.raises(EnrolError, match="not from your consortium's CA"):
        assemble(party, evil, pin)
    with pytest.raises(EnrolError, match="--ca-fingerprint"):
        assemble(party, evil, "not-hex")
    assert {p.name: p.read_bytes() for p in party.iterdir()} == before

    (good,) = sign_requests([csr], ca_root, tmp_path / "signed")
    (good / "kit.json").write_text((good / "kit.json").read_text().replace("bank-a", "bank-b"))
    with pytest.raises(KitError, match="sha256 does not match"):
        assemble(party, good, pin)
    assert {p.name: p.read_bytes() for p in party.iterdir()} == before  # rolled back
    assert their_pin != pin


def test_request_never_replaces_a_key_and_checks_its_role(tmp_path):
    request("bank-a", "site", tmp_path / "a")
    with pytest.raises(EnrolError, match="refusing to replace a key"):
        request("bank-a", "site", tmp_path / "a")
    with pytest.raises(EnrolError, match="--role"):
        request("bank-b", "ca", tmp_path / "b")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700


def test_init_makes_no_keys_unless_asked_and_add_site_lets_a_new_site_enrol(tmp_path, ca):
    ca_root, pin = ca
    assert not (ca_root / "kits").exists()
    assert json.loads((ca_root / "ca" / "serials.json").read_text()) == {}
    with pytest.raises(ConsortiumError, match="not a party"):
        sign_requests([request("bank-c", "site", tmp_path / "c0")], ca_root, tmp_path / "s0")
    register_site(ca_root, "bank-c", {"consent": True})
    with pytest.raises(ConsortiumError, match="already in the consortium"):
        register_site(ca_root, "Bank-C")
    kits = _enrol(tmp_path, ca_root, pin, {"bank-c": "site"})
    assert load_kit(kits["bank-c"], ca_fingerprint=pin).policy == {"consent": True}

    demo = tmp_path / "demo.yaml"
    demo.write_text(yaml.safe_dump(SPEC))
    assert len(init_consortium(demo, tmp_path / "demo")) == len(PARTIES) + 1  # + alice


def test_the_cli_walkthrough_request_sign_assemble(tmp_path, capsys):
    spec = tmp_path / "banks.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert main(["consortium", "init", str(spec), "--out", str(tmp_path / "cons")]) == 0
    printed = capsys.readouterr()
    assert "No keys made here" in printed.out and "WARNING" not in printed.err
    pin = printed.out.split("CA fingerprint (sha256): ")[1].split()[0]
    ca_cert = pki.load_cert((tmp_path / "cons" / "ca" / "ca.pem").read_bytes())
    assert pin == ca_cert.fingerprint(hashes.SHA256()).hex()

    site = tmp_path / "site"
    assert main(["consortium", "request", "bank-a", "--role", "site", "--out", str(site)]) == 0
    signed = tmp_path / "signed"
    csr = str(site / "bank-a.csr")
    assert (
        main(["consortium", "sign", csr, "--ca", str(tmp_path / "cons"), "--out", str(signed)]) == 0
    )
    assert (
        main(
            [
                "consortium",
                "sign",
                csr,
                "--ca",
                str(tmp_path / "cons" / "ca"),
                "--out",
                str(tmp_path / "s2"),
            ]
        )
        == 2
    )
    assert "already has certificates" in capsys.readouterr().err
    wrong = "00" * 32
    args = ["consortium", "assemble", str(site), "--signed", str(signed / "bank-a")]
    assert main([*args, "--ca-fingerprint", wrong]) == 2
    assert "not from your consortium's CA" in capsys.readouterr().err
    assert main([*args, "--ca-fingerprint", pin.upper()]) == 0
    assert f"--ca-fingerprint {pin}" in capsys.readouterr().out

    assert main(["consortium", "add-site", "bank-z", "--out", str(tmp_path / "cons")]) == 0
    assert not (tmp_path / "cons" / "kits").exists()
    assert (
        main(["consortium", "add-site", "bank-y", "--out", str(tmp_path / "cons"), "--demo-keys"])
        == 0
    )
    assert "generated HERE" in capsys.readouterr().err
    assert load_kit(tmp_path / "cons" / "kits" / "bank-y", ca_fingerprint=pin).name == "bank-y"
