"""A site's SecAgg floors: every rule refuses with a message naming it, and holds at the boundary.

The noise floor is checked against the server's own distributed-DP encoding:
the noise multiplier a site infers from a mask request is exactly the one the
coordinator was configured with, so a site can pin it.
"""

from __future__ import annotations

import math

import pytest
from fakes import FakeCrypto
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.secagg import ProtocolError, graph
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.policy import DEFAULT_MIN_COHORT, SecAggPolicy, implied_noise_multiplier
from fedops.core.secagg.quantize import Quantizer
from fedops.core.secagg.server import SecAggServer
from fedops.core.secagg.update import Encoding, round_encoding

LAX = SecAggPolicy(min_cohort=2, min_degree=1)


def refused(call, *args) -> str:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    return str(info.value)


# -- the policy itself ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"min_cohort": 1}, "min_cohort must be at least 2"),
        ({"min_degree": 0}, "min_degree must be at least 1"),
        ({"max_colluders": -1}, "max_colluders must be >= 0"),
        ({"min_noise_multiplier": -0.1}, "min_noise_multiplier"),
        ({"min_noise_multiplier": math.nan}, "min_noise_multiplier"),
        ({"min_noise_multiplier": math.inf}, "min_noise_multiplier"),
        ({"max_l2_clip": 0.0}, "max_l2_clip must be > 0"),
        ({"max_l2_clip": -1.0}, "max_l2_clip must be > 0"),
    ],
)
def test_an_impossible_policy_is_refused(fields, pattern):
    with pytest.raises(ValueError, match=pattern):
        SecAggPolicy(**fields)


def test_the_defaults():
    policy = SecAggPolicy()
    assert policy.min_cohort == DEFAULT_MIN_COHORT == 3
    assert (policy.min_degree, policy.max_colluders) == (None, 0)
    assert (policy.min_noise_multiplier, policy.max_l2_clip) == (0.0, None)
    for n in (3, 4, 9, 16, 17, 100):
        assert policy.required_degree(n) == min(n - 1, 2 * math.ceil(math.log2(n)))
    assert SecAggPolicy(min_degree=6).required_degree(5) == 4  # never more than n - 1
    assert SecAggPolicy(min_degree=6).required_degree(50) == 6


# -- check_round ------------------------------------------------------------------------------
def test_min_cohort():
    policy = SecAggPolicy(min_cohort=5, min_degree=1)
    policy.check_round(5, 4, 3)
    message = refused(policy.check_round, 4, 3, 2)
    assert "the cohort has 4 sites" in message and "(secagg min_cohort)" in message


