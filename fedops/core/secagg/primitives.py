"""What the protocol needs from cryptography, as an interface.

:mod:`fedops.crypto` implements it with the ``cryptography`` package (X25519,
HKDF-SHA256, AES-GCM, AES-CTR); tests may pass deterministic fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

#: signs a message with the party's identity key (consortium mode)
Signer = Callable[[bytes], bytes]
#: ``(identity, message, signature, certificate) -> valid?``: whether ``identity``'s key signed
#: ``message``. ``certificate`` is what the signer sent along to vouch for its key (a consortium
#: CA's certificate, opaque here; empty when it sent none): a verifier holding known keys
#: ignores it, one trusting a CA checks it (:class:`fedops.consortium.signing.CertificateVerifier`)
Verifier = Callable[[str, bytes, bytes, bytes], bool]


_P25519 = (1 << 255) - 19
#: u-coordinates (mod p) of the points X25519 maps to the all-zero secret for every private
#: key: the 8-torsion of Curve25519 and the 4-torsion of its twist (RFC 7748 §7). A
#: public key whose u, its top bit cleared as X25519 does, reduces to one of these is weak.
SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        _P25519 - 1,
        0x00B8495F16056286FDB1329CEB8D09DA6AC49FF1FAE35616AEB8413B7C7AEBE0,
        0x57119FD0DD4E22D8868E1C58C45C44045BEF839C55B1D0B1248C50A3BC959C5F,
    }
)


def weak_x25519(public: bytes) -> bool:
    """Whether ``public`` is a small-order X25519 key (any shared secret with it is zero).

    Pure arithmetic, so the server refuses such a key on receipt without a key exchange
    per key (``tests/unit/core/secagg/test_primitives.py`` checks it against one).
    """
    u = int.from_bytes(public, "little") & ((1 << 255) - 1)
    return u % _P25519 in SMALL_ORDER_U


class ProtocolError(ValueError):
    """A party sent something the protocol forbids; the message says what."""


class SecAggAborted(RuntimeError):
    """Too few clients survived to unmask the sum; the round must not aggregate."""


class DecryptionFailed(Exception):
    """A ciphertext did not authenticate under the expected key."""


class SecAggCrypto(Protocol):
    def keypair(self) -> tuple[bytes, bytes]:
        """A fresh key-agreement pair ``(private, public)``, raw bytes."""
        ...

    def public_key(self, private: bytes) -> bytes:
        """The public half of ``private``."""
        ...

    def agree(self, private: bytes, peer_public: bytes, info: bytes) -> bytes:
        """A 32-byte key both sides derive: KDF(DH(private, peer_public), info).

        Raises :class:`ProtocolError` for a public key that is malformed or weak.
        """
        ...

    def seal(self, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Authenticated encryption (nonce included in the output)."""
        ...

    def open(self, key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`seal`; raises :class:`DecryptionFailed`."""
        ...

    def random(self, size: int) -> bytes:
        """``size`` bytes from a cryptographically secure generator."""
        ...

    def expand(self, seed: bytes, count: int) -> NDArray[np.uint32]:
        """``count`` pseudorandom words from a 32-byte seed (the mask PRG)."""
        ...
