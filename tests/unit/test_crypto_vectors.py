"""fedops.crypto against published known-answer vectors, not only against itself.

RFC 7748 §6.1 (X25519), RFC 5869 A.1 (HKDF-SHA256), the GCM specification's test case 15
(AES-256-GCM), NIST SP 800-38A F.1.5 and F.5.5 (AES-256 ECB and CTR). Where a fedops
function composes primitives (key agreement = X25519 then HKDF; the mask PRG = AES-256-CTR
keystream from a zero counter), the expected bytes are built from independent pieces: HKDF
from the standard library's HMAC, the keystream block by block with AES-ECB, each piece
anchored to its own vector.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedops.core.secagg.primitives import DecryptionFailed
from fedops.crypto import Crypto

h = bytes.fromhex
ALICE = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
AES256_KEY = h("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 from the standard library's HMAC (an oracle independent of `cryptography`)."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def test_the_hkdf_oracle_matches_rfc_5869_case_1():
    salt, info = h("000102030405060708090a0b0c"), h("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf_sha256(b"\x0b" * 22, salt=salt, info=info, length=42)
    assert okm == h(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_x25519_public_keys_and_agreement_match_rfc_7748():
    crypto = Crypto()
    assert crypto.public_key(ALICE) == ALICE_PUBLIC
    assert crypto.public_key(BOB) == BOB_PUBLIC
    info = b"fedops-secagg share key" + b"round context"
    expected = hkdf_sha256(SHARED, salt=b"", info=info, length=32)
    assert crypto.agree(ALICE, BOB_PUBLIC, info) == expected
    assert crypto.agree(BOB, ALICE_PUBLIC, info) == expected


def test_aes_256_gcm_opens_the_gcm_spec_test_case_15():
    key = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
    nonce = h("cafebabefacedbaddecaf888")
    plaintext = h(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
    )
    sealed = h(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
        "b094dac5d93471bdec1a502270e3cc6c"  # the tag
    )
    crypto = Crypto()
    assert crypto.open(key, nonce + sealed, b"") == plaintext
    with pytest.raises(DecryptionFailed):
        crypto.open(key, nonce + sealed[:-1] + bytes([sealed[-1] ^ 1]), b"")
    with pytest.raises(DecryptionFailed):
        crypto.open(key, nonce + sealed, b"other aad")
    again = crypto.seal(key, plaintext, b"aad")  # a fresh nonce each time, same cipher
    assert crypto.open(key, again, b"aad") == plaintext and again[12:] != sealed


def test_aes_256_blocks_match_sp_800_38a():
    ecb = Cipher(algorithms.AES(AES256_KEY), modes.ECB()).encryptor()
    assert ecb.update(h("6bc1bee22e409f96e93d7e117393172a")) == h(
        "f3eed1bdb5d2a03c064b5a7e3db181f8"
    )
    ctr = Cipher(algorithms.AES(AES256_KEY), modes.CTR(h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")))
    assert ctr.encryptor().update(h("6bc1bee22e409f96e93d7e117393172a")) == h(
        "601ec313775789a5b7a7f504bbf3d228"
    )


@pytest.mark.parametrize("count", [1, 3, 4, 5, 64, 1001])
def test_the_mask_prg_is_the_aes_256_ctr_keystream_from_counter_zero(count):
    """Block i of the mask is AES_k(i) (128-bit big-endian counter), little-endian words."""
    blocks = -(-count // 4)
    ecb = Cipher(algorithms.AES(AES256_KEY), modes.ECB()).encryptor()
    stream = b"".join(ecb.update(i.to_bytes(16, "big")) for i in range(blocks))
    expected = np.frombuffer(stream, dtype="<u4")[:count]
    mask = Crypto().expand(AES256_KEY, count)
    assert mask.dtype == np.uint32 and np.array_equal(mask, expected)
