"""Signing identities: the kit's Ed25519 key and certificate, and trusting SecAgg keys by them.

Real certificates and real signatures throughout: a consortium is provisioned
once per module (plus a second one, whose CA nobody here trusts), kits that a
test alters are copies, and the SecAgg rounds use the real :class:`Crypto`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedops.client.secure_participant import secure_identity
from fedops.consortium import pki, signing
from fedops.consortium.crl import DeliveredCrl
from fedops.consortium.kit import Kit, KitError, load_kit
from fedops.consortium.kits import add_site, init_consortium, revoke, sign_manifest
from fedops.consortium.tls import Revocation
from fedops.core.params import InvalidUpdate
from fedops.core.secagg import ProtocolError
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.messages import (
    NeighbourKeys,
    SignedSurvivors,
    signed_message,
    survivors_message,
)
from fedops.core.secagg.server import SecAggServer
from fedops.crypto import Crypto, Identity, TrustedKeys
from fedops.wire import secagg as secagg_codec

SITES = ("bank-a", "bank-b", "bank-c", "bank-d")
CONTEXT = b"test-run\x00round-1"


def _provision(root: Path, name: str) -> Path:
    spec = {
        "name": name,
        "coordinator": {"name": "hub", "address": "127.0.0.1:8443"},
        "sites": [{"name": s} for s in SITES],
        "admins": [{"name": "alice"}],
    }
    (root / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    init_consortium(root / f"{name}.yaml", root / name)
    return root / name


@pytest.fixture(scope="module")
def banks(tmp_path_factory) -> Path:
    return _provision(tmp_path_factory.mktemp("signing"), "banks")


@pytest.fixture(scope="module")
def strangers(tmp_path_factory) -> Path:
    """Another consortium whose parties have the same names: only its CA differs."""
    return _provision(tmp_path_factory.mktemp("strangers"), "banks")


@pytest.fixture
def kit_copy(banks, tmp_path):
    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(banks / "kits" / name, dst)
        return dst

    return copy


def _kit(root: Path, name: str) -> Kit:
    return load_kit(root / "kits" / name)


def _refused(kit_dir: Path, file: str, words: str) -> None:
    with pytest.raises(KitError) as info:
        load_kit(kit_dir)
    assert str(kit_dir / file) in str(info.value), info.value
    assert words in str(info.value), info.value


# -- provisioning ----------------------------------------------------------------------------------


def test_every_kit_has_a_signing_certificate_for_its_party_and_for_signing_only(banks):
    ca = pki.load_cert((banks / "ca" / "ca.pem").read_bytes())
    for name, role in (("hub", "coordinator"), ("bank-a", "site"), ("alice", "admin")):
        kit = _kit(banks, name)
        cert = kit.signing_cert
        assert cert.subject == kit.cert.subject  # CN name, O consortium, OU role
        assert pki.issued_by(cert, ca)
        assert cert.serial_number != kit.cert.serial_number
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_cert_sign
        assert not (usage.key_encipherment or usage.key_agreement)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [signing.DOCUMENT_SIGNING]
        assert ExtendedKeyUsageOID.CLIENT_AUTH not in eku
        assert ExtendedKeyUsageOID.SERVER_AUTH not in eku
        signer = signing.certified_signer(cert, ca)
        assert (signer.name, signer.role, signer.consortium) == (name, role, "banks")
        mode = stat.S_IMODE((kit.directory / "signing.key").stat().st_mode)
        assert mode == 0o600, name
        manifest = json.loads((kit.directory / "manifest.json").read_text())
        assert {"signing.crt", "signing.key"} <= set(manifest["files"])


def test_the_kit_signing_identity_signs_what_its_certificate_verifies(banks):
    kit = _kit(banks, "bank-a")
    identity = kit.signing_identity()
    assert identity.certificate == kit.signing_cert_pem
    signer = signing.certified_signer(identity.certificate, kit.ca_cert)
    assert identity.public_pem() == signer.public_pem
    verify = TrustedKeys.from_pem({"bank-a": signer.public_pem})
    assert verify("bank-a", b"message", identity.sign(b"message"))
    assert "PRIVATE" not in repr(kit)


def test_a_tls_certificate_is_not_a_signing_certificate(banks):
    kit = _kit(banks, "bank-a")
    with pytest.raises(signing.CertificateError, match="not Ed25519"):
        signing.certified_signer(kit.cert_pem, kit.ca_cert)
    with pytest.raises(signing.CertificateError, match="not a certificate"):
        signing.certified_signer(b"garbage", kit.ca_cert)
    # DER is accepted as well as PEM
    der = kit.signing_cert.public_bytes(serialization.Encoding.DER)
    assert signing.certified_signer(der, kit.ca_cert).name == "bank-a"


def test_add_site_issues_a_signing_certificate_and_revoke_lists_both_serials(tmp_path):
    cons = _provision(tmp_path, "banks")
    kit = load_kit(add_site(cons, "bank-e"))
    serials = json.loads((cons / "ca" / "serials.json").read_text())
    assert serials["bank-e"]["signing_serial"] == format(kit.signing_cert.serial_number, "x")
    assert signing.certified_signer(kit.signing_cert, kit.ca_cert).name == "bank-e"

    result = revoke(cons, "bank-e")
    assert result.signing_serial == kit.signing_cert.serial_number
    crl = pki.load_crl((cons / "ca" / "crl.pem").read_bytes())
    assert pki.is_revoked(kit.cert, crl) and pki.is_revoked(kit.signing_cert, crl)
    other = _kit(cons, "bank-a")
    assert not pki.is_revoked(other.signing_cert, crl)


# -- load_kit refuses a broken signing identity ---------------------------------------------------


def test_a_tampered_signing_certificate_is_refused(kit_copy):
    kit_dir = kit_copy("bank-a")
    pem = (kit_dir / "signing.crt").read_bytes()
    (kit_dir / "signing.crt").write_bytes(pem.replace(b"\nM", b"\nN", 1))
    _refused(kit_dir, "signing.crt", "sha256 does not match")


def test_another_partys_signing_certificate_is_refused_even_re_signed(kit_copy, banks):
    kit_dir = kit_copy("bank-a")
    ca_key = pki.load_key((banks / "ca" / "ca_key.pem").read_bytes())
    for other in ("bank-b", "alice"):
        shutil.copy(banks / "kits" / other / "signing.crt", kit_dir / "signing.crt")
        sign_manifest(kit_dir, ca_key)  # an insider's kit: the manifest is the CA's
        _refused(kit_dir, "signing.crt", f"certifies {other!r}")


def test_a_mismatched_signing_key_is_refused(kit_copy, banks):
    kit_dir = kit_copy("bank-a")
    ca_key = pki.load_key((banks / "ca" / "ca_key.pem").read_bytes())
    (kit_dir / "signing.key").unlink()
    pki.write_private(kit_dir / "signing.key", Identity.generate().private_pem())
    sign_manifest(kit_dir, ca_key)
    _refused(kit_dir, "signing.key", "does not match signing.crt")


def test_a_signing_certificate_from_another_ca_is_refused(kit_copy, strangers, banks):
    kit_dir = kit_copy("bank-a")
    shutil.copy(strangers / "kits" / "bank-a" / "signing.crt", kit_dir / "signing.crt")
    sign_manifest(kit_dir, pki.load_key((banks / "ca" / "ca_key.pem").read_bytes()))
    _refused(kit_dir, "signing.crt", "not issued by the consortium CA")


def test_a_tls_certificate_as_signing_certificate_is_refused(kit_copy, banks):
    kit_dir = kit_copy("bank-a")
    shutil.copy(kit_dir / "cert.pem", kit_dir / "signing.crt")
    sign_manifest(kit_dir, pki.load_key((banks / "ca" / "ca_key.pem").read_bytes()))
    _refused(kit_dir, "signing.crt", "not a signing certificate")


def test_a_readable_signing_key_is_refused(kit_copy):
    kit_dir = kit_copy("bank-a")
    os.chmod(kit_dir / "signing.key", 0o640)
    _refused(kit_dir, "signing.key", "mode 0640 lets group or others read the key")


def test_a_kit_without_a_signing_identity_is_refused(kit_copy, banks):
    kit_dir = kit_copy("bank-a")
    (kit_dir / "signing.crt").unlink()
    (kit_dir / "signing.key").unlink()
    sign_manifest(kit_dir, pki.load_key((banks / "ca" / "ca_key.pem").read_bytes()))
    _refused(kit_dir, "manifest.json", "does not list signing.crt")


# -- the SecAgg certificate verifier ---------------------------------------------------------------


def _signed(kit: Kit, message: bytes = b"keys") -> tuple[bytes, bytes]:
    identity = kit.signing_identity()
    return identity.sign(message), identity.certificate


def test_the_verifier_accepts_a_site_signing_for_itself(banks):
    verify = signing.CertificateVerifier(_kit(banks, "bank-b").ca_cert)
    signature, cert = _signed(_kit(banks, "bank-a"))
    assert verify("bank-a", b"keys", signature, cert)
    assert not verify("bank-a", b"other keys", signature, cert)  # a bad signature
    assert not verify("bank-a", b"keys", signature, b"")  # no certificate
    assert verify.problem("bank-a", b"") == "no signing certificate"


@pytest.mark.parametrize(
    ("party", "claimed", "problem"),
    [
        ("alice", "alice", "certifies role 'admin', not 'site'"),
        ("hub", "hub", "certifies role 'coordinator', not 'site'"),
        ("bank-a", "bank-b", "certifies 'bank-a', not 'bank-b'"),
    ],
)
def test_the_verifier_refuses_other_roles_and_other_names(banks, party, claimed, problem):
    verify = signing.CertificateVerifier(_kit(banks, "bank-b").ca_cert)
    signature, cert = _signed(_kit(banks, party))
    assert verify.problem(claimed, cert) == problem
    assert not verify(claimed, b"keys", signature, cert)


def test_the_verifier_refuses_another_cas_certificate(banks, strangers):
    verify = signing.CertificateVerifier(_kit(banks, "bank-b").ca_cert)
    signature, cert = _signed(_kit(strangers, "bank-a"))  # same names, another CA
    assert not verify("bank-a", b"keys", signature, cert)
    assert "not issued by the consortium CA" in (verify.problem("bank-a", cert) or "")


def test_the_verifier_refuses_a_tls_certificate(banks):
    verify = signing.CertificateVerifier(_kit(banks, "bank-b").ca_cert)
    kit = _kit(banks, "bank-a")
    assert "not Ed25519" in (verify.problem("bank-a", kit.cert_pem) or "")


def test_the_verifier_refuses_a_revoked_site(tmp_path):
    cons = _provision(tmp_path, "banks")
    ca = _kit(cons, "bank-b").ca_cert
    crl = Revocation(cons / "ca" / "crl.pem", ca)
    verify = signing.CertificateVerifier(ca, revoked=crl.is_revoked)
    signature, cert = _signed(_kit(cons, "bank-a"))
    assert verify("bank-a", b"keys", signature, cert)
    revoke(cons, "bank-a")
    assert verify.problem("bank-a", cert) == "revoked"
    assert not verify("bank-a", b"keys", signature, cert)
    assert verify("bank-c", b"keys", *_signed(_kit(cons, "bank-c")))


def test_the_verifier_refuses_an_expired_certificate(banks):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=5000)
    verify = signing.CertificateVerifier(_kit(banks, "bank-b").ca_cert, clock=lambda: later)
    signature, cert = _signed(_kit(banks, "bank-a"))
    assert "expired" in (verify.problem("bank-a", cert) or "")
    assert not verify("bank-a", b"keys", signature, cert)


# -- SecAgg+ with kit identities -------------------------------------------------------------------


def _round(
    root: Path, names: tuple[str, ...], revoked=None
) -> tuple[SecAggServer, dict[int, SecAggClient]]:
    crypto = Crypto()
    server = SecAggServer(context=CONTEXT, cohort=names, vector_length=4, clip=1.0, crypto=crypto)
    clients = {
        i: SecAggClient(
            server.setup_for(i),
            crypto,
            **secure_identity(
                None, None, names[i - 1], kit=_kit(root, names[i - 1]), revoked=revoked
            ),
        )
        for i in server.clients
    }
    return server, clients


def test_kit_sites_refuse_a_revoked_sites_keys_by_the_crl_the_coordinator_delivers(tmp_path):
    """Site kits hold no CRL; a malicious coordinator that seats a revoked (stolen) identity
    among a victim's neighbours is caught by the CRL the coordinator itself must deliver
    (signed by the CA, so it cannot leave the revocation out)."""
    cons = _provision(tmp_path, "banks")
    ca = _kit(cons, "bank-b").ca_cert
    delivered = DeliveredCrl(ca)
    server, clients = _round(cons, SITES, revoked=delivered.is_revoked)
    requests = _advertised(server, clients)
    with pytest.raises(ProtocolError, match="bank-a"):  # no CRL yet: every peer refused
        clients[2].share(requests[2])

    revoke(cons, "bank-a")
    assert delivered.offer((cons / "ca" / "crl.pem").read_bytes())
    server, clients = _round(cons, SITES, revoked=delivered.is_revoked)
    requests = _advertised(server, clients)
    with pytest.raises(ProtocolError, match="bank-a"):
        clients[2].share(requests[2])  # bank-a is bank-b's neighbour: refused, revoked
    verify = signing.CertificateVerifier(ca, revoked=delivered.is_revoked)
    assert verify.problem("bank-a", _kit(cons, "bank-a").signing_cert_pem) == "revoked"
    assert verify("bank-c", b"keys", *_signed(_kit(cons, "bank-c")))


def _advertised(server: SecAggServer, clients: dict[int, SecAggClient]) -> dict[int, NeighbourKeys]:
    for i, client in clients.items():
        reply, _ = secagg_codec.reply_to_proto(client.advertise(10))  # over the wire and back
        server.receive_keys(i, secagg_codec.reply_from_proto(reply, {}))
    requests = server.close_keys()
    return {
        i: secagg_codec.request_from_proto(secagg_codec.request_to_proto(r))
        for i, r in requests.items()
    }


def test_kit_sites_sign_their_keys_and_accept_each_others(banks):
    server, clients = _round(banks, SITES)
    requests = _advertised(server, clients)
    for keys in requests[1].keys:
        assert keys.identity == SITES[keys.index - 1]
        assert keys.certificate == _kit(banks, keys.identity).signing_cert_pem
    for i, request in requests.items():
        server.receive_shares(i, clients[i].share(request))


def _over_the_wire(request):
    return secagg_codec.request_from_proto(secagg_codec.request_to_proto(request))


def test_kit_sites_sign_the_survivor_set_and_the_round_sums_exactly(banks):
    server, clients = _round(banks, SITES)
    for i, request in _advertised(server, clients).items():
        server.receive_shares(i, clients[i].share(request))
    inputs = {}
    for i, request in server.close_shares().items():
        if i != 4:  # bank-d drops before masking
            inputs[i] = np.full(4, 10 * i, np.uint32)
            server.receive_masked(i, clients[i].mask(_over_the_wire(request), inputs[i]))
    for i, request in server.close_masked().items():
        reply, _ = secagg_codec.reply_to_proto(clients[i].sign_survivors(_over_the_wire(request)))
        server.receive_signature(i, secagg_codec.reply_from_proto(reply, {}))
    unmask = server.close_consistency()
    for i, request in unmask.items():
        assert request.survivors == (1, 2, 3)
        for signed in request.signatures:  # each with the certificate that vouches for it
            assert len(signed.signature) == 64
            assert signed.certificate == _kit(banks, SITES[signed.index - 1]).signing_cert_pem
        server.receive_reveal(i, clients[i].unmask(_over_the_wire(request)))
    result = server.finish()
    assert result.survivors == (1, 2, 3)
    np.testing.assert_array_equal(result.total, np.full(4, 60, np.uint32))


@pytest.mark.parametrize(
    ("forger", "why"),
    [
        ("hub", "certifies role 'coordinator'"),
        ("strangers-bank-b", "not issued by the consortium CA"),
        ("bank-c-for-bank-b", "certifies 'bank-c', not 'bank-b'"),
    ],
)
def test_survivor_set_signatures_the_coordinator_makes_do_not_count(
    banks, strangers, forger, why, caplog
):
    """A quorum (3 of the 4 banks) must sign the set; the coordinator cannot make up the
    missing ones with its own key, another CA's site or a genuine site posing as another."""
    server, clients = _round(banks, SITES)
    for i, request in _advertised(server, clients).items():
        server.receive_shares(i, clients[i].share(request))
    for i, request in server.close_shares().items():
        server.receive_masked(i, clients[i].mask(request, np.zeros(4, np.uint32)))
    consistency = server.close_masked()
    for i in (1, 2, 3):  # bank-d never signs
        server.receive_signature(i, clients[i].sign_survivors(consistency[i]))
    request = server.close_consistency()[1]
    assert [s.index for s in request.signatures] == [1, 2, 3]
    kit = {
        "hub": _kit(banks, "hub"),
        "strangers-bank-b": _kit(strangers, "bank-b"),
        "bank-c-for-bank-b": _kit(banks, "bank-c"),
    }[forger]
    signer = kit.signing_identity()
    forged = SignedSurvivors(
        index=2,
        signature=signer.sign(survivors_message(server.bound, request.survivors)),
        certificate=signer.certificate,
    )
    signatures = (request.signatures[0], forged)  # bank-a's, and bank-b's made up
    with pytest.raises(ProtocolError, match="only 1 valid committee signatures over this"):
        clients[1].unmask(dataclasses.replace(request, signatures=signatures))
    assert why in caplog.text