@pytest.mark.parametrize(("n", "need"), [(3, 2), (4, 3), (8, 6), (16, 8), (17, 10), (1000, 20)])
def test_min_degree_defaults_to_the_logarithmic_neighbourhood(n, need):
    policy = SecAggPolicy()
    policy.check_round(n, need, need // 2 + 1)
    message = refused(policy.check_round, n, need - 1, need // 2)
    assert f"needs at least {need} (secagg min_degree)" in message


def test_min_degree_when_given():
    policy = SecAggPolicy(min_degree=4)
    policy.check_round(100, 4, 3)
    assert "(secagg min_degree)" in refused(policy.check_round, 100, 2, 2)
    policy.check_round(4, 3, 2)  # a cohort of 4 has at most 3 neighbours per site


def test_threshold_at_most_the_degree():
    policy = SecAggPolicy(min_degree=1)
    policy.check_round(10, 4, 4)
    assert "threshold 5 exceeds the 4 neighbours" in refused(policy.check_round, 10, 4, 5)


@pytest.mark.parametrize(
    ("k", "c", "t", "ok"),
    [
        (4, 0, 3, True),  # 2t = 6 > k + c = 4
        (5, 0, 3, True),  # 2t = 6 = k + c + 1: the boundary
        (4, 0, 2, False),  # 2t = 4 = k + c
        (8, 1, 5, True),  # 2t = 10 = k + c + 1
        (8, 2, 5, False),  # 2t = 10 = k + c
        (8, 2, 6, True),
        (6, 2, 5, True),  # 2t = 10 > 8
        (6, 4, 6, True),  # 2t = 12 > 10, t = k
        (4, 4, 4, False),  # no threshold withstands as many colluders as neighbours
    ],
)
def test_the_threshold_withstands_the_colluders(k, c, t, ok):
    policy = SecAggPolicy(min_degree=1, max_colluders=c)
    if ok:
        policy.check_round(50, k, t)
        return
    message = refused(policy.check_round, 50, k, t)
    assert f"(2t > k + c, secagg max_colluders={c})" in message
    assert f"it must be at least {(k + c) // 2 + 1}" in message


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(2, 500),
    k=st.integers(1, 499),
    t=st.integers(1, 499),
    c=st.integers(0, 20),
    floor=st.integers(2, 10),
)
def test_check_round_accepts_exactly_what_the_rules_allow(n, k, t, c, floor):
    policy = SecAggPolicy(min_cohort=floor, max_colluders=c)
    allowed = (
        n >= floor and k >= min(n - 1, graph.default_degree(n)) and t <= k and 2 * t >= k + c + 1
    )
    if allowed:
        policy.check_round(n, k, t)
    else:
        refused(policy.check_round, n, k, t)


def test_the_servers_defaults_satisfy_the_default_policy():
    for n in range(3, 300):
        k = graph.effective_degree(n, None)
        SecAggPolicy().check_round(n, k, graph.default_threshold(k))


# -- check_survivors --------------------------------------------------------------------------
def test_min_cohort_applies_to_the_survivors_too():
    policy = SecAggPolicy(min_cohort=4)
    policy.check_survivors(4)
    message = refused(policy.check_survivors, 3)
    assert "only 3 sites survive" in message and "(secagg min_cohort)" in message


# -- quorum -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "c", "quorum"), [(3, 0, 2), (4, 0, 3), (5, 0, 3), (5, 1, 4), (7, 2, 5), (10, 3, 7)]
)
def test_the_quorum_is_a_majority_of_the_cohort_plus_the_colluders(n, c, quorum):
    assert SecAggPolicy(max_colluders=c).quorum(n) == quorum


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 10_000), c=st.integers(0, 100))
def test_two_quorums_share_an_honest_site(n, c):
    """Two survivor sets that both gather a quorum share more than ``c`` signers, so some
    honest site signed both, which it never does: at most one set is revealed for."""
    quorum = SecAggPolicy(max_colluders=c).quorum(n)
    assert 2 * quorum - n >= c + 1
    assert 2 * (quorum - 1) - n < c + 1  # and it is the smallest such quorum


# -- check_encoding ---------------------------------------------------------------------------
def _private(sigma: float, n: int, clip: float = 1.0, levels: int = 1 << 16) -> Encoding:
    mu = (sigma * levels / 2) ** 2 / (2 * n)
    return Encoding(
        quantizer=Quantizer(clip=clip, levels=levels),
        max_weight=1,
        l2_clip=clip,
        noise_mu=mu,
        min_survivors=n,
    )


PLAIN = Encoding(quantizer=Quantizer(clip=1.0, levels=1000), max_weight=10, min_survivors=3)


def test_a_site_that_needs_noise_refuses_a_plain_round():
    SecAggPolicy().check_encoding(PLAIN, 10)
    message = refused(SecAggPolicy(min_noise_multiplier=0.5).check_encoding, PLAIN, 10)
    assert "min_noise_multiplier=0.5" in message and "has none" in message


def test_the_noise_floor():
    policy = SecAggPolicy(min_noise_multiplier=1.2)
    policy.check_encoding(_private(1.2, 10), 10)  # the boundary
    policy.check_encoding(_private(1.3, 10), 10)
    message = refused(policy.check_encoding, _private(1.19, 10), 10)
    assert "noise multiplier of 1.19" in message and "(secagg min_noise_multiplier)" in message
    # the noise is shared across the cohort: fewer sites than planned add less of it
    assert "(secagg min_noise_multiplier)" in refused(policy.check_encoding, _private(1.2, 10), 9)


