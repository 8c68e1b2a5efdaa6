"""fedops.crypto: the real SecAgg+ primitives and Ed25519 site identities."""

from __future__ import annotations

import stat

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.secagg.primitives import DecryptionFailed, SecAggCrypto
from fedops.crypto import NONCE_BYTES, Crypto, Identity, TrustedKeys

crypto = Crypto()


def test_crypto_satisfies_the_protocol_interface():
    needed = [m for m in vars(SecAggCrypto) if not m.startswith("_")]
    assert needed
    for name in needed:
        assert callable(getattr(crypto, name)), name


def test_keypair_and_public_key_agree():
    private, public = crypto.keypair()
    assert len(private) == 32 and len(public) == 32
    assert crypto.public_key(private) == public
    other_private, other_public = crypto.keypair()
    assert other_private != private and other_public != public


def test_key_agreement_is_symmetric_and_bound_to_info():
    a_sk, a_pk = crypto.keypair()
    b_sk, b_pk = crypto.keypair()
    c_sk, c_pk = crypto.keypair()
    key = crypto.agree(a_sk, b_pk, b"info")
    assert len(key) == 32
    assert key == crypto.agree(b_sk, a_pk, b"info")
    assert key != crypto.agree(a_sk, b_pk, b"other info")
    assert key != crypto.agree(a_sk, c_pk, b"info")
    assert crypto.agree(a_sk, c_pk, b"") == crypto.agree(c_sk, a_pk, b"")


@settings(max_examples=30, deadline=None)
@given(plaintext=st.binary(max_size=300), aad=st.binary(max_size=40))
def test_seal_open_round_trip(plaintext, aad):
    key = crypto.random(32)
    sealed = crypto.seal(key, plaintext, aad)
    assert len(sealed) == NONCE_BYTES + len(plaintext) + 16
    assert crypto.open(key, sealed, aad) == plaintext


def test_sealing_twice_uses_fresh_nonces():
    key = crypto.random(32)
    assert crypto.seal(key, b"same", b"") != crypto.seal(key, b"same", b"")


def test_tampering_is_detected():
    key = crypto.random(32)
    sealed = crypto.seal(key, b"a share of a secret" * 4, b"aad")
    for position in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionFailed):
            crypto.open(key, bytes(tampered), b"aad")
    with pytest.raises(DecryptionFailed):
        crypto.open(key, sealed, b"aae")
    with pytest.raises(DecryptionFailed):
        crypto.open(key, sealed, b"")
    with pytest.raises(DecryptionFailed):
        crypto.open(crypto.random(32), sealed, b"aad")
    with pytest.raises(DecryptionFailed):
        crypto.open(key, sealed[:-1], b"aad")
    with pytest.raises(DecryptionFailed, match="too short"):
        crypto.open(key, sealed[: NONCE_BYTES + 15], b"aad")


def test_expand_is_deterministic_per_seed():
    seed = crypto.random(32)
    a = crypto.expand(seed, 1000)
    assert a.dtype == np.uint32 and a.shape == (1000,)
    assert np.array_equal(a, crypto.expand(seed, 1000))
    assert not np.array_equal(a, crypto.expand(crypto.random(32), 1000))
    assert len(np.unique(a)) > 990  # looks random: 32-bit words barely collide


@pytest.mark.parametrize("count", [0, 1, 3, 5, 7, 13, 1001, 4097])
def test_expand_length_is_exact_and_prefixes_agree(count):
    seed = bytes(range(32))
    words = crypto.expand(seed, count)
    assert words.shape == (count,)
    assert np.array_equal(words, crypto.expand(seed, count + 9)[:count])


def test_expand_after_a_large_call_is_unchanged():
    # the zero buffer is shared between calls; it must stay all zeros
    seed = bytes(32)
    small = crypto.expand(seed, 10).copy()
    crypto.expand(crypto.random(32), 100_000)
    assert np.array_equal(crypto.expand(seed, 10), small)


def test_random_gives_fresh_bytes():
    assert len(crypto.random(17)) == 17
    assert crypto.random(32) != crypto.random(32)


# -- identities ---------------------------------------------------------------------------
def test_identity_save_load_round_trip(tmp_path):
    identity = Identity.generate()
    path = tmp_path / "site.key"
    identity.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Identity.load(path)
    assert loaded.public_pem() == identity.public_pem()
    message = b"keys for round 3"
    trusted = TrustedKeys.from_pem({"site": identity.public_pem()})
    assert trusted("site", message, loaded.sign(message))


def test_identity_save_tightens_an_existing_file(tmp_path):
    path = tmp_path / "site.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    Identity.generate().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_identity_load_refuses_other_key_types(tmp_path):
    pem = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "x25519.key"
    path.write_bytes(pem)
    with pytest.raises(ValueError, match="not an Ed25519"):
        Identity.load(path)


def test_trusted_keys_from_dir(tmp_path):
    sites = {name: Identity.generate() for name in ("alpha", "beta")}
    for name, identity in sites.items():
        (tmp_path / f"{name}.pub").write_bytes(identity.public_pem())
    (tmp_path / "notes.txt").write_text("ignored")
    trusted = TrustedKeys.from_dir(tmp_path)
    assert set(trusted.keys) == {"alpha", "beta"}
    message = b"fedops-secagg-keys"
    signature = sites["alpha"].sign(message)
    assert trusted("alpha", message, signature)
    assert not trusted("beta", message, signature)
    assert not trusted("gamma", message, signature)
    assert not trusted("alpha", message + b"!", signature)
    assert not trusted("alpha", message, signature[:-1] + bytes([signature[-1] ^ 1]))


def test_trusted_keys_refuse_non_ed25519_keys():
    pem = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an Ed25519"):
        TrustedKeys.from_pem({"site": pem})
