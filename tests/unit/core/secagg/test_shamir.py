"""Shamir sharing of 32-byte secrets: any t shares rebuild the secret, fewer do not; the
batched interpolation and recovery agree with one owner at a time."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedops.core.secagg import SecAggAborted, recovery, shamir


@st.composite
def sharings(draw):
    secret = draw(st.binary(min_size=32, max_size=32))
    n = draw(st.integers(1, 12))
    threshold = draw(st.integers(1, n))
    holders = draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    seed = draw(st.integers(0, 2**32))
    shares = shamir.split(secret, threshold, holders, random.Random(seed).randbytes)
    return secret, threshold, shares


@settings(max_examples=100, deadline=None)
@given(case=sharings(), data=st.data())
def test_any_threshold_shares_rebuild_the_secret(case, data):
    secret, threshold, shares = case
    assert all(len(s) == shamir.SHARE_BYTES for s in shares.values())
    size = data.draw(st.integers(threshold, len(shares)), label="subset size")
    chosen = data.draw(st.permutations(sorted(shares)), label="order")[:size]
    assert shamir.combine({x: shares[x] for x in chosen}) == secret


@settings(max_examples=100, deadline=None)
@given(case=sharings(), data=st.data())
def test_fewer_than_threshold_shares_do_not_give_the_secret(case, data):
    secret, threshold, shares = case
    assume(threshold >= 2)
    size = data.draw(st.integers(1, threshold - 1), label="subset size")
    chosen = data.draw(st.permutations(sorted(shares)), label="order")[:size]
    try:
        rebuilt = shamir.combine({x: shares[x] for x in chosen})
    except ValueError:
        return
    assert rebuilt != secret


@settings(max_examples=60, deadline=None)
@given(case=sharings(), data=st.data())
def test_evaluate_checks_the_other_shares(case, data):
    secret, threshold, shares = case
    holders = data.draw(st.permutations(sorted(shares)), label="order")
    subset = {x: shares[x] for x in holders[:threshold]}
    for x in holders[threshold:]:
        assert shamir.evaluate(subset, x) == shares[x]
    assert shamir.evaluate(subset, 0) == shamir.to_limbs(secret).astype("<u4").tobytes()
    if holders[threshold:]:
        x = holders[threshold]
        wrong = bytes([shares[x][0] ^ 1]) + shares[x][1:]
        assert shamir.evaluate(subset, x) != wrong


def test_a_wrong_share_is_caught_by_the_others():
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, range(1, 6), os.urandom)
    off_by_one = dict(shares)
    off_by_one[2] = _plus_one(shares[2])
    subset = {x: off_by_one[x] for x in (1, 2, 3)}
    assert shamir.evaluate(subset, 4) != shares[4]
    assert shamir.evaluate(subset, 5) != shares[5]
    # a small error moves one limb of the secret a little (combine cannot tell, the owner's
    # commitment does); a random one lands outside the 32-byte range in some limb
    assert shamir.combine(subset) != secret
    garbage = _random_share(np.random.default_rng(7))
    with pytest.raises(ValueError, match="one polynomial"):
        shamir.combine({1: shares[1], 2: garbage, 3: shares[3]})


def _plus_one(share: bytes) -> bytes:
    limbs = np.frombuffer(share, "<u4").astype(np.int64)
    limbs[0] = (limbs[0] + 1) % shamir.PRIME
    return limbs.astype("<u4").tobytes()


def _random_share(rng: np.random.Generator) -> bytes:
    return rng.integers(0, shamir.PRIME, shamir.LIMBS).astype("<u4").tobytes()


def test_threshold_one_shares_are_the_secret():
    secret = os.urandom(32)
    shares = shamir.split(secret, 1, [1, 2, 3], os.urandom)
    for x, s in shares.items():
        assert s == shamir.to_limbs(secret).astype("<u4").tobytes()
        assert shamir.combine({x: s}) == secret


def test_leading_zero_bytes_survive():
    secret = bytes(31) + b"\x01"
    shares = shamir.split(secret, 2, [1, 2], os.urandom)
    assert shamir.combine(shares) == secret
    assert shamir.combine(shamir.split(bytes(32), 2, [5, 9], os.urandom)) == bytes(32)


def test_malformed_shares_are_refused():
    shares = shamir.split(os.urandom(32), 2, [1, 2, 3], os.urandom)
    with pytest.raises(ValueError, match="malformed"):
        shamir.combine({1: shares[1], 2: shares[2][:-1]})
    with pytest.raises(ValueError, match="malformed"):
        shamir.combine({1: shares[1], 2: shares[2] + b"\0"})
    too_big = np.full(shamir.LIMBS, shamir.PRIME, "<u4").tobytes()  # outside the field
    with pytest.raises(ValueError, match="malformed"):
        shamir.combine({1: shares[1], 2: too_big})
    with pytest.raises(ValueError, match="malformed"):
        shamir.combine({1: shares[1], 2: b"\xff" * shamir.SHARE_BYTES})


def test_bad_split_arguments_are_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        shamir.split(bytes(31), 2, [1, 2], os.urandom)
    with pytest.raises(ValueError, match="32 bytes"):
        shamir.split(bytes(33), 2, [1, 2], os.urandom)
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(bytes(32), 0, [1, 2], os.urandom)
    for holder in (0, -1, shamir.PRIME):
        with pytest.raises(ValueError, match="holder index"):
            shamir.split(bytes(32), 2, [1, holder], os.urandom)


@settings(max_examples=40, deadline=None)
@given(
    owners=st.integers(1, 6),
    threshold=st.integers(1, 6),
    extra=st.integers(0, 4),
    seed=st.integers(0, 2**32),
)
def test_many_polynomials_at_once_match_one_at_a_time(owners, threshold, extra, seed):
    rng = random.Random(seed)
    secrets = [rng.randbytes(32) for _ in range(owners)]
    holders = sorted(rng.sample(range(1, 200), threshold + extra))
    shares = [shamir.split(s, threshold, holders, rng.randbytes) for s in secrets]
    xs = np.asarray([holders[:threshold]] * owners, np.int64)
    ys = np.stack([shamir.parse([sh[x] for x in holders[:threshold]]) for sh in shares])
    at = np.asarray([[0, *holders[threshold:]]] * owners, np.int64)
    values = shamir.interpolate(xs, ys, at)
    for row, (secret, sh) in enumerate(zip(secrets, shares, strict=True)):
        assert shamir.from_limbs(values[row, 0]) == secret
        for col, x in enumerate(holders[threshold:], start=1):
            assert values[row, col].astype("<u4").tobytes() == sh[x]


def test_a_secret_is_its_limbs_and_no_out_of_range_limbs_decode():
    for secret in (bytes(32), b"\xff" * 32, bytes(31) + b"\x01", os.urandom(32)):
        assert shamir.from_limbs(shamir.to_limbs(secret)) == secret
    limbs = shamir.to_limbs(b"\xff" * 32)
    top = limbs.copy()
    top[-1] += 1  # 2^256: one bit too many
    assert shamir.from_limbs(top) is None
    low = limbs.copy()
    low[0] = 1 << shamir.LIMB_BITS  # a 31-bit limb
    assert shamir.from_limbs(low) is None


@settings(max_examples=40, deadline=None)
@given(
    owners=st.integers(1, 5),
    threshold=st.integers(1, 5),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**32),
)
def test_recovery_rebuilds_every_secret_whatever_each_owners_holder_count(
    owners, threshold, extra, seed
):
    rng = random.Random(seed)
    secrets, revealed = {}, {}
    for owner in range(1, owners + 1):
        secrets[owner] = rng.randbytes(32)
        holders = sorted(rng.sample(range(1, 100), threshold + rng.randint(0, extra)))
        revealed[owner] = shamir.split(secrets[owner], threshold, holders, rng.randbytes)
    got = recovery.recover_all(revealed, threshold, lambda u, s: s == secrets[u])
    assert got == secrets


def test_recovery_aborts_naming_the_owner_whose_shares_fit_no_secret():
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, [1, 2, 3, 4], os.urandom)
    with pytest.raises(SecAggAborted, match="only 2 good shares of client 9"):
        recovery.recover_all({9: {1: shares[1], 2: shares[2]}}, 3, lambda u, s: True)
    off = {**shares, 1: _plus_one(shares[1])}  # dealt off the polynomial by its owner
    with pytest.raises(SecAggAborted, match="client 9's shares rebuild no secret"):
        recovery.recover_all({9: off}, 3, lambda u, s: s == secret)
    outside = {**shares, 2: np.full(shamir.LIMBS, 2**32 - 1, "<u4").tobytes()}
    with pytest.raises(SecAggAborted, match="client 9's shares rebuild no secret"):
        recovery.recover_all({9: outside}, 3, lambda u, s: s == secret)


def test_a_share_digest_binds_round_owner_holder_kind_and_share():
    share = os.urandom(shamir.SHARE_BYTES)
    base = shamir.share_digest(b"round", 1, 2, b"seed", share)
    assert len(base) == shamir.DIGEST_BYTES
    assert base == shamir.share_digest(b"round", 1, 2, b"seed", share)
    for other in (
        shamir.share_digest(b"other", 1, 2, b"seed", share),
        shamir.share_digest(b"round", 2, 1, b"seed", share),
        shamir.share_digest(b"round", 1, 2, b"key", share),
        shamir.share_digest(b"round", 1, 2, b"seed", _plus_one(share)),
    ):
        assert other != base
