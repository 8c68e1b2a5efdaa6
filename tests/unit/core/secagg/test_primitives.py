"""The small-order X25519 blocklist agrees with a real key exchange."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.secagg.primitives import SMALL_ORDER_U, weak_x25519

P = (1 << 255) - 19
PRIVATE = X25519PrivateKey.generate()


def _exchange_fails(public: bytes) -> bool:
    try:
        PRIVATE.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return True
    return False


def _encodings(u: int) -> list[bytes]:
    """Every 32-byte key X25519 reads as ``u``: u + k·p below 2^255, with or without bit 255."""
    out = []
    value = u
    while value < 1 << 255:
        out += [value.to_bytes(32, "little"), (value | 1 << 255).to_bytes(32, "little")]
        value += P
    return out


def test_every_encoding_of_a_small_order_point_is_weak_as_the_exchange_says():
    keys = [key for u in SMALL_ORDER_U for key in _encodings(u)]
    assert len(keys) >= 14  # 0 and 1 also as p and p + 1, each with bit 255 set or not
    for key in keys:
        assert weak_x25519(key) and _exchange_fails(key), key.hex()


def test_the_blocklist_is_complete_near_its_entries():
    """Neighbours of each entry (and of its non-canonical encodings) are ordinary keys."""
    for u in SMALL_ORDER_U:
        for near in (u - 2, u - 1, u + 1, u + 2, u + P - 1, u + P + 1):
            if 0 <= near < 1 << 255 and near % P not in SMALL_ORDER_U:
                key = near.to_bytes(32, "little")
                assert not weak_x25519(key) and not _exchange_fails(key), hex(near)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_random_keys_are_weak_exactly_when_the_exchange_fails(key):
    assert weak_x25519(key) == _exchange_fails(key)


def test_real_public_keys_are_not_weak():
    for _ in range(50):
        public = X25519PrivateKey.generate().public_key().public_bytes_raw()
        assert not weak_x25519(public)