def _substituted(requests, target: int, victim: int, **changes) -> NeighbourKeys:
    return NeighbourKeys(
        keys=tuple(
            dataclasses.replace(k, **changes) if k.index == victim else k
            for k in requests[target].keys
        )
    )


def _keys_signed_by(kit: Kit, keys, context: bytes, identity: str | None = None) -> dict:
    """What a coordinator holding ``kit`` could send in place of ``keys``: its own signature
    (over the round's bound ``context``, so only the certificate can give it away)."""
    signer = kit.signing_identity()
    message = signed_message(context, keys.index, keys.cipher_key, keys.mask_key)
    return {
        "identity": identity or kit.name,
        "signature": signer.sign(message),
        "certificate": signer.certificate,
    }


@pytest.mark.parametrize(
    ("forger", "why"),
    [
        ("hub", "certifies role 'coordinator'"),
        ("alice", "certifies role 'admin'"),
        ("strangers-bank-b", "not issued by the consortium CA"),
        ("bank-c-for-bank-b", "certifies 'bank-c', not 'bank-b'"),
    ],
)
def test_the_coordinator_cannot_substitute_a_sites_keys(banks, strangers, forger, why, caplog):
    """Keys re-signed by the coordinator's or an admin's signing key, by another CA's site, or
    by a genuine site claiming to be another, are refused where the site checks them."""
    server, clients = _round(banks, SITES)
    requests = _advertised(server, clients)
    victim = next(k for k in requests[1].keys if k.identity == "bank-b")
    fresh = Crypto().keypair()[1]
    forged = dataclasses.replace(victim, mask_key=fresh)
    kit, claimed = {
        "hub": (_kit(banks, "hub"), "bank-b"),
        "alice": (_kit(banks, "alice"), "bank-b"),
        "strangers-bank-b": (_kit(strangers, "bank-b"), "bank-b"),
        "bank-c-for-bank-b": (_kit(banks, "bank-c"), "bank-b"),
    }[forger]
    changes = {"mask_key": fresh, **_keys_signed_by(kit, forged, server.bound, claimed)}
    with pytest.raises(ProtocolError, match="not signed by 'bank-b'"):
        clients[1].share(_substituted(requests, 1, victim.index, **changes))
    assert why in caplog.text


