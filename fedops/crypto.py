"""The one place fedops touches the ``cryptography`` package.

:class:`Crypto` gives the SecAgg+ protocol its primitives: X25519 key
agreement, HKDF-SHA256, AES-256-GCM for shares, AES-256-CTR as the mask PRG
(about 8 GB/s with AES-NI: expansion is never the bottleneck), and Ed25519
identities for consortium mode.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from fedops.core.secagg.primitives import DecryptionFailed, ProtocolError

NONCE_BYTES = 12
_ZERO_IV = bytes(16)


class Crypto:
    """The real :class:`~fedops.core.secagg.primitives.SecAggCrypto`."""

    def keypair(self) -> tuple[bytes, bytes]:
        key = X25519PrivateKey.generate()
        return _raw_private(key), key.public_key().public_bytes_raw()

    def public_key(self, private: bytes) -> bytes:
        return _x25519(private).public_key().public_bytes_raw()

    def agree(self, private: bytes, peer_public: bytes, info: bytes) -> bytes:
        try:
            shared = _x25519(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # wrong length, or a low-order point (all-zero secret)
            raise ProtocolError(f"unusable X25519 public key: {exc}") from exc
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)

    def seal(self, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)

    def open(self, key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        if len(ciphertext) < NONCE_BYTES + 16:
            raise DecryptionFailed("ciphertext too short")
        try:
            return AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise DecryptionFailed("ciphertext does not authenticate") from exc

    def random(self, size: int) -> bytes:
        return os.urandom(size)

    def expand(self, seed: bytes, count: int) -> NDArray[np.uint32]:
        out = bytearray(4 * count + 15)  # update_into wants room for a block
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor()
        encryptor.update_into(_zeros(4 * count), out)
        return np.frombuffer(out, dtype=np.uint32, count=count)


@functools.lru_cache(maxsize=8192)
def _x25519(private: bytes) -> X25519PrivateKey:
    """Parsed keys, kept: parsing costs as much as the exchange itself (33 vs 30 us)."""
    return X25519PrivateKey.from_private_bytes(private)


_ZEROS = bytearray()


def _zeros(size: int) -> memoryview:
    """A shared all-zero buffer of at least ``size`` bytes (CTR keystream = E(0 … ))."""
    global _ZEROS
    if len(_ZEROS) < size:
        _ZEROS = bytearray(size)
    return memoryview(_ZEROS)[:size]


def _raw_private(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


# -- identities (consortium mode) -----------------------------------------------
class Identity:
    """A party's Ed25519 signing key, and the CA's certificate for it when it has one.

    ``certificate`` (PEM, empty without one) is a consortium kit's
    ``signing.crt``: what lets a party that never met this one check its
    signatures (audit logs, SecAgg keys) against the consortium CA alone.
    """

    def __init__(self, key: Ed25519PrivateKey, certificate: bytes = b"") -> None:
        self.key = key
        self.certificate = certificate

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> Identity:
        try:
            return cls.from_pem(Path(path).read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    @classmethod
    def from_pem(cls, pem: bytes, certificate: bytes = b"") -> Identity:
        """A PKCS#8 PEM Ed25519 key (``ValueError`` otherwise), with its certificate if any."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return cls(key, certificate)

    def save(self, path: Path) -> None:
        pem = self.private_pem()
        path = Path(path)
        # created 0600 from the first byte: no window where the key is world-readable
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode on O_CREAT
            f.write(pem)

    def private_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted: the caller writes it to a file only it can read."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


class TrustedKeys:
    """Known sites' Ed25519 public keys: ``verify(identity, message, signature)``."""

    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        self.keys = keys

    @classmethod
    def from_pem(cls, pems: dict[str, bytes]) -> TrustedKeys:
        keys = {}
        for name, pem in pems.items():
            key = serialization.load_pem_public_key(pem)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"the key of {name!r} is not an Ed25519 public key")
            keys[name] = key
        return cls(keys)

    @classmethod
    def from_dir(cls, directory: Path) -> TrustedKeys:
        """``NAME.pub`` files (PEM) in ``directory``, one per site."""
        return cls.from_pem({p.stem: p.read_bytes() for p in sorted(Path(directory).glob("*.pub"))})

    def __call__(
        self, identity: str, message: bytes, signature: bytes, certificate: bytes = b""
    ) -> bool:
        """Whether ``identity``'s known key signed ``message``; ``certificate`` is ignored:
        the directory of keys is the trust here, not a CA."""
        key = self.keys.get(identity)
        if key is None:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@functools.lru_cache(maxsize=64)
def _ed25519_public(pem: bytes) -> Ed25519PublicKey:
    """Parsed public keys, kept: an audit log is verified with one key thousands of times."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def verify_ed25519(public_pem: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by the PEM key.

    False, never an exception, for an unparsable or non-Ed25519 key as well:
    whoever verifies an audit log wants a verdict, not a traceback.
    """
    try:
        key = _ed25519_public(bytes(public_pem))
        key.verify(signature, message)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
