"""Shamir sharing of 32-byte secrets: any t shares rebuild the secret, fewer do not."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedops.core.secagg import shamir


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
    assert shamir.evaluate(subset, 0) == secret.rjust(shamir.SHARE_BYTES, b"\0")
    if holders[threshold:]:
        x = holders[threshold]
        wrong = int.from_bytes(shares[x], "big") ^ 1
        assert shamir.evaluate(subset, x) != wrong.to_bytes(shamir.SHARE_BYTES, "big")


def test_a_wrong_share_is_caught_by_the_others():
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, range(1, 6), os.urandom)
    off_by_one = dict(shares)
    off_by_one[2] = (int.from_bytes(shares[2], "big") + 1).to_bytes(shamir.SHARE_BYTES, "big")
    subset = {x: off_by_one[x] for x in (1, 2, 3)}
    assert shamir.evaluate(subset, 4) != shares[4]
    assert shamir.evaluate(subset, 5) != shares[5]
    # a small error moves the secret a little (combine cannot tell); a random one
    # lands far outside the 32-byte range, which combine refuses
    assert shamir.combine(subset) != secret
    garbage = (int.from_bytes(os.urandom(66), "big") % shamir.PRIME).to_bytes(66, "big")
    with pytest.raises(ValueError, match="one polynomial"):
        shamir.combine({1: shares[1], 2: garbage, 3: shares[3]})


def test_threshold_one_shares_are_the_secret():
    secret = os.urandom(32)
    shares = shamir.split(secret, 1, [1, 2, 3], os.urandom)
    for x, s in shares.items():
        assert s == secret.rjust(shamir.SHARE_BYTES, b"\0")
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
    too_big = shamir.PRIME.to_bytes(shamir.SHARE_BYTES, "big")
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
