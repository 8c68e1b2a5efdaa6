"""The survivor-set committee: only the first m sites' signatures count, and m is bound.

A site reveals once ``⌊(m + c)/2⌋ + 1`` committee members signed the set it
signed. The coordinator names ``m`` (default ``min(n, 64)``) in the setup; it is
bound into the round's context, so sites told different committees cannot
share keys, and safety holds for any committee (the hypothesis test in
``test_malicious_views.py`` draws it); a committee that drops out only stops
the round, with a reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import numpy as np
import pytest
from fakes import FakeCrypto

from fedops.core.secagg import ProtocolError, SecAggAborted
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.server import DEFAULT_COMMITTEE, SecAggServer

LENGTH = 5


def _sign(name: str):
    key = hashlib.sha256(name.encode()).digest()
    return lambda message: hmac.new(key, message, "sha256").digest()


def _verify(identity: str, message: bytes, signature: bytes, certificate: bytes) -> bool:
    return hmac.compare_digest(_sign(identity)(message), signature)


def _round(n: int, committee: int | None, policy: SecAggPolicy | None = None):
    cohort = [f"site-{i}" for i in range(1, n + 1)]
    crypto = FakeCrypto(n)
    server = SecAggServer(
        context=b"committee",
        cohort=cohort,
        vector_length=LENGTH,
        clip=1.0,
        crypto=crypto,
        committee=committee,
    )
    clients = {
        i: SecAggClient(
            server.setup_for(i),
            crypto,
            sign=_sign(cohort[i - 1]),
            verify=_verify,
            identity=cohort[i - 1],
            policy=policy,
        )
        for i in range(1, n + 1)
    }
    for i, c in clients.items():
        server.receive_keys(i, c.advertise(3))
    for i, req in server.close_keys().items():
        server.receive_shares(i, clients[i].share(req))
    inputs = {}
    for i, req in server.close_shares().items():
        inputs[i] = np.arange(LENGTH, dtype=np.uint32) * i
        server.receive_masked(i, clients[i].mask(req, inputs[i]))
    return server, clients, inputs, server.close_masked()


def test_the_default_committee_is_the_cohort_up_to_64():
    server, *_ = _round(10, None)
    assert server.committee == 10 and server.setup_for(1).committee == 10
    assert DEFAULT_COMMITTEE == 64


def test_only_committee_signatures_count_and_non_members_need_not_sign():
    n, m = 12, 5  # quorum 3 of the first 5
    server, clients, inputs, checks = _round(n, m)
    # sites 4..12 never sign: the round still completes on the committee's 3 (1, 2, 3)
    # plus every other signer's reveal
    signers = {1, 2, 3} | set(range(6, n + 1))
    for i in sorted(signers):
        server.receive_signature(i, clients[i].sign_survivors(checks[i]))
    unmasks = server.close_consistency()
    assert {s.index for s in next(iter(unmasks.values())).signatures} == {1, 2, 3}
    for i, req in unmasks.items():
        server.receive_reveal(i, clients[i].unmask(req))
    total = server.finish().total
    expected = sum(v.astype(np.uint64) for v in inputs.values()) % (1 << 32)
    assert np.array_equal(total, expected.astype(np.uint32))


def test_signatures_of_non_members_do_not_make_a_quorum():
    n, m = 12, 5
    server, clients, _, checks = _round(n, m)
    for i in range(1, n + 1):
        server.receive_signature(i, clients[i].sign_survivors(checks[i]))
    request = server.close_consistency()[7]
    outsiders = tuple(
        dataclasses.replace(s, index=j)  # real committee signatures relabelled as outsiders'
        for s, j in zip(request.signatures, (6, 7, 8), strict=False)
    )
    with pytest.raises(ProtocolError, match="only 0 valid committee signatures"):
        clients[7].unmask(dataclasses.replace(request, signatures=outsiders))


def test_a_committee_that_does_not_sign_aborts_the_round():
    n, m = 12, 5
    server, clients, _, checks = _round(n, m)
    for i in (1, 2, *range(6, n + 1)):  # only 2 of the 5 committee sites sign
        server.receive_signature(i, clients[i].sign_survivors(checks[i]))
    with pytest.raises(SecAggAborted, match="only 2 of the 5 committee sites signed"):
        server.close_consistency()


def test_a_site_allowing_colluders_needs_more_of_the_committee():
    n, m = 12, 5  # c = 1: quorum (5 + 1) // 2 + 1 = 4
    server, clients, _, checks = _round(n, m, SecAggPolicy(max_colluders=1))
    for i in (1, 2, 3, *range(6, n + 1)):
        server.receive_signature(i, clients[i].sign_survivors(checks[i]))
    request = server.close_consistency()[8]
    with pytest.raises(ProtocolError, match="4 of the round's committee of 5"):
        clients[8].unmask(request)


@pytest.mark.parametrize("committee", [0, 13])
def test_a_committee_outside_the_cohort_is_refused(committee):
    with pytest.raises(ValueError, match=r"committee must be in 1\.\.12"):
        _round(12, committee)