def test_the_clip_ceiling():
    policy = SecAggPolicy(max_l2_clip=0.5)
    policy.check_encoding(_private(1.0, 5, clip=0.5), 5)
    message = refused(policy.check_encoding, _private(1.0, 5, clip=0.51), 5)
    assert "clip 0.51 exceeds this site's max_l2_clip 0.5" in message
    policy.check_encoding(PLAIN, 5)  # no distributed DP: the clip rule does not apply


@pytest.mark.parametrize(
    ("qclip", "levels", "why"),
    [
        (100.0, 2, "noise multiplier of 0.00"),  # the rounding dwarfs the noise
        (100.0, 1000, "noise multiplier of 0.16"),
        (1.0, 64, "noise multiplier of 0.5"),
    ],
)
def test_a_coarse_grid_cannot_meet_the_floor_with_noise_free_words(qclip, levels, why):
    """Red team, issue 16: levels = 2 and a quantizer clip far above the L2 clip make the
    floor's noise µ tiny per word, and stochastic rounding turns an update into a few
    noise-free ±1 words. Counting the rounding (√d words) in the sensitivity, and
    refusing µ where Skellam is no Gaussian, the site refuses it at masking."""
    n, d, floor = 5, 650, 1.0
    step = 2 * qclip / levels
    # µ such that the old rule (sensitivity = l2_clip / step words) saw exactly the floor
    mu = (floor * (1.0 / step)) ** 2 / (2 * n)
    crafted = Encoding(
        quantizer=Quantizer(clip=qclip, levels=levels),
        max_weight=1,
        l2_clip=1.0,
        noise_mu=mu,
        min_survivors=n,
    )
    policy = SecAggPolicy(min_noise_multiplier=floor, max_l2_clip=1.0)
    # what the old rule (sensitivity l2_clip/step words, any µ) saw: exactly the floor
    assert math.sqrt(2 * mu * n) * step / 1.0 == pytest.approx(floor)
    message = refused(policy.check_encoding, crafted, n, d)
    assert "(secagg min_noise_multiplier)" in message and why in message, message
    # the same floor met honestly, with the rounding covered, passes
    honest = round_encoding(
        summands=n,
        cohort=n,
        clip=1.0,
        max_examples=1,
        noise=(floor, 1.0),
        dimension=d,
        min_survivors=n,
    )
    policy.check_encoding(honest, n, d)


def test_a_plain_encoding_implies_no_noise():
    assert implied_noise_multiplier(PLAIN, 10) == 0.0


def _server_encoding(n: int, sigma: float, clip: float, dropped: int) -> tuple[Encoding, int]:
    """The encoding a server with distributed DP sends, after ``dropped`` sites vanished."""
    crypto = FakeCrypto(n)
    server = SecAggServer(
        context=b"policy",
        cohort=[f"s{i}" for i in range(n)],
        vector_length=3,
        clip=clip,
        crypto=crypto,
        degree=n - 1,
        min_survivors=n - 1,
        noise=(sigma, clip),
    )
    clients = {i: SecAggClient(server.setup_for(i), crypto, policy=LAX) for i in server.clients}
    for i, client in clients.items():
        server.receive_keys(i, client.advertise(1))
    for i, request in server.close_keys().items():
        if i > dropped:
            server.receive_shares(i, clients[i].share(request))
    requests = server.close_shares()
    assert len(requests) == n - dropped
    return next(iter(requests.values())).encoding, len(server.cohort)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(4, 40),
    sigma=st.floats(0.01, 50.0),
    clip=st.floats(1e-3, 1e3),
    dropped=st.integers(0, 1),
)
def test_the_implied_noise_multiplier_is_the_servers(n, sigma, clip, dropped):
    encoding, cohort = _server_encoding(n, sigma, clip, dropped)
    assert encoding.private and encoding.l2_clip == clip
    implied = implied_noise_multiplier(encoding, cohort, dimension=2)  # 3 words: 2 values
    assert implied == pytest.approx(sigma, rel=1e-6)
    # a site's floor holds for the fewest survivors the encoding seals (n - 1 here)
    assert encoding.min_survivors == n - 1
    worst = sigma * math.sqrt((n - 1) / n)
    policy = SecAggPolicy(min_cohort=3, min_noise_multiplier=worst * (1 - 1e-6), max_l2_clip=clip)
    policy.check_encoding(encoding, cohort)
    floor = SecAggPolicy(min_noise_multiplier=worst * 1.001)
    assert "(secagg min_noise_multiplier)" in refused(floor.check_encoding, encoding, cohort)