def test_a_sites_own_certificate_with_substituted_keys_is_refused(banks):
    server, clients = _round(banks, SITES)
    requests = _advertised(server, clients)
    victim = next(k for k in requests[1].keys if k.identity == "bank-b")
    with pytest.raises(ProtocolError, match="not signed by 'bank-b'"):
        clients[1].share(_substituted(requests, 1, victim.index, mask_key=Crypto().keypair()[1]))


def test_flags_take_the_place_of_the_kit_for_their_half(banks, tmp_path):
    kit = _kit(banks, "bank-a")
    own = Identity.generate()
    own.save(tmp_path / "id.pem")
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "bank-b.pub").write_bytes(own.public_pem())
    both = secure_identity(tmp_path / "id.pem", tmp_path / "trusted", "bank-a", kit=kit)
    assert "certificate" not in both and isinstance(both["verify"], TrustedKeys)
    assert both["sign"](b"x") == own.sign(b"x")
    kit_only = secure_identity(None, None, "bank-a", kit=kit)
    assert isinstance(kit_only["verify"], signing.CertificateVerifier)
    assert kit_only["certificate"] == kit.signing_cert_pem
    assert secure_identity(None, None, "bank-a") == {"identity": "bank-a"}


def test_an_oversized_certificate_is_refused_on_the_wire(banks):
    _, clients = _round(banks, SITES[:3])
    keys = dataclasses.replace(clients[1].advertise(10), certificate=b"x" * 10_000)
    reply, _ = secagg_codec.reply_to_proto(keys)
    with pytest.raises(InvalidUpdate, match="certificate"):
        secagg_codec.reply_from_proto(reply, {})
