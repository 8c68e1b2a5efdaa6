"""mTLS over real gRPC: a server on 127.0.0.1 with a coordinator kit, clients with other kits.

The server is one generic unary method that answers with the caller's name
and role as :func:`peer_identity` reads them from the TLS peer certificate,
or aborts with PERMISSION_DENIED when there is no identity (a revoked
certificate). A site's kit is identified; a certificate from another
consortium's CA, no certificate, and plaintext are all refused at the
handshake; a site revoked while the server runs is refused at its next call.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml

from fedops.consortium import pki
from fedops.consortium.kit import Kit, KitError, load_kit
from fedops.consortium.kits import init_consortium, revoke
from fedops.consortium.tls import (
    Revocation,
    channel_credentials,
    peer_identity,
    server_credentials,
)

pytestmark = pytest.mark.slow  # real gRPC servers or processes: the slow lane

TIMEOUT = 5.0  # seconds; every call here is local
METHOD = "/fedops.test.Echo/WhoAmI"


def _spec(name: str) -> dict:
    return {
        "name": name,
        "coordinator": {"name": "hub", "address": "127.0.0.1:8443"},
        "sites": [{"name": "bank-a"}, {"name": "bank-b"}],
        "admins": [{"name": "alice"}],
    }


def _provision(root: Path, name: str) -> Path:
    spec_file = root / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(name)))
    init_consortium(spec_file, root / name)
    return root / name


@pytest.fixture
def ours(tmp_path) -> Path:
    return _provision(tmp_path, "banks")


@pytest.fixture(scope="module")
def theirs(tmp_path_factory) -> Path:
    return _provision(tmp_path_factory.mktemp("other"), "banks")  # same names, another CA


def _serve(kit: Kit, revocation: Revocation | None) -> tuple[grpc.Server, int]:
    def who_am_i(request: bytes, context: grpc.ServicerContext) -> bytes:
        identity = peer_identity(context, revocation)
        if identity is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no valid consortium identity")
        return f"{identity.name}/{identity.role}".encode()

    handler = grpc.method_handlers_generic_handler(
        "fedops.test.Echo", {"WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(kit))
    assert port
    server.start()
    return server, port


@pytest.fixture
def hub(ours) -> Iterator[int]:
    kit = load_kit(ours / "kits" / "hub")
    server, port = _serve(kit, Revocation.from_kit(kit))
    try:
        yield port
    finally:
        server.stop(grace=None)


def _call(target: str, credentials: grpc.ChannelCredentials | None) -> bytes:
    channel = (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        return channel.unary_unary(METHOD)(b"", timeout=TIMEOUT)


def _refused(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _call(target, credentials)
    return info.value


def test_a_site_is_identified_by_name_and_role(ours, hub):
    site = load_kit(ours / "kits" / "bank-a")
    assert _call(f"127.0.0.1:{hub}", channel_credentials(site)) == b"bank-a/site"
    admin = load_kit(ours / "kits" / "alice")
    assert _call(f"localhost:{hub}", channel_credentials(admin)) == b"alice/admin"


def test_a_certificate_from_another_consortium_is_refused_at_the_handshake(theirs, hub):
    # the same consortium and party names, but another CA: the handshake fails
    stranger = load_kit(theirs / "kits" / "bank-a")
    error = _refused(f"127.0.0.1:{hub}", channel_credentials(stranger))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_coordinator_from_another_consortium_is_refused_by_the_site(ours, theirs):
    kit = load_kit(theirs / "kits" / "hub")
    server, port = _serve(kit, None)
    try:
        site = load_kit(ours / "kits" / "bank-a")
        error = _refused(f"127.0.0.1:{port}", channel_credentials(site))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=None)


def test_plaintext_and_certificate_less_clients_are_refused(ours, hub):
    assert _refused(f"127.0.0.1:{hub}", None).code() == grpc.StatusCode.UNAVAILABLE
    ca_only = grpc.ssl_channel_credentials(root_certificates=(ours / "ca" / "ca.pem").read_bytes())
    assert _refused(f"127.0.0.1:{hub}", ca_only).code() == grpc.StatusCode.UNAVAILABLE


def test_a_revoked_site_is_refused_without_restarting_the_server(ours, hub):
    bank_a = channel_credentials(load_kit(ours / "kits" / "bank-a"))
    bank_b = channel_credentials(load_kit(ours / "kits" / "bank-b"))
    target = f"127.0.0.1:{hub}"
    assert _call(target, bank_a) == b"bank-a/site"

    revoke(ours, "bank-a")

    error = _refused(target, bank_a)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no valid consortium identity" in error.details()
    assert _call(target, bank_b) == b"bank-b/site"

    # one channel that stays open across the revocation is refused at its next call too
    with grpc.secure_channel(target, bank_b) as channel:
        who_am_i = channel.unary_unary(METHOD)
        assert who_am_i(b"", timeout=TIMEOUT) == b"bank-b/site"
        revoke(ours, "bank-b")
        with pytest.raises(grpc.RpcError) as info:
            who_am_i(b"", timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_revocation_fails_closed_and_recovers(ours, tmp_path):
    hub = load_kit(ours / "kits" / "hub")
    cert = load_kit(ours / "kits" / "bank-a").cert
    crl_path = tmp_path / "crl.pem"
    crl_path.write_bytes(hub.crl_path.read_bytes())
    revocation = Revocation(crl_path, hub.ca_cert)
    assert not revocation.is_revoked(cert)

    crl_path.write_bytes(b"garbage")
    assert revocation.is_revoked(cert)  # unreadable: everyone is refused
    other_cert, other_key = pki.new_ca("banks")
    crl_path.write_bytes(pki.crl_pem(pki.build_crl(other_cert, other_key, [])))
    assert revocation.is_revoked(cert)  # not the CA's: refused
    crl_path.unlink()
    assert revocation.is_revoked(cert)  # missing: refused
    crl_path.write_bytes(hub.crl_path.read_bytes())
    assert not revocation.is_revoked(cert)


def test_only_the_coordinator_kit_can_serve(ours):
    with pytest.raises(KitError, match="cannot serve"):
        server_credentials(load_kit(ours / "kits" / "bank-a"))
    with pytest.raises(KitError, match="only the coordinator"):
        Revocation.from_kit(load_kit(ours / "kits" / "bank-a"))