def test_a_client_refuses_to_share_below_its_noise_floor():
    """Checked when the encoding arrives with the keys, before any secret is shared."""
    n, sigma, clip = 6, 2.0, 0.5
    crypto = FakeCrypto(1)
    server = SecAggServer(
        context=b"policy",
        cohort=[f"s{i}" for i in range(n)],
        vector_length=3,
        clip=clip,
        crypto=crypto,
        min_survivors=n,
        noise=(sigma, clip),
    )
    strict = SecAggPolicy(min_noise_multiplier=2.5)
    clients = {
        i: SecAggClient(server.setup_for(i), crypto, policy=strict if i == 1 else None)
        for i in server.clients
    }
    for i, client in clients.items():
        server.receive_keys(i, client.advertise(1))
    requests = server.close_keys()
    assert clients[2].share(requests[2]).shares
    refusal = r"noise multiplier of 2 if only 6 of the 6.*needs at least 2\.5"
    with pytest.raises(ProtocolError, match=refusal):
        clients[1].share(requests[1])


def test_a_quantizer_clip_below_the_l2_clip_counts_as_less_noise():
    """Red-team finding: the grid's own clip scales the noise, the L2 clip the sensitivity."""
    honest, shrunk = (
        Encoding(
            quantizer=Quantizer(clip=qclip, levels=1 << 20),
            max_weight=1,
            l2_clip=1.0,
            noise_mu=1e9,
            min_survivors=8,
        )
        for qclip in (1.0, 0.02)
    )
    assert math.isclose(
        implied_noise_multiplier(shrunk, 8), 0.02 * implied_noise_multiplier(honest, 8)
    )
    floor = SecAggPolicy(min_noise_multiplier=implied_noise_multiplier(honest, 8))
    floor.check_encoding(honest, 8)
    with pytest.raises(ProtocolError, match="min_noise_multiplier"):
        floor.check_encoding(shrunk, 8)


def test_colluders_add_no_noise_to_what_the_floor_counts():
    encoding = Encoding(
        quantizer=Quantizer(clip=1.0, levels=1 << 20),
        max_weight=1,
        l2_clip=1.0,
        noise_mu=1e9,
        min_survivors=6,
    )
    six = implied_noise_multiplier(encoding, 6)
    SecAggPolicy(min_noise_multiplier=six).check_encoding(encoding, 6)
    with pytest.raises(ProtocolError, match="min_noise_multiplier"):  # only 4 add noise
        SecAggPolicy(min_noise_multiplier=six, max_colluders=2).check_encoding(encoding, 6)


def test_noise_too_large_for_exact_poisson_samples_is_refused():
    """Red-team finding: at µ near 2^62 numpy's Poisson samples are multiples of 512, so the
    low bits of every word carried no noise while the floor check passed."""
    with pytest.raises(ValueError, match="noise_mu must be in"):
        Encoding(
            quantizer=Quantizer(clip=1.0, levels=1 << 31),
            max_weight=1,
            l2_clip=1.0,
            noise_mu=float(2**62 - 2**40),
        )
