"""Consortium provisioning: the spec's errors, the CA and kits on disk, and every kind of tampering.

Each tampering test changes one thing in a fresh kit and expects
:func:`load_kit` to refuse it with a message naming the file. Where the
manifest's hashes would catch the change first, a second variant re-signs
the manifest with the real CA key (an insider's or a buggy tool's kit) so
that the deeper check (the certificate's signature, the key pair, the role)
is the one that refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from fedops.consortium import pki
from fedops.consortium.commands import add_site_command, init_command, revoke_command
from fedops.consortium.kit import KitError, load_kit
from fedops.consortium.kits import add_site, init_consortium, revoke, sign_manifest
from fedops.consortium.spec import ConsortiumError, SpecError, load_spec, parse_spec

EXAMPLE = Path(__file__).resolve().parents[3] / "fedops" / "configs" / "consortium" / "example.yaml"

SPEC = {
    "name": "banks",
    "coordinator": {"name": "hub", "address": "coordinator.example.org:8443"},
    "sites": [
        {"name": "bank-a", "policy": {"max_epsilon": 8, "max_rounds": 10, "consent": True}},
        {"name": "bank-b"},
    ],
    "admins": [{"name": "alice"}],
    "observers": [{"name": "auditor"}],
}


def _spec(**changes):
    spec = json.loads(json.dumps(SPEC))
    spec.update(changes)
    return spec


@pytest.fixture(scope="module")
def consortium(tmp_path_factory) -> Path:
    """A provisioned consortium, shared read-only; tests that alter a kit copy it first."""
    root = tmp_path_factory.mktemp("consortium")
    spec_file = root / "consortium.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    init_consortium(spec_file, root / "out")
    return root / "out"


@pytest.fixture
def kit_copy(consortium, tmp_path):
    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(consortium / "kits" / name, dst)  # copytree keeps the modes
        return dst

    return copy


def _ca_key(consortium: Path):
    return pki.load_key((consortium / "ca" / "ca_key.pem").read_bytes())


def _refused(kit_dir: Path, file: str, words: str) -> None:
    with pytest.raises(KitError) as info:
        load_kit(kit_dir)
    message = str(info.value)
    assert str(kit_dir / file) in message, message
    assert words in message, message


# -- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"sites": [{"name": "bank-a"}, {"name": "bank-b"}, {"name": "bank-a"}]},
            "sites[2].name: duplicate name 'bank-a'",
        ),
        ({"admins": [{"name": "BANK-A"}]}, "admins[0].name: duplicate name 'BANK-A'"),
        ({"observers": [{"name": "hub"}]}, "observers[0].name: duplicate name 'hub'"),
        ({"sites": [{"name": "-bad"}]}, "sites[0].name: invalid name '-bad'"),
        ({"sites": [{"name": "a" * 65}]}, "sites[0].name: invalid name"),
        ({"sites": [{"name": "a/b"}]}, "sites[0].name: invalid name 'a/b'"),
        ({"sites": [{"nome": "x"}]}, "sites[0].nome: unknown key"),
        ({"sites": [{"name": 7}]}, "sites[0].name: expected a string, got int"),
        ({"sites": []}, "sites: needs at least one entry"),
        ({"sites": {"name": "x"}}, "sites: expected a list, got dict"),
        ({"admins": None}, "admins: missing"),
        ({"name": "bad name"}, "name: invalid name 'bad name'"),
        ({"coordinator": {"name": "hub"}}, "coordinator.address: missing"),
        ({"coordinator": {"name": "hub", "address": "hub"}}, "coordinator.address: expected"),
        ({"coordinator": {"name": "hub", "address": "hub:99999"}}, "coordinator.address: port"),
        ({"coordinator": {"name": "hub", "address": "::1:80"}}, "coordinator.address: write an"),
        ({"colour": "blue"}, "colour: unknown key"),
        (
            {"sites": [{"name": "x", "policy": {"max_epsilon": -1}}]},
            "sites[0].policy.max_epsilon: a positive number",
        ),
        (
            {"sites": [{"name": "x", "policy": {"max_rounds": 2.5}}]},
            "sites[0].policy.max_rounds: a positive integer",
        ),
        (
            {"sites": [{"name": "x", "policy": {"max_epochs": 0}}]},
            "sites[0].policy.max_epochs: a positive integer",
        ),
        (
            {"sites": [{"name": "x", "policy": {"max_lr": float("nan")}}]},
            "sites[0].policy.max_lr: a positive number",
        ),
        (
            {"sites": [{"name": "x", "policy": {"allowed_tasks": ["abc"]}}]},
            "sites[0].policy.allowed_tasks[0]: not a sha256 digest",
        ),
        (
            {"sites": [{"name": "x", "policy": {"consent": "yes"}}]},
            "sites[0].policy.consent: true or false",
        ),
        (
            {"sites": [{"name": "x", "policy": {"consent_file": 3}}]},
            "sites[0].policy.consent_file: a path",
        ),
        (
            {"sites": [{"name": "x", "policy": {"max_epsilom": 1}}]},
            "sites[0].policy.max_epsilom: unknown key",
        ),
    ],
)
def test_spec_errors_name_the_key(changes, expected):
    with pytest.raises(SpecError) as info:
        parse_spec(_spec(**changes))
    assert str(info.value).startswith(expected), str(info.value)


def test_spec_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read"):
        load_spec(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML"):
        load_spec(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    with pytest.raises(SpecError, match=r"\(top level\): expected a mapping"):
        load_spec(listed)


def test_a_kit_policy_is_what_the_site_policy_reads(consortium):
    from fedops.tasks.site_policy import SitePolicy

    policy = (
        parse_spec(
            _spec(sites=[{"name": "x", "policy": {"max_rounds": 2, "consent_file": "c.json"}}])
        )
        .sites[0]
        .policy
    )
    assert SitePolicy.from_mapping(policy).max_rounds == 2
    capped = parse_spec(_spec(sites=[{"name": "x", "policy": {"max_epochs": 3, "max_lr": 0.2}}]))
    caps = SitePolicy.from_mapping(capped.sites[0].policy).train_caps
    assert (caps.max_epochs, caps.max_batch_size, caps.max_lr) == (3, None, 0.2)
    for spec_site in load_spec(EXAMPLE).sites:
        assert SitePolicy.from_mapping(spec_site.policy).consent is True
    kit = load_kit(consortium / "kits" / "bank-a")
    assert SitePolicy.from_mapping(kit.policy).max_epsilon == 8.0


def test_the_example_parses_with_its_parties_and_hosts():
    spec = load_spec(EXAMPLE)
    assert spec.coordinator.address == "127.0.0.1:8443"
    assert spec.coordinator.hosts() == ("127.0.0.1", "localhost")
    assert [p.role for p in (*spec.sites, *spec.admins, *spec.observers)] == [
        "site",
        "site",
        "site",
        "admin",
        "observer",
    ]
    assert all(p.policy["consent"] is True for p in spec.sites)
    assert {"max_epsilon", "max_rounds", "allowed_tasks"} <= set(spec.sites[0].policy)
    ipv6 = parse_spec(_spec(coordinator={"name": "hub", "address": "[::1]:9000"}))
    assert (ipv6.coordinator.host, ipv6.coordinator.port) == ("::1", 9000)


# -- the CA and the kits ---------------------------------------------------------------------------


def test_init_creates_the_ca_and_every_kit_with_private_keys(consortium):
    ca_dir = consortium / "ca"
    for name in ("ca.pem", "ca_key.pem", "crl.pem", "serials.json"):
        assert (ca_dir / name).is_file(), name
    assert stat.S_IMODE((ca_dir / "ca_key.pem").stat().st_mode) == 0o600
    serials = json.loads((ca_dir / "serials.json").read_text())
    assert {n: e["role"] for n, e in serials.items()} == {
        "hub": "coordinator",
        "bank-a": "site",
        "bank-b": "site",
        "alice": "admin",
        "auditor": "observer",
    }
    assert not any(e["revoked"] for e in serials.values())
    assert len({e[k] for e in serials.values() for k in ("serial", "signing_serial")}) == 10

    ca_cert = pki.load_cert((ca_dir / "ca.pem").read_bytes())
    for name, entry in serials.items():
        kit_dir = consortium / "kits" / name
        expected = {"cert.pem", "key.pem", "ca.pem", "kit.json", "manifest.json"}
        expected |= {"signing.crt", "signing.key"}
        if entry["role"] == "coordinator":
            expected.add("crl.pem")
        assert {p.name for p in kit_dir.iterdir()} == expected, name
        assert stat.S_IMODE((kit_dir / "key.pem").stat().st_mode) == 0o600, name
        assert stat.S_IMODE((kit_dir / "signing.key").stat().st_mode) == 0o600, name
        kit = load_kit(kit_dir)
        assert (kit.name, kit.role, kit.consortium) == (name, entry["role"], "banks")
        assert kit.coordinator_address == "coordinator.example.org:8443"
        assert kit.coordinator_name == "hub"
        cert = kit.cert
        assert format(cert.serial_number, "x") == entry["serial"]
        assert (pki.name_of(cert), pki.role_of(cert), pki.consortium_of(cert)) == (
            name,
            entry["role"],
            "banks",
        )
        assert pki.issued_by(cert, ca_cert)
        assert kit.ca_pem == (ca_dir / "ca.pem").read_bytes()
        info = json.loads((kit_dir / "kit.json").read_text())
        assert set(info) == {
            "consortium",
            "name",
            "role",
            "coordinator",
            "policy",
            "ca_fingerprint",
            "crl_number",
        }
        assert info["ca_fingerprint"] == pki.fingerprint(ca_cert)
        assert info["crl_number"] == kit.crl_floor == 1
    assert load_kit(consortium / "kits" / "bank-a").policy == {
        "max_epsilon": 8.0,
        "max_rounds": 10,
        "consent": True,
    }
    assert load_kit(consortium / "kits" / "bank-b").policy == {}


def test_the_coordinator_certificate_names_its_hosts_and_serves(consortium):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    hub = load_kit(consortium / "kits" / "hub").cert
    san = hub.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["coordinator.example.org", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usages = hub.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    site = load_kit(consortium / "kits" / "bank-a").cert
    site_usages = site.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(site_usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        site.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_init_refuses_to_overwrite_a_ca(consortium, tmp_path):
    spec_file = tmp_path / "c.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    before = (consortium / "ca" / "ca.pem").read_bytes()
    with pytest.raises(ConsortiumError, match=r"ca: already exists; refusing to overwrite"):
        init_consortium(spec_file, consortium)
    assert (consortium / "ca" / "ca.pem").read_bytes() == before


def test_a_bad_spec_leaves_nothing_behind(tmp_path):
    spec_file = tmp_path / "c.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(sites=[{"name": "x"}, {"name": "x"}])))
    with pytest.raises(SpecError, match=r"sites\[1\]\.name: duplicate"):
        init_consortium(spec_file, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_private_key_files_are_0600_from_creation_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        path = pki.write_private(tmp_path / "k.pem", b"secret")
        public = pki.write_public(tmp_path / "p.pem", b"public")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    with pytest.raises(FileExistsError):  # O_EXCL: never written through an existing file
        pki.write_private(path, b"other")
    (tmp_path / "link.pem").symlink_to(tmp_path / "target.pem")
    with pytest.raises(FileExistsError):
        pki.write_private(tmp_path / "link.pem", b"secret")
    assert not (tmp_path / "target.pem").exists()


# -- tampering -------------------------------------------------------------------------------------


def test_a_fresh_copy_loads(kit_copy):
    kit = load_kit(kit_copy("bank-a"))
    assert (kit.name, kit.role) == ("bank-a", "site")
    assert b"PRIVATE KEY" in kit.key_pem and "PRIVATE" not in repr(kit)


def test_an_edited_role_in_kit_json_is_refused(kit_copy, consortium):
    kit_dir = kit_copy("bank-a")
    info = json.loads((kit_dir / "kit.json").read_text())
    info["role"] = "admin"
    (kit_dir / "kit.json").write_text(json.dumps(info))
    _refused(kit_dir, "kit.json", "sha256 does not match manifest.json")
    sign_manifest(kit_dir, _ca_key(consortium))  # even with a valid manifest over it
    _refused(kit_dir, "kit.json", "role 'admin' but cert.pem certifies role 'site'")


def test_another_partys_certificate_is_refused(kit_copy, consortium):
    kit_dir = kit_copy("bank-a")
    shutil.copy(consortium / "kits" / "bank-b" / "cert.pem", kit_dir / "cert.pem")
    _refused(kit_dir, "cert.pem", "sha256 does not match manifest.json")
    sign_manifest(kit_dir, _ca_key(consortium))
    _refused(kit_dir, "key.pem", "does not match cert.pem")


def test_another_partys_certificate_and_key_are_refused(kit_copy, consortium):
    kit_dir = kit_copy("bank-a")
    for name in ("cert.pem", "key.pem"):
        (kit_dir / name).unlink()
        shutil.copy2(consortium / "kits" / "alice" / name, kit_dir / name)
    _refused(kit_dir, "cert.pem", "sha256 does not match manifest.json")
    sign_manifest(kit_dir, _ca_key(consortium))
    _refused(kit_dir, "kit.json", "but cert.pem certifies role 'admin'")


def test_a_mismatched_key_is_refused(kit_copy, consortium):
    kit_dir = kit_copy("bank-a")
    (kit_dir / "key.pem").unlink()
    pki.write_private(kit_dir / "key.pem", pki.key_pem(pki.new_key()))
    _refused(kit_dir, "key.pem", "sha256 does not match manifest.json")
    sign_manifest(kit_dir, _ca_key(consortium))
    _refused(kit_dir, "key.pem", "does not match cert.pem")


def test_an_edited_manifest_is_refused(kit_copy):
    kit_dir = kit_copy("bank-a")
    manifest = json.loads((kit_dir / "manifest.json").read_text())
    manifest["files"]["kit.json"] = "0" * 64
    (kit_dir / "manifest.json").write_text(json.dumps(manifest))
    _refused(kit_dir, "manifest.json", "signature does not verify with ca.pem")


def test_a_manifest_signed_by_another_ca_is_refused(kit_copy):
    kit_dir = kit_copy("bank-a")
    _, other_key = pki.new_ca("banks")
    sign_manifest(kit_dir, other_key)
    _refused(kit_dir, "manifest.json", "signature does not verify with ca.pem")


def test_a_certificate_from_another_ca_is_refused(kit_copy, consortium):
    kit_dir = kit_copy("bank-a")
    other_cert, other_key = pki.new_ca("banks")
    cert, key = pki.issue(other_cert, other_key, "bank-a", "site", consortium="banks")
    for name, data in (("cert.pem", pki.cert_pem(cert)), ("key.pem", pki.key_pem(key))):
        (kit_dir / name).unlink()
        (pki.write_private if name == "key.pem" else pki.write_public)(kit_dir / name, data)
    sign_manifest(kit_dir, _ca_key(consortium))
    _refused(kit_dir, "cert.pem", "not signed by ca.pem")


def test_a_pinned_ca_fingerprint_catches_a_wholly_replaced_kit(kit_copy, consortium):
    from cryptography.hazmat.primitives import hashes

    kit_dir = kit_copy("bank-a")
    ca_cert = load_kit(kit_dir).ca_cert
    pin = ca_cert.fingerprint(hashes.SHA256()).hex()
    assert load_kit(kit_dir, ca_fingerprint=pin).name == "bank-a"
    other_cert, other_key = pki.new_ca("banks")
    (kit_dir / "ca.pem").write_bytes(pki.cert_pem(other_cert))
    sign_manifest(kit_dir, other_key)
    with pytest.raises(KitError, match=r"ca\.pem: not the expected CA"):
        load_kit(kit_dir, ca_fingerprint=pin)


def test_a_readable_key_file_is_refused(kit_copy):
    kit_dir = kit_copy("bank-a")
    (kit_dir / "key.pem").chmod(0o644)
    _refused(kit_dir, "key.pem", "mode 0644 lets group or others read the key")
    (kit_dir / "key.pem").chmod(0o640)
    _refused(kit_dir, "key.pem", "mode 0640")
    (kit_dir / "key.pem").chmod(0o600)
    assert load_kit(kit_dir).name == "bank-a"


def test_missing_and_extra_files_are_refused(kit_copy):
    kit_dir = kit_copy("bank-b")
    (kit_dir / "notes.txt").write_text("hi")
    _refused(kit_dir, "notes.txt", "not in the manifest")
    (kit_dir / "notes.txt").unlink()
    (kit_dir / "ca.pem").unlink()
    _refused(kit_dir, "ca.pem", "missing")


def test_a_coordinator_crl_not_signed_by_the_ca_is_refused(kit_copy):
    kit_dir = kit_copy("hub")
    assert load_kit(kit_dir).crl_path == kit_dir / "crl.pem"
    other_cert, other_key = pki.new_ca("banks")
    (kit_dir / "crl.pem").write_bytes(pki.crl_pem(pki.build_crl(other_cert, other_key, [1])))
    _refused(kit_dir, "crl.pem", "not signed by ca.pem")
    (kit_dir / "crl.pem").unlink()
    _refused(kit_dir, "crl.pem", "missing")


# -- add-site and revoke ---------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path) -> Path:
    spec_file = tmp_path / "c.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    init_consortium(spec_file, tmp_path / "out")
    return tmp_path / "out"


def test_add_site_creates_a_loadable_kit(fresh):
    kit_dir = add_site(fresh, "bank-c", {"max_rounds": 3})
    assert kit_dir == fresh / "kits" / "bank-c"
    kit = load_kit(kit_dir)
    assert (kit.name, kit.role, kit.consortium, kit.policy) == (
        "bank-c",
        "site",
        "banks",
        {"max_rounds": 3},
    )
    assert kit.coordinator_address == "coordinator.example.org:8443"
    assert stat.S_IMODE((kit_dir / "key.pem").stat().st_mode) == 0o600
    serials = json.loads((fresh / "ca" / "serials.json").read_text())
    assert serials["bank-c"] == {
        "serial": format(kit.cert.serial_number, "x"),
        "signing_serial": format(kit.signing_cert.serial_number, "x"),
        "role": "site",
        "revoked": False,
    }
    with pytest.raises(ConsortiumError, match="'Bank-C' is already in the consortium as 'bank-c'"):
        add_site(fresh, "Bank-C")
    with pytest.raises(SpecError, match="name: invalid name"):
        add_site(fresh, "../evil")
    with pytest.raises(SpecError, match=r"policy\.consent"):
        add_site(fresh, "bank-d", {"consent": "sure"})
    assert not (fresh / "kits" / "bank-d").exists()


def test_revoke_lists_the_serial_in_a_ca_signed_crl(fresh):
    ca_cert = pki.load_cert((fresh / "ca" / "ca.pem").read_bytes())
    bank_a = load_kit(fresh / "kits" / "bank-a").cert
    bank_b = load_kit(fresh / "kits" / "bank-b").cert
    crl = pki.load_crl((fresh / "ca" / "crl.pem").read_bytes())
    assert not pki.is_revoked(bank_a, crl)

    result = revoke(fresh, "bank-a")
    assert result.serial == bank_a.serial_number and not result.already
    assert result.crl_paths == (fresh / "ca" / "crl.pem", fresh / "kits" / "hub" / "crl.pem")
    for path in result.crl_paths:
        crl = pki.load_crl(path.read_bytes())
        assert pki.crl_signed_by(crl, ca_cert)
        assert pki.is_revoked(bank_a, crl)
        assert not pki.is_revoked(bank_b, crl)
    assert pki.crl_number(crl) == 2
    assert json.loads((fresh / "ca" / "serials.json").read_text())["bank-a"]["revoked"] is True
    assert load_kit(fresh / "kits" / "hub").name == "hub"  # the new CRL keeps its kit valid

    revoke(fresh, "bank-b")
    crl = pki.load_crl((fresh / "kits" / "hub" / "crl.pem").read_bytes())
    assert pki.is_revoked(bank_a, crl) and pki.is_revoked(bank_b, crl)
    assert pki.crl_number(crl) == 3
    assert revoke(fresh, "bank-a").already

    with pytest.raises(ConsortiumError, match="no party named 'nobody'"):
        revoke(fresh, "nobody")
    with pytest.raises(ConsortiumError, match="'hub' is the coordinator"):
        revoke(fresh, "hub")


def test_a_crl_from_another_issuer_revokes_nothing(consortium):
    cert = load_kit(consortium / "kits" / "bank-a").cert
    other_cert, other_key = pki.new_ca("banks-2")
    assert not pki.is_revoked(cert, pki.build_crl(other_cert, other_key, [cert.serial_number]))


# -- the CLI glue ----------------------------------------------------------------------------------


def test_commands_print_what_they_did_and_return_2_naming_the_problem(tmp_path, capsys):
    out = tmp_path / "out"
    assert init_command(EXAMPLE, out, demo_keys=True) == 0
    printed = capsys.readouterr()
    for name in ("coordinator", "hospital-a", "hospital-b", "clinic-c", "alice", "auditor"):
        assert str(out / "kits" / name) in printed.out
    ca_cert = pki.load_cert((out / "ca" / "ca.pem").read_bytes())
    assert f"CA fingerprint (sha256): {pki.fingerprint(ca_cert)}" in printed.out
    assert "--demo-keys" in printed.err and "generated HERE" in printed.err

    assert init_command(EXAMPLE, out) == 2
    assert f"{out / 'ca'}: already exists" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_spec(coordinator={"name": "hub", "address": "hub:0"})))
    assert init_command(bad, tmp_path / "other") == 2
    assert "coordinator.address: port '0'" in capsys.readouterr().err

    assert add_site_command(out, "bank-z", demo_keys=True) == 0
    assert str(out / "kits" / "bank-z") in capsys.readouterr().out
    assert add_site_command(out, "bank-z") == 2
    assert "already in the consortium" in capsys.readouterr().err
    assert add_site_command(tmp_path / "nowhere", "x") == 2
    assert "no CA here" in capsys.readouterr().err

    assert revoke_command(out, "bank-z") == 0
    assert str(out / "kits" / "coordinator" / "crl.pem") in capsys.readouterr().out
    assert revoke_command(out, "ghost") == 2
    assert "serials.json: no party named 'ghost'" in capsys.readouterr().err
