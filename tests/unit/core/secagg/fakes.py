"""A deterministic stand-in for :class:`fedops.core.secagg.primitives.SecAggCrypto`.

NOT SECURE, in any sense: the "key agreement" derives the shared key from the two
*public* keys, so anyone who sees them (the server included) can compute every
pairwise key; the "cipher" is a SHA-256 keystream with a truncated SHA-256 tag;
the PRG is numpy's PCG64. It exists only to exercise the protocol logic
(routing, Shamir recovery, mask cancellation, dropout handling) quickly and
reproducibly, without the ``cryptography`` package. It does keep the
properties the protocol relies on: agreement is symmetric, ``open`` fails with
:class:`DecryptionFailed` on any change to the key, ciphertext or aad, and
``expand`` is a deterministic function of the seed.
"""

from __future__ import annotations

import hashlib
import hmac
import random

import numpy as np
from numpy.typing import NDArray

from fedops.core.secagg.primitives import DecryptionFailed

KEY_BYTES = 32
NONCE_BYTES = 16
TAG_BYTES = 16


def _keystream(key: bytes, nonce: bytes, size: int) -> bytes:
    blocks = (size + 31) // 32
    stream = b"".join(
        hashlib.sha256(b"stream" + key + nonce + i.to_bytes(8, "big")).digest()
        for i in range(blocks)
    )
    return stream[:size]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


def _tag(key: bytes, nonce: bytes, aad: bytes, body: bytes) -> bytes:
    message = len(aad).to_bytes(8, "big") + aad + body
    return hashlib.sha256(b"mac" + key + nonce + message).digest()[:TAG_BYTES]


class FakeCrypto:
    """Hash-based, seeded, insecure :class:`SecAggCrypto` for tests (see module doc)."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def keypair(self) -> tuple[bytes, bytes]:
        private = self._rng.randbytes(KEY_BYTES)
        return private, self.public_key(private)

    def public_key(self, private: bytes) -> bytes:
        return hashlib.sha256(b"pk" + private).digest()

    def agree(self, private: bytes, peer_public: bytes, info: bytes) -> bytes:
        low, high = sorted((self.public_key(private), peer_public))
        return hashlib.sha256(b"agree" + low + high + info).digest()

    def seal(self, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
        nonce = self._rng.randbytes(NONCE_BYTES)
        body = _xor(plaintext, _keystream(key, nonce, len(plaintext)))
        return nonce + body + _tag(key, nonce, aad, body)

    def open(self, key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionFailed("ciphertext too short")
        nonce, body, tag = (
            ciphertext[:NONCE_BYTES],
            ciphertext[NONCE_BYTES:-TAG_BYTES],
            ciphertext[-TAG_BYTES:],
        )
        if not hmac.compare_digest(tag, _tag(key, nonce, aad, body)):
            raise DecryptionFailed("ciphertext does not authenticate")
        return _xor(body, _keystream(key, nonce, len(body)))

    def random(self, size: int) -> bytes:
        return self._rng.randbytes(size)

    def expand(self, seed: bytes, count: int) -> NDArray[np.uint32]:
        generator = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
        return generator.integers(0, 2**32, count, dtype=np.uint32)
