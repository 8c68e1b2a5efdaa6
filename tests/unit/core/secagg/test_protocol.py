"""SecAgg+ end to end: the server unmasks exactly the survivors' sum, or aborts.

The property tests drive a whole round (client and server state machines, all
five stages) with random graphs, thresholds, vector sizes and dropouts at every
stage, and compare against a reference model of who survives, computed here
from ``server.graph`` and ``server.threshold``. Most runs use the hash-based
:class:`fakes.FakeCrypto` for speed; a few use the real :class:`Crypto`.
Clients get a lax :class:`SecAggPolicy` (cohorts from 2, any degree) so that
small and odd parameters are exercised; the default policy has its own tests.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pytest
from fakes import FakeCrypto
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from fedops.core.secagg import ProtocolError, SecAggAborted, graph, shamir
from fedops.core.secagg.client import SecAggClient, check_setup
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    EncryptedShare,
    MaskedInput,
    MaskRequest,
    NeighbourKeys,
    PublicKeys,
    Reveal,
    Setup,
    ShareKeys,
    SignedSurvivors,
    SurvivorSignature,
    UnmaskRequest,
    signed_message,
    survivors_message,
)
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.primitives import SecAggCrypto
from fedops.core.secagg.server import SecAggServer, SecureSum
from fedops.core.secagg.update import decode_mean, encode_update, vector_length
from fedops.crypto import Crypto, Identity, TrustedKeys

CONTEXT = b"test-run\x00round-1"
STAGES = ("keys", "shares", "masked", "consistency", "finish")
#: lets the property tests use cohorts of two and degrees below the default floor
LAX = SecAggPolicy(min_cohort=2, min_degree=1)


def cohort(n: int) -> tuple[str, ...]:
    return tuple(f"site-{i}" for i in range(1, n + 1))


# -- driving a round -----------------------------------------------------------------
@dataclass
class Drops:
    """Who goes silent at each stage (their reply never reaches the server)."""

    keys: set[int] = field(default_factory=set)  # never advertise keys
    shares: set[int] = field(default_factory=set)  # advertise, then vanish
    masked: set[int] = field(default_factory=set)  # share keys, send no masked input
    consistency: set[int] = field(default_factory=set)  # mask, never sign (stay in the sum)
    unmask: set[int] = field(default_factory=set)  # sign, then never reveal


@dataclass
class Outcome:
    aborted_at: str | None = None
    result: SecureSum | None = None
    inputs: dict[int, np.ndarray] = field(default_factory=dict)
    unmask_requests: dict[int, UnmaskRequest] = field(default_factory=dict)


def make_round(
    n: int,
    crypto: SecAggCrypto,
    *,
    vector_length: int = 8,
    degree: int | None = None,
    threshold: int | None = None,
    salt: int = 0,
    min_survivors: int | None = None,
    policy: SecAggPolicy = LAX,
    client_kwargs: Callable[[int], dict] | None = None,
) -> tuple[SecAggServer, dict[int, SecAggClient]]:
    """A server and its clients; ``salt`` varies the context, and so the graph."""
    server = SecAggServer(
        context=CONTEXT if not salt else CONTEXT + b":%d" % salt,
        cohort=cohort(n),
        vector_length=vector_length,
        clip=1.0,
        crypto=crypto,
        degree=degree,
        threshold=threshold,
        min_survivors=min_survivors,
    )
    clients = {
        i: SecAggClient(
            server.setup_for(i),
            crypto,
            **{"policy": policy, **(client_kwargs(i) if client_kwargs else {})},
        )
        for i in server.clients
    }
    return server, clients


def random_input(request: MaskRequest, length: int, rng: np.random.Generator) -> np.ndarray:
    levels = request.encoding.quantizer.levels
    return rng.integers(0, levels, length, dtype=np.uint32, endpoint=True)


def drive(
    server: SecAggServer,
    clients: Mapping[int, SecAggClient],
    drops: Drops,
    rng: np.random.Generator,
) -> Outcome:
    """Run all five stages; an abort is reported with the stage that raised it."""
    outcome = Outcome()
    stage = "keys"
    try:
        for i, client in clients.items():
            if i not in drops.keys:
                server.receive_keys(i, client.advertise(1 + i % 7))
        requests = server.close_keys()
        stage = "shares"
        for i, req in requests.items():
            if i not in drops.shares:
                server.receive_shares(i, clients[i].share(req))
        mask_requests = server.close_shares()
        stage = "masked"
        for i, req in mask_requests.items():
            if i not in drops.masked:
                vector = random_input(req, server.vector_length, rng)
                outcome.inputs[i] = vector
                server.receive_masked(i, clients[i].mask(req, vector))
        consistency_requests = server.close_masked()
        stage = "consistency"
        for i, req in consistency_requests.items():
            if i not in drops.consistency:
                server.receive_signature(i, clients[i].sign_survivors(req))
        outcome.unmask_requests = server.close_consistency()
        stage = "finish"
        for i, req in outcome.unmask_requests.items():
            if i not in drops.unmask:
                server.receive_reveal(i, clients[i].unmask(req))
        outcome.result = server.finish()
    except SecAggAborted:
        outcome.aborted_at = stage
    return outcome


def sum_mod(vectors: Iterable[np.ndarray], length: int) -> np.ndarray:
    total = np.zeros(length, dtype=np.uint64)
    for v in vectors:
        total += v.astype(np.uint64)
    return (total % (1 << 32)).astype(np.uint32)


# -- the reference model -----------------------------------------------------------
def t_core(members: set[int], nbrs: Mapping[int, Iterable[int]], t: int) -> set[int]:
    """The largest subset where everyone keeps >= t neighbours (peeling, queue-based)."""
    alive = set(members)
    count = {u: sum(1 for v in nbrs[u] if v in alive) for u in alive}
    queue = deque(u for u in alive if count[u] < t)
    while queue:
        u = queue.popleft()
        if u not in alive:
            continue
        alive.remove(u)
        for v in nbrs[u]:
            if v in alive:
                count[v] -= 1
                if count[v] < t:
                    queue.append(v)
    return alive


def expected_outcome(server: SecAggServer, drops: Drops) -> tuple[str | None, set[int]]:
    """``(stage that must abort or None, the survivor set U3)``.

    U3 is empty when the round aborts before the survivor set exists (keys,
    shares, masked); a round aborted at the consistency stage or at the end
    did agree on U3 first. Sites reveal only for a set that a majority of the
    cohort signed (``⌊n/2⌋ + 1``, the server's and the lax policy's quorum).
    """
    nbrs, t, least = server.graph, server.threshold, server.min_survivors
    quorum = len(server.cohort) // 2 + 1
    u1 = t_core(set(server.clients) - drops.keys, nbrs, t)
    if len(u1) < least:
        return "keys", set()
    u2 = t_core(u1 - drops.shares, nbrs, t)
    if len(u2) < least:
        return "shares", set()
    # honest clients mask with every neighbour that shared keys with them
    partners = {u: {v for v in nbrs[u] if v in u2} for u in u2}
    u3 = u2 - drops.masked
    if len(u3) < max(least, quorum):
        return "masked", set()
    # every survivor's self mask must be removable, and the pairwise masks of each dropped
    # client that some survivor masked with; a dropped client nobody masked with needs nothing
    unmasked = u3 | {d for d in u2 - u3 if partners[d] & u3}
    if any(len(partners[u] & u3) < t for u in unmasked):
        return "masked", set()
    signers = u3 - drops.consistency  # the others stay in the sum, but are not asked to reveal
    if len(signers) < quorum:
        return "consistency", u3
    revealers = signers - drops.unmask
    if any(len(partners[u] & revealers) < t for u in unmasked):
        return "finish", u3
    return None, u3


def check_round(server: SecAggServer, clients: dict[int, SecAggClient], drops: Drops, rng) -> str:
    """Drive one round and check it against the model; says how it ended."""
    abort_stage, survivors = expected_outcome(server, drops)
    outcome = drive(server, clients, drops, rng)
    assert outcome.aborted_at == abort_stage
    if abort_stage is not None:
        assert outcome.result is None
        return f"aborted at {abort_stage}"
    result = outcome.result
    assert result is not None
    assert result.survivors == tuple(sorted(survivors))
    assert set(outcome.inputs) >= survivors
    assert result.total.dtype == np.uint32
    expected = sum_mod([outcome.inputs[u] for u in survivors], server.vector_length)
    assert np.array_equal(result.total, expected)
    # one survivor set for everyone; the signers are asked to reveal, with every signature
    signers = survivors - drops.consistency
    assert set(outcome.unmask_requests) == signers
    for request in outcome.unmask_requests.values():
        assert request.survivors == result.survivors
        assert [s.index for s in request.signatures] == sorted(signers)
    # honest parties: no survivor is flagged, and every other participant has a reason
    assert not set(result.survivors) & set(server.excluded)
    assert set(server.clients) - survivors <= set(server.excluded)
    return "summed"


@dataclass
class Case:
    n: int
    degree: int
    threshold: int
    salt: int
    length: int
    drops: Drops
    min_survivors: int | None = None


@st.composite
def rounds(draw, max_clients: int, max_length: int) -> Case:
    n = draw(st.integers(2, max_clients))
    degree = draw(st.integers(1, n - 1))
    actual = graph.effective_degree(n, degree)
    threshold = draw(st.integers(actual // 2 + 1, actual))
    salt = draw(st.integers(0, 2**16))
    length = draw(st.integers(1, max_length))
    least = draw(st.sampled_from([None, None, 2]))
    clients = list(range(1, n + 1))

    def dropouts() -> set[int]:
        rate = draw(st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.6]))
        size = draw(st.integers(0, int(rate * n)))
        return draw(st.sets(st.sampled_from(clients), min_size=size, max_size=size))

    def silent() -> set[int]:  # survivors that never sign: about half the cohort aborts
        size = min(n, draw(st.sampled_from([0, 0, 0, 1, 2, n // 2, n // 2 + 1])))
        return draw(st.sets(st.sampled_from(clients), min_size=size, max_size=size))

    drops = Drops(
        keys=dropouts(),
        shares=dropouts(),
        masked=dropouts(),
        consistency=silent(),
        unmask=dropouts(),
    )
    return Case(n, degree, threshold, salt, length, drops, least)


def run_case(case: Case, crypto: SecAggCrypto, data_seed: int) -> str:
    server, clients = make_round(
        case.n,
        crypto,
        vector_length=case.length,
        degree=case.degree,
        threshold=case.threshold,
        salt=case.salt,
        min_survivors=case.min_survivors,
    )
    assert server.threshold == case.threshold
    assert server.degree == graph.effective_degree(case.n, case.degree)
    return check_round(server, clients, case.drops, np.random.default_rng(data_seed))


@settings(max_examples=120, deadline=None)
@given(case=rounds(max_clients=40, max_length=300), data_seed=st.integers(0, 2**32 - 1))
@example(case=Case(2, 1, 1, 0, 1, Drops(), min_survivors=2), data_seed=0)
@example(case=Case(2, 1, 1, 0, 3, Drops(unmask={2}), min_survivors=2), data_seed=0)
@example(case=Case(2, 1, 1, 0, 3, Drops()), data_seed=0)  # a cohort of 2 is below the floor
@example(case=Case(3, 2, 2, 0, 2, Drops()), data_seed=0)
@example(case=Case(10, 4, 3, 1, 5, Drops(masked={1, 2, 3})), data_seed=0)
@example(case=Case(12, 11, 11, 1, 5, Drops(masked={4})), data_seed=0)
@example(case=Case(8, 7, 4, 0, 4, Drops(consistency={5})), data_seed=0)
@example(case=Case(8, 7, 4, 0, 4, Drops(consistency={1, 2, 3, 4})), data_seed=0)
@example(case=Case(9, 8, 5, 0, 4, Drops(masked={1, 2, 3, 4, 5})), data_seed=0)
@example(case=Case(8, 7, 4, 0, 4, Drops(masked={2}, consistency={2})), data_seed=0)
@example(
    case=Case(40, 39, 20, 5, 300, Drops(keys={1}, shares={2}, masked={3}, unmask={4})),
    data_seed=1,
)
def test_round_sums_survivors_exactly_or_aborts(case, data_seed):
    event(run_case(case, FakeCrypto(data_seed), data_seed))


@pytest.mark.parametrize(
    ("case", "outcome"),
    [
        (Case(2, 1, 1, 0, 1, Drops(), min_survivors=2), "summed"),
        (Case(2, 1, 1, 0, 3, Drops(unmask={2}), min_survivors=2), "aborted at finish"),
        (Case(2, 1, 1, 0, 3, Drops()), "aborted at keys"),
        (Case(12, 11, 11, 1, 5, Drops(masked={4})), "aborted at masked"),
        # complete graph of 8, t = 4, quorum 5
        (Case(8, 7, 4, 0, 4, Drops(consistency={5})), "summed"),  # 5 stays in the sum
        (Case(8, 7, 4, 0, 4, Drops(consistency={1, 2, 3})), "summed"),  # 5 signers
        (Case(8, 7, 4, 0, 4, Drops(consistency={1, 2, 3, 4})), "aborted at consistency"),
        (Case(8, 7, 4, 0, 4, Drops(masked={2}, consistency={2})), "summed"),
        (Case(8, 7, 4, 0, 4, Drops(masked={1, 2, 3, 4})), "aborted at masked"),  # 4 < quorum
        # a revealer needs 4 other revealers, so 5 of them
        (Case(8, 7, 4, 0, 4, Drops(masked={2}, unmask={3, 4})), "summed"),
        (Case(8, 7, 4, 0, 4, Drops(masked={2}, unmask={3, 4, 5})), "aborted at finish"),
        (Case(8, 7, 4, 0, 4, Drops(consistency={3}, unmask={4, 5})), "summed"),
        (Case(8, 7, 4, 0, 4, Drops(consistency={3}, unmask={4, 5, 6})), "aborted at finish"),
    ],
)
def test_the_model_decides_the_explicit_cases(case, outcome):
    """The reference model itself, pinned on cases worked out by hand."""
    assert run_case(case, FakeCrypto(0), 0) == outcome


@settings(max_examples=40, deadline=None)  # ~4 s per 10 on a loaded 2-core machine
@given(case=rounds(max_clients=10, max_length=40), data_seed=st.integers(0, 2**32 - 1))
@example(case=Case(6, 5, 3, 0, 17, Drops(masked={2}, unmask={5})), data_seed=0)
def test_round_with_real_crypto(case, data_seed):
    event(run_case(case, Crypto(), data_seed))


@pytest.mark.parametrize("n", [3, 5, 16, 33])
def test_default_degree_and_threshold_meet_the_default_policy(n):
    server, clients = make_round(n, FakeCrypto(n), vector_length=11, policy=SecAggPolicy())
    assert server.degree == graph.effective_degree(n, graph.default_degree(n))
    assert server.threshold == graph.default_threshold(server.degree)
    assert server.min_survivors == max(3, server.threshold)
    assert check_round(server, clients, Drops(), np.random.default_rng(n)) == "summed"


def test_a_cohort_of_two_is_refused_by_default():
    """The sum of two reveals the other's update: the server aborts, a site refuses."""
    server, clients = make_round(2, FakeCrypto(), vector_length=3)
    assert server.min_survivors == 3
    assert drive(server, clients, Drops(), np.random.default_rng(0)).aborted_at == "keys"
    with pytest.raises(ProtocolError, match="min_cohort"):
        SecAggClient(server.setup_for(1), FakeCrypto())


def test_min_survivors_aborts_before_keys_are_shared():
    server, clients = make_round(6, FakeCrypto(), min_survivors=6)
    outcome = drive(server, clients, Drops(keys={3}), np.random.default_rng(0))
    assert outcome.aborted_at == "keys"


def test_dropout_after_masking_still_sums_the_rest():
    server, clients = make_round(8, FakeCrypto(), degree=7, vector_length=50)
    outcome = drive(server, clients, Drops(masked={2, 7}), np.random.default_rng(1))
    assert outcome.result is not None
    assert outcome.result.survivors == (1, 3, 4, 5, 6, 8)
    expected = sum_mod([outcome.inputs[u] for u in outcome.result.survivors], 50)
    assert np.array_equal(outcome.result.total, expected)
    assert set(server.excluded) == {2, 7}


def test_a_dropout_in_a_ring_leaves_its_neighbours_masks_unremovable():
    # a ring of degree 2 with threshold 2: the neighbours of a client that drops after
    # masking keep one surviving partner, so their self masks cannot be rebuilt
    r = new_round(8, degree=2, threshold=2)
    dropped = r.server.graph[1][0]
    for i, reply in r.masked(r.to_mask(), skip={dropped}).items():
        r.server.receive_masked(i, reply)
    victim = min(r.server.graph[dropped])
    with pytest.raises(SecAggAborted, match=f"client {victim}'s masks cannot be removed"):
        r.server.close_masked()
    assert r.server.excluded == {dropped: "sent no masked input"}


def test_a_survivor_that_does_not_sign_stays_in_the_sum_but_reveals_nothing():
    r = new_round(6, vector_length=5)  # complete graph, threshold 3, quorum 4
    requests = r.to_consistency()
    with pytest.raises(ProtocolError, match="at most 1024 bytes"):
        r.server.receive_signature(1, SurvivorSignature(signature=bytes(1025)))
    unmask = r.consistency(requests, skip={3})
    assert set(unmask) == {1, 2, 4, 5, 6}
    assert all(req.survivors == (1, 2, 3, 4, 5, 6) for req in unmask.values())
    assert all([s.index for s in req.signatures] == [1, 2, 4, 5, 6] for req in unmask.values())
    with pytest.raises(ProtocolError, match="client 3 is not part of stage 5"):
        r.server.receive_reveal(3, Reveal(self_mask=(), mask_key=()))
    result = r.finish(r.reveal(unmask))
    assert result.survivors == (1, 2, 3, 4, 5, 6)
    assert np.array_equal(result.total, r.expected(result.survivors))
    assert r.server.excluded == {}


def test_fewer_signers_than_a_majority_of_the_cohort_abort():
    r = new_round(6)  # quorum 4
    requests = r.to_consistency()
    with pytest.raises(SecAggAborted, match="only 3 of the 6 committee sites signed the survivor"):
        r.consistency(requests, skip={1, 2, 3})


def test_fewer_survivors_than_a_majority_of_the_cohort_abort():
    r = new_round(9, degree=8, threshold=5, min_survivors=3)  # quorum 5
    for i, reply in r.masked(r.to_mask(), skip={1, 2, 3, 4, 5}).items():
        r.server.receive_masked(i, reply)
    with pytest.raises(SecAggAborted, match="only 4 of the 9 committee sites sent a masked input"):
        r.server.close_masked()


def test_only_survivors_sign_and_every_one_is_asked_the_same_set():
    r = new_round(7, vector_length=5)  # complete graph, threshold 4
    requests = r.to_consistency(skip={7})
    assert set(requests) == {1, 2, 3, 4, 5, 6}
    assert {req.survivors for req in requests.values()} == {(1, 2, 3, 4, 5, 6)}
    with pytest.raises(ProtocolError, match="client 7 is not part of stage 4"):
        r.server.receive_signature(7, SurvivorSignature(signature=b""))
    unmask = r.consistency(requests)
    assert {req.survivors for req in unmask.values()} == {(1, 2, 3, 4, 5, 6)}
    expected = tuple(SignedSurvivors(index=w, signature=b"") for w in range(1, 7))
    assert all(req.signatures == expected for req in unmask.values())


def test_relayed_keys_carry_no_example_counts():
    r = new_round(5)
    requests = r.keys()  # advertised with 10 + i examples
    assert all(k.num_examples == 0 for req in requests.values() for k in req.keys)
    mask_requests = r.shares(requests)
    assert {req.encoding.max_weight for req in mask_requests.values()} == {15}  # the server's


@pytest.mark.parametrize(("n", "degree"), [(5, None), (12, 4), (40, 6), (41, None)])
def test_every_site_derives_the_servers_graph_itself(n, degree):
    server, clients = make_round(n, FakeCrypto(), degree=degree)
    for i, client in clients.items():
        assert client.neighbours == server.graph[i]
        assert check_setup(server.setup_for(i), LAX) == server.graph[i]
    other, _ = make_round(n, FakeCrypto(), degree=degree, salt=1)
    if server.degree < n - 1:  # another round (context) gives another graph
        assert other.graph != server.graph


def test_fedavg_through_secagg_matches_the_weighted_mean_of_survivors():
    rng = np.random.default_rng(3)
    start = {"w": rng.normal(size=(4, 5)), "b": rng.normal(size=5)}
    length = vector_length(start)
    server, clients = make_round(9, Crypto(), vector_length=length, degree=4)
    examples = {i: 10 * i for i in clients}
    trained = {
        i: {k: v + rng.normal(scale=0.3, size=v.shape) for k, v in start.items()} for i in clients
    }
    for i, c in clients.items():
        server.receive_keys(i, c.advertise(examples[i]))
    requests = server.close_keys()
    for i, req in requests.items():
        server.receive_shares(i, clients[i].share(req))
    mask_requests = server.close_shares()
    dropped = server.graph[1][0]  # drops before sending its update
    for i, req in mask_requests.items():
        if i != dropped:
            vec, _ = encode_update(start, trained[i], examples[i], req.encoding, rng)
            server.receive_masked(i, clients[i].mask(req, vec))
    for i, req in server.close_masked().items():
        server.receive_signature(i, clients[i].sign_survivors(req))
    for i, req in server.close_consistency().items():
        server.receive_reveal(i, clients[i].unmask(req))
    result = server.finish()
    survivors = result.survivors
    assert dropped not in survivors and len(survivors) == 8
    mean, weight = decode_mean(start, result.total, len(survivors), result.encoding)
    assert weight == sum(examples[i] for i in survivors)
    encoding = result.encoding
    bound = len(survivors) * encoding.quantizer.step * encoding.max_weight / weight
    for k in start:
        delta = sum(examples[i] * np.clip(trained[i][k] - start[k], -1, 1) for i in survivors)
        expected = start[k] + delta / weight
        assert np.max(np.abs(mean[k] - expected)) < bound


# -- stepping through one round by hand ------------------------------------------------
class Round:
    """One round advanced stage by stage, so a test can tamper in between."""

    def __init__(self, server: SecAggServer, clients: dict[int, SecAggClient]) -> None:
        self.server = server
        self.clients = clients
        self.rng = np.random.default_rng(7)
        self.inputs: dict[int, np.ndarray] = {}

    def keys(self, skip: Iterable[int] = ()) -> dict[int, NeighbourKeys]:
        for i, c in self.clients.items():
            if i not in skip:
                self.server.receive_keys(i, c.advertise(10 + i))
        return self.server.close_keys()

    def shares(self, requests: Mapping[int, NeighbourKeys], skip=()) -> dict[int, MaskRequest]:
        for i, req in requests.items():
            if i not in skip:
                self.server.receive_shares(i, self.clients[i].share(req))
        return self.server.close_shares()

    def masked(self, requests: Mapping[int, MaskRequest], skip=()) -> dict[int, MaskedInput]:
        replies = {}
        for i, req in requests.items():
            if i not in skip:
                self.inputs[i] = random_input(req, self.server.vector_length, self.rng)
                replies[i] = self.clients[i].mask(req, self.inputs[i])
        return replies

    def consistency(
        self, requests: Mapping[int, ConsistencyRequest], skip=()
    ) -> dict[int, UnmaskRequest]:
        for i, req in requests.items():
            if i not in skip:
                self.server.receive_signature(i, self.clients[i].sign_survivors(req))
        return self.server.close_consistency()

    def to_mask(self, skip=()) -> dict[int, MaskRequest]:
        return self.shares(self.keys(), skip)

    def to_consistency(self, skip=()) -> dict[int, ConsistencyRequest]:
        for i, reply in self.masked(self.to_mask(), skip).items():
            self.server.receive_masked(i, reply)
        return self.server.close_masked()

    def to_unmask(self, skip=()) -> dict[int, UnmaskRequest]:
        return self.consistency(self.to_consistency(skip))

    def reveal(self, requests: Mapping[int, UnmaskRequest]) -> dict[int, Reveal]:
        return {i: self.clients[i].unmask(req) for i, req in requests.items()}

    def finish(self, reveals: Mapping[int, Reveal]) -> SecureSum:
        for i, reveal in reveals.items():
            self.server.receive_reveal(i, reveal)
        return self.server.finish()

    def expected(self, survivors: Iterable[int]) -> np.ndarray:
        return sum_mod([self.inputs[u] for u in survivors], self.server.vector_length)


def new_round(n: int = 6, crypto: SecAggCrypto | None = None, **kwargs) -> Round:
    return Round(*make_round(n, crypto or FakeCrypto(n), **kwargs))


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def test_masks_are_applied():
    r = new_round(6, vector_length=64)
    masked = r.masked(r.to_mask())
    for i, reply in masked.items():
        x = r.inputs[i]
        assert reply.vector.dtype == np.uint32
        assert reply.vector.shape == x.shape
        assert not np.array_equal(reply.vector, x)
        offset = reply.vector - x  # wraps mod 2^32
        assert len(np.unique(offset)) > 1, "masked = input + constant"
        assert np.count_nonzero(reply.vector == x) < 4
    # pairwise masks only cancel in the complete sum: a partial sum is still masked
    partial = sum_mod([masked[i].vector for i in (1, 2, 3)], 64)
    assert not np.array_equal(partial, sum_mod([r.inputs[i] for i in (1, 2, 3)], 64))


# -- the survivor set: one per round, signed, and what it makes a client reveal -----------
def test_the_reveal_follows_from_the_survivor_set_alone():
    r = new_round(8, degree=7, vector_length=6)  # complete graph, threshold 4
    requests = r.to_unmask(skip={2, 7})
    reveals = r.reveal(requests)
    for v, reveal in reveals.items():
        held = set(range(1, 9)) - {v}
        assert [u for u, _ in reveal.self_mask] == sorted(held - {2, 7})
        assert [u for u, _ in reveal.mask_key] == sorted(held & {2, 7})
    result = r.finish(reveals)
    assert np.array_equal(result.total, r.expected(result.survivors))


def test_a_sparse_client_reveals_only_for_its_neighbours():
    r = new_round(12, degree=4, threshold=3, vector_length=3)
    nbrs = r.server.graph[1]
    dropped = next(u for u in r.server.clients if u != 1 and u not in nbrs)
    reveals = r.reveal(r.to_unmask(skip={dropped}))
    assert [u for u, _ in reveals[1].self_mask] == list(nbrs)
    assert reveals[1].mask_key == ()  # it never held the dropped client's shares


@pytest.mark.parametrize(
    "survivors",
    [(1, 2, 3, 4, 5, 6, 7), (1, 2, 3, 4, 5), (2, 3, 4, 5, 6, 1)],
    ids=["dropped-as-survivor", "survivor-as-dropped", "unordered"],
)
def test_client_refuses_to_unmask_another_survivor_set_than_it_signed(survivors):
    """The attack the consistency check stops: 7 'survived' for one client (which would
    reveal its self-mask share) and 'dropped' for the others (which reveal its mask key)."""
    r = new_round(7, vector_length=5)  # complete graph, threshold 4
    requests = r.to_unmask(skip={7})
    with pytest.raises(ProtocolError, match="another survivor set"):
        r.clients[1].unmask(dataclasses.replace(requests[1], survivors=survivors))
    with pytest.raises(ProtocolError, match="session failed"):  # no second try in this round
        r.clients[1].unmask(requests[1])
    reveal = r.clients[2].unmask(requests[2])
    assert 7 in dict(reveal.mask_key) and 7 not in dict(reveal.self_mask)


def test_a_client_signs_one_survivor_set_per_round():
    r = new_round(6)
    requests = r.to_consistency()
    r.clients[1].sign_survivors(requests[1])
    with pytest.raises(ProtocolError, match="stage 4"):
        r.clients[1].sign_survivors(ConsistencyRequest(survivors=(1, 2, 3, 4, 5)))


@pytest.mark.parametrize(
    ("survivors", "pattern"),
    [
        ((2, 1, 3, 4, 5, 6), "distinct cohort indices in order"),
        ((1, 2, 2, 3, 4), "distinct cohort indices in order"),
        ((0, 1, 2, 3, 4), "distinct cohort indices in order"),
        ((1, 2, 3, 4, 5, 7), "distinct cohort indices in order"),
        ((2, 3, 4, 5, 6), "leaves out this client"),
        ((1,), "min_cohort"),
    ],
)
def test_client_refuses_to_sign_an_unusable_survivor_set(survivors, pattern):
    r = new_round(6)  # complete graph, threshold 3
    r.to_consistency()
    with pytest.raises(ProtocolError, match=pattern):
        r.clients[1].sign_survivors(ConsistencyRequest(survivors=survivors))


def test_client_refuses_a_survivor_that_never_gave_it_keys():
    r = new_round(6)  # complete graph, threshold 3
    for i, reply in r.masked(r.shares(r.keys(skip={6}))).items():
        r.server.receive_masked(i, reply)
    assert r.server.close_masked()[1].survivors == (1, 2, 3, 4, 5)
    with pytest.raises(ProtocolError, match=r"names neighbours \[6\] whose shares this client"):
        r.clients[1].sign_survivors(ConsistencyRequest(survivors=(1, 2, 3, 4, 5, 6)))


def test_client_refuses_a_survivor_whose_share_it_could_not_decrypt():
    """Its pairwise mask with that neighbour is in one input only: a set naming both
    would let the server split the sum around it."""
    r = new_round(6)  # complete graph, threshold 3
    requests = r.to_mask()
    shares = tuple(
        dataclasses.replace(s, ciphertext=flip_last_byte(s.ciphertext)) if s.source == 2 else s
        for s in requests[1].shares
    )
    requests[1] = dataclasses.replace(requests[1], shares=shares)
    replies = r.masked(requests)
    assert replies[1].complaints == (2,)
    with pytest.raises(ProtocolError, match=r"names neighbours \[2\] whose shares this client"):
        r.clients[1].sign_survivors(ConsistencyRequest(survivors=(1, 2, 3, 4, 5, 6)))


def test_client_refuses_a_round_that_may_sum_fewer_sites_than_its_policy_allows():
    """Checked when the encoding arrives, before any secret is shared: a neighbour with a
    lower floor would otherwise reveal for a set this site refuses to sign."""
    r = new_round(6, min_survivors=5, policy=SecAggPolicy(min_cohort=6))
    requests = r.keys()
    with pytest.raises(ProtocolError, match=r"as few as 5 sites.*at least 6 \(secagg min_cohort"):
        r.clients[1].share(requests[1])
    ok = new_round(6, min_survivors=6, policy=SecAggPolicy(min_cohort=6))
    assert ok.clients[1].share(ok.keys()[1]).shares


def test_no_client_signs_a_survivor_set_below_the_sealed_floor():
    """A coordinator that seals a floor and then names a smaller set (claiming dropouts)
    gets no signature from anyone, whatever each site's own floor."""
    r = new_round(6, min_survivors=6)  # every client's own policy is LAX (min_cohort 2)
    honest = r.to_consistency()
    assert all(req.survivors == (1, 2, 3, 4, 5, 6) for req in honest.values())
    forged = ConsistencyRequest(survivors=(1, 2, 3, 4, 5))
    for i in range(1, 6):
        with pytest.raises(ProtocolError, match=r"only 5 sites survive.*at least 6"):
            r.clients[i].sign_survivors(forged)
    assert r.clients[6].sign_survivors(honest[6]) is not None  # the sealed floor is met


# -- keys from the neighbours --------------------------------------------------------------
def test_client_refuses_keys_from_a_non_neighbour():
    r = new_round(8, degree=2, threshold=2)
    requests = r.keys()
    stranger = next(v for v in r.server.clients if v not in r.server.graph[1] and v != 1)
    stranger_keys = requests[r.server.graph[stranger][0]].keys
    foreign = next(k for k in stranger_keys if k.index == stranger)
    bad = NeighbourKeys(keys=(*requests[1].keys, foreign))
    with pytest.raises(ProtocolError, match="not a neighbour"):
        r.clients[1].share(bad)


def test_client_refuses_duplicate_keys():
    r = new_round(6)
    requests = r.keys()
    keys = requests[1].keys
    with pytest.raises(ProtocolError, match="two sets of keys"):
        r.clients[1].share(NeighbourKeys(keys=(*keys, keys[0])))


def test_client_refuses_its_own_keys_posing_as_a_neighbours():
    r = new_round(6)
    own = r.clients[2].advertise(1)
    r.server.receive_keys(2, own)
    for i in (1, 3, 4, 5, 6):
        r.server.receive_keys(i, r.clients[i].advertise(1))
    requests = r.server.close_keys()
    keys = tuple(
        dataclasses.replace(k, mask_key=own.mask_key) if k.index == 3 else k
        for k in requests[2].keys
    )
    with pytest.raises(ProtocolError, match="reused keys"):
        r.clients[2].share(NeighbourKeys(keys=keys))


def test_client_refuses_fewer_keys_than_the_threshold():
    r = new_round(6)
    requests = r.keys()
    t = r.server.threshold
    with pytest.raises(ProtocolError, match="threshold"):
        r.clients[1].share(NeighbourKeys(keys=requests[1].keys[: t - 1]))


# -- signed keys and survivor sets (sites with identities) ----------------------------------
def signed_round(n: int = 5) -> tuple[Round, dict[int, Identity]]:
    identities = {i: Identity.generate() for i in range(1, n + 1)}
    trusted = TrustedKeys.from_pem(
        {f"site-{i}": ident.public_pem() for i, ident in identities.items()}
    )

    def kwargs(i: int) -> dict:
        return {"sign": identities[i].sign, "verify": trusted, "identity": f"site-{i}"}

    return Round(*make_round(n, FakeCrypto(n), client_kwargs=kwargs)), identities


def test_signed_keys_and_survivor_sets_are_accepted_and_the_round_completes():
    r, _ = signed_round()
    requests = r.keys()
    assert all(k.signature and k.identity == f"site-{k.index}" for k in requests[1].keys)
    for i, reply in r.masked(r.shares(requests)).items():
        r.server.receive_masked(i, reply)
    unmask = r.consistency(r.server.close_masked())
    survivors = (1, 2, 3, 4, 5)
    message = survivors_message(r.clients[1].sealed, survivors)
    trusted = r.clients[1].verify
    for request in unmask.values():
        assert request.survivors == survivors
        assert [s.index for s in request.signatures] == list(survivors)
        for s in request.signatures:
            assert trusted(f"site-{s.index}", message, s.signature, s.certificate)
    result = r.finish(r.reveal(unmask))
    assert np.array_equal(result.total, r.expected(survivors))


def _substitute(requests, target: int, victim: int, **changes) -> NeighbourKeys:
    keys = tuple(
        dataclasses.replace(k, **changes) if k.index == victim else k for k in requests[target].keys
    )
    return NeighbourKeys(keys=keys)


@pytest.mark.parametrize("what", ["other-mask-key", "fresh-mask-key", "fresh-cipher-key"])
def test_substituted_keys_are_refused(what):
    r, _ = signed_round()
    requests = r.keys()
    other = next(k for k in requests[1].keys if k.index == 3)
    fresh = FakeCrypto(99).keypair()[1]
    changes = {
        "other-mask-key": {"mask_key": other.mask_key},
        "fresh-mask-key": {"mask_key": fresh},
        "fresh-cipher-key": {"cipher_key": fresh},
    }[what]
    with pytest.raises(ProtocolError, match="not signed by 'site-2'"):
        r.clients[1].share(_substitute(requests, 1, 2, **changes))


def test_keys_relabelled_or_reattributed_or_unsigned_are_refused():
    r, _ = signed_round()
    requests = r.keys()
    for changes in (
        {"identity": "site-3"},  # someone else's identity, the same signature
        {"signature": b""},
        {"identity": "site-unknown"},
    ):
        client = SecAggClient(
            r.server.setup_for(1), r.clients[1].crypto, verify=r.clients[1].verify, policy=LAX
        )
        client.advertise(1)
        with pytest.raises(ProtocolError, match="not signed by 'site-2'"):
            client.share(_substitute(requests, 1, 2, **changes))
    # client 3's genuine keys, presented as client 2's
    keys3 = next(k for k in requests[1].keys if k.index == 3)
    relabelled = tuple(
        dataclasses.replace(keys3, index=2) if k.index == 2 else k for k in requests[1].keys
    )
    with pytest.raises(ProtocolError, match="not signed by 'site-2'"):
        r.clients[1].share(NeighbourKeys(keys=relabelled))


def test_one_site_cannot_sign_keys_for_two_neighbours():
    r, identities = signed_round()
    requests = r.keys()
    attacker = FakeCrypto(1234)
    cipher_key, mask_key = attacker.keypair()[1], attacker.keypair()[1]
    message = signed_message(r.server.bound, 3, cipher_key, mask_key)  # a valid signature
    forged = PublicKeys(
        index=3,
        cipher_key=cipher_key,
        mask_key=mask_key,
        num_examples=0,
        identity="site-2",
        signature=identities[2].sign(message),
    )
    keys = tuple(forged if k.index == 3 else k for k in requests[1].keys)
    with pytest.raises(ProtocolError, match="not signed by 'site-3', the site the cohort names"):
        r.clients[1].share(NeighbourKeys(keys=keys))


@pytest.mark.parametrize("change", ["cohort-order", "threshold", "degree", "context"])
def test_a_site_shown_another_round_and_the_others_refuse_each_others_keys(change):
    """Keys are signed over the bound context: one view of the round, or no shares."""
    r, identities = signed_round(5)  # complete graph (degree 4), threshold 3
    setup = r.server.setup_for(1)
    other = {
        "cohort-order": {"cohort": ("site-1", "site-2", "site-3", "site-5", "site-4")},
        "threshold": {"threshold": 4},
        "degree": {"degree": 3},  # rounds up to the same complete graph
        "context": {"context": CONTEXT + b"-replayed"},
    }[change]
    fooled = SecAggClient(
        dataclasses.replace(setup, **other),
        r.clients[1].crypto,
        sign=identities[1].sign,
        verify=r.clients[1].verify,
        identity="site-1",
        policy=LAX,
    )
    assert fooled.neighbours == r.clients[1].neighbours
    assert fooled.context != r.server.bound
    r.clients[1] = fooled
    requests = r.keys()
    with pytest.raises(ProtocolError, match="not signed by 'site-1'"):
        r.clients[2].share(requests[2])
    with pytest.raises(ProtocolError, match="not signed by 'site-2'"):
        fooled.share(requests[1])


QUORUM_FAILURES = ["missing", "empty", "corrupted", "another-site", "another-set",
                   "unbound-context", "duplicate", "not-a-survivor"]  # fmt: skip


def _spoil(
    kind: str, entry: SignedSurvivors, first: SignedSurvivors, r: Round, identities
) -> SignedSurvivors | None:
    """``entry`` made worthless in the way ``kind`` says (``None``: left out); ``first`` is
    site 1's genuine signature."""
    sign = identities[entry.index].sign
    survivors = r.clients[1].survivors
    assert survivors is not None
    return {
        "missing": None,
        "empty": dataclasses.replace(entry, signature=b""),
        "corrupted": dataclasses.replace(entry, signature=flip_last_byte(entry.signature)),
        "another-site": dataclasses.replace(entry, index=1 + entry.index % 5),
        "another-set": dataclasses.replace(
            entry, signature=sign(survivors_message(r.server.bound, survivors[:-1]))
        ),
        "unbound-context": dataclasses.replace(
            entry, signature=sign(survivors_message(CONTEXT, survivors))
        ),
        "duplicate": first,  # counted once
        "not-a-survivor": dataclasses.replace(entry, index=6),
    }[kind]


@pytest.mark.parametrize("kind", QUORUM_FAILURES)
def test_client_reveals_only_once_a_majority_of_the_cohort_signed_its_set(kind):
    r, identities = signed_round(5)  # quorum: 3 of the 5
    requests = r.to_unmask()
    genuine = requests[1].signatures
    assert [s.index for s in genuine] == [1, 2, 3, 4, 5]

    def keeping(good: int) -> tuple[SignedSurvivors, ...]:
        spoiled = (_spoil(kind, s, genuine[0], r, identities) for s in genuine[good:])
        return (*genuine[:good], *(s for s in spoiled if s is not None))

    three = dataclasses.replace(requests[1], signatures=keeping(3))
    assert r.clients[1].unmask(three).self_mask  # three good signatures: the boundary
    two = dataclasses.replace(requests[2], signatures=keeping(2))
    with pytest.raises(ProtocolError, match="only 2 valid committee signatures over this survivor"):
        r.clients[2].unmask(two)


def test_the_quorum_grows_with_the_colluders_a_site_allows():
    identities = {i: Identity.generate() for i in range(1, 8)}
    trusted = TrustedKeys.from_pem({f"site-{i}": k.public_pem() for i, k in identities.items()})
    wary = SecAggPolicy(min_cohort=2, min_degree=1, max_colluders=2)  # quorum (7 + 2)//2 + 1

    def kwargs(i: int) -> dict:
        policy = wary if i == 1 else LAX
        return {"sign": identities[i].sign, "verify": trusted, "identity": f"site-{i}",
                "policy": policy}  # fmt: skip

    r = Round(*make_round(7, FakeCrypto(7), degree=6, threshold=5, client_kwargs=kwargs))
    requests = r.to_unmask()
    four = tuple(requests[1].signatures[:4])  # the server's quorum: 7 // 2 + 1
    with pytest.raises(ProtocolError, match=r"only 4 valid committee signatures.*committee of 7"):
        r.clients[1].unmask(dataclasses.replace(requests[1], signatures=four))
    assert r.clients[2].unmask(dataclasses.replace(requests[2], signatures=four)).self_mask


def test_two_survivor_sets_cannot_both_gather_a_quorum():
    """The coordinator tells 1, 2, 3 and 6 that everyone survived and 4, 5 that 6 dropped,
    hoping 1 reveals 6's self-mask share while 4 reveals its mask key. Every site signs one
    set, so only one set can have a majority of the cohort behind it."""
    r, _ = signed_round(6)  # complete graph, threshold 3, quorum 4
    requests = r.to_consistency()
    everyone, without_6 = (1, 2, 3, 4, 5, 6), (1, 2, 3, 4, 5)
    assert requests[1].survivors == everyone
    view = {i: everyone if i in (1, 2, 3, 6) else without_6 for i in r.clients}
    signed = tuple(
        SignedSurvivors(
            index=i, signature=c.sign_survivors(ConsistencyRequest(survivors=view[i])).signature
        )
        for i, c in r.clients.items()
    )
    with pytest.raises(ProtocolError, match="only 2 valid committee signatures"):
        r.clients[4].unmask(UnmaskRequest(survivors=without_6, signatures=signed))
    with pytest.raises(ProtocolError, match="another survivor set"):
        r.clients[5].unmask(UnmaskRequest(survivors=everyone, signatures=signed))
    # the set four sites signed is the round's: its signers reveal for it, and only for it
    reveal = r.clients[1].unmask(UnmaskRequest(survivors=everyone, signatures=signed))
    assert 6 in dict(reveal.self_mask) and not reveal.mask_key


def test_without_verification_a_client_still_reveals_only_for_the_set_it_signed():
    r = new_round(6)
    requests = r.to_unmask()
    assert all(s.signature == b"" for req in requests.values() for s in req.signatures)
    bare = dataclasses.replace(requests[1], signatures=())  # nobody checks signatures here
    reveal = r.clients[1].unmask(bare)
    assert [u for u, _ in reveal.self_mask] == [2, 3, 4, 5, 6]
    with pytest.raises(ProtocolError, match="another survivor set"):
        r.clients[2].unmask(dataclasses.replace(requests[2], survivors=(1, 2, 3, 4, 5)))


# -- misbehaving parties -----------------------------------------------------------------
@pytest.mark.parametrize("how", ["corrupted-share", "false-complaint"])
@pytest.mark.parametrize("crypto", [FakeCrypto, Crypto], ids=["fake", "real"])
def test_a_complaint_leaves_the_complainer_out_and_the_rest_sums_exactly(crypto, how):
    r = new_round(6, crypto(), vector_length=20)  # complete graph, threshold 3
    requests = r.to_mask()
    complainer, accused = 4, 2
    if how == "corrupted-share":
        shares = tuple(
            dataclasses.replace(s, ciphertext=flip_last_byte(s.ciphertext))
            if s.source == accused
            else s
            for s in requests[complainer].shares
        )
        requests[complainer] = dataclasses.replace(requests[complainer], shares=shares)
    replies = r.masked(requests)
    if how == "false-complaint":
        replies[complainer] = dataclasses.replace(replies[complainer], complaints=(accused,))
    assert replies[complainer].complaints == (accused,)
    assert all(not rep.complaints for i, rep in replies.items() if i != complainer)
    for i, reply in replies.items():
        r.server.receive_masked(i, reply)
    assert "could not decrypt the shares of clients [2]" in r.server.excluded[complainer]
    assert complainer not in r.server.proven  # a complaint accuses; it proves nothing
    assert r.server.accused == {accused: {complainer}}  # named for the operator, not proven
    assert accused not in r.server.proven
    consistency = r.server.close_masked()
    assert set(consistency) == {1, 2, 3, 5, 6}
    assert all(req.survivors == (1, 2, 3, 5, 6) for req in consistency.values())
    result = r.finish(r.reveal(r.consistency(consistency)))
    assert result.survivors == (1, 2, 3, 5, 6)  # the accused stays in
    assert np.array_equal(result.total, r.expected(result.survivors))
    assert set(r.server.excluded) == {complainer}


def test_complaint_about_a_share_it_never_got_is_refused():
    r = new_round(6)
    replies = r.masked(r.to_mask())
    bogus = dataclasses.replace(replies[1], complaints=(1,))
    with pytest.raises(ProtocolError, match="complaints about clients"):
        r.server.receive_masked(1, bogus)


@pytest.mark.parametrize("secret", ["self_mask", "mask_key"])
def test_wrong_revealed_share_is_flagged_and_the_sum_is_still_right(secret):
    r = new_round(7, vector_length=30)  # complete graph: 6 holders per secret, threshold 4
    dropped = 7
    reveals = r.reveal(r.to_unmask(skip={dropped}))
    liar, owner = 3, 1 if secret == "self_mask" else dropped
    pairs = getattr(reveals[liar], secret)
    bad = tuple((u, flip_last_byte(s)) if u == owner else (u, s) for u, s in pairs)
    reveals[liar] = dataclasses.replace(reveals[liar], **{secret: bad})
    result = r.finish(reveals)
    assert "wrong share" in r.server.excluded[liar]
    assert result.survivors == (1, 2, 3, 4, 5, 6)
    assert np.array_equal(result.total, r.expected(result.survivors))


def test_wrong_shares_without_spare_holders_abort():
    r = new_round(4, degree=3, threshold=3, vector_length=5)  # exactly threshold holders
    reveals = r.reveal(r.to_unmask())
    pairs = reveals[2].self_mask
    reveals[2] = dataclasses.replace(
        reveals[2], self_mask=tuple((u, flip_last_byte(s)) for u, s in pairs)
    )
    with pytest.raises(SecAggAborted, match="only 2 good shares of client 1"):
        r.finish(reveals)
    assert "wrong share" in r.server.excluded[2]


def _nudged(share: bytes) -> bytes:
    """The share with its lowest limb one higher, still inside the field: a lie that
    interpolates to a valid-looking secret (a flipped bit of a clamped X25519 key)."""
    limbs = np.frombuffer(share, "<u4").astype(np.int64)
    limbs[0] = (limbs[0] + 1) % shamir.PRIME
    return limbs.astype("<u4").tobytes()


def test_six_lying_revealers_are_named_and_no_honest_holder_is_blamed():
    """Red team (issue 15): liars placed on every subset a predictable search would try
    aborted the round unnamed; liars among the first holders framed honest spares. Each
    revealed share is now checked against its owner's digest: every lie is caught."""
    r = new_round(21, degree=20, threshold=11, vector_length=4)  # 20 holders per secret
    reveals = r.reveal(r.to_unmask(skip={21}))  # 21 drops: its mask key is rebuilt too
    liars = {1, 2, 3, 4, 9, 20}
    for liar in liars:
        reveals[liar] = dataclasses.replace(
            reveals[liar],
            self_mask=tuple((u, _nudged(s)) for u, s in reveals[liar].self_mask),
            mask_key=tuple((u, _nudged(s)) for u, s in reveals[liar].mask_key),
        )
    result = r.finish(reveals)
    assert np.array_equal(result.total, r.expected(result.survivors))
    assert {v for v, why in r.server.excluded.items() if "wrong share" in why} == liars
    assert set(r.server.proven) == liars  # checked by the server: safe to record on an abort


def test_an_owner_dealing_shares_of_no_polynomial_is_named_when_the_round_aborts():
    """Its digests vouch for what it dealt, so its holders reveal honestly and are not
    blamed; the shares rebuild no secret it committed to, and the abort names it."""
    r = new_round(7, vector_length=4)
    keys = r.keys()
    real = shamir.split_many

    def crooked(secrets, threshold, holders, random):
        dealt = real(secrets, threshold, holders, random)
        first = sorted(holders)[0]
        dealt[0][first] = _nudged(dealt[0][first])  # one seed share off the polynomial
        return dealt

    for i, request in keys.items():
        shamir.split_many = crooked if i == 3 else real
        try:
            r.server.receive_shares(i, r.clients[i].share(request))
        finally:
            shamir.split_many = real
    requests = r.server.close_shares()
    replies = r.masked(requests)
    assert not any(reply.complaints for reply in replies.values())  # digests match
    for i, reply in replies.items():
        r.server.receive_masked(i, reply)
    reveals = r.reveal(r.consistency(r.server.close_masked()))
    with pytest.raises(SecAggAborted, match="client 3's shares rebuild no secret it committed"):
        r.finish(reveals)
    assert not any("wrong share" in why for why in r.server.excluded.values())
    assert "dealt shares of no single polynomial" in r.server.excluded[3]  # named, recorded


def test_a_holder_complains_about_a_share_its_owner_did_not_vouch_for():
    """A share whose digest does not match (changed by the owner or on the way) is a
    complaint at once: revealing it later would get the honest holder blamed."""
    r = new_round(6, vector_length=4)
    requests = r.to_mask()
    victim = 4
    tampered = tuple(
        dataclasses.replace(s, digests=bytes(32)) if s.source == 2 else s
        for s in requests[victim].shares
    )
    requests[victim] = dataclasses.replace(requests[victim], shares=tampered)
    replies = r.masked(requests)
    assert replies[victim].complaints == (2,)


def test_two_lying_revealers_with_spare_holders_do_not_abort():
    r = new_round(13, degree=12, threshold=10, vector_length=4)
    reveals = r.reveal(r.to_unmask())
    for liar in (2, 3):
        pairs = reveals[liar].self_mask
        reveals[liar] = dataclasses.replace(
            reveals[liar], self_mask=tuple((u, flip_last_byte(s)) for u, s in pairs)
        )
    result = r.finish(reveals)
    assert np.array_equal(result.total, r.expected(result.survivors))
    assert set(r.server.excluded) == {2, 3}


# -- malformed messages and stage order ---------------------------------------------------
def test_masked_vector_of_the_wrong_shape_or_type_is_refused():
    r = new_round(5, vector_length=9)
    replies = r.masked(r.to_mask())
    for vector in (
        np.zeros(10, np.uint32),
        np.zeros(8, np.uint32),
        np.zeros(9, np.int64),
        np.zeros(9, np.float32),
        np.zeros((9, 1), np.uint32),
    ):
        with pytest.raises(ProtocolError, match="masked input must be uint32"):
            r.server.receive_masked(1, dataclasses.replace(replies[1], vector=vector))


def test_client_refuses_to_mask_a_non_uint32_vector():
    r = new_round(5, vector_length=9)
    requests = r.to_mask()
    with pytest.raises(ProtocolError, match="flat uint32"):
        r.clients[1].mask(requests[1], np.zeros(9, np.float64))
    with pytest.raises(ProtocolError, match="flat uint32"):
        r.clients[2].mask(requests[2], np.zeros((3, 3), np.uint32))


def test_client_stage_order_is_enforced():
    r = new_round(5)
    client = r.clients[1]
    with pytest.raises(ProtocolError, match="stage 2"):
        client.share(NeighbourKeys(keys=()))
    fresh = SecAggClient(r.server.setup_for(2), r.clients[2].crypto, policy=LAX)
    with pytest.raises(ProtocolError, match="stage 5"):
        fresh.unmask(UnmaskRequest(survivors=(), signatures=()))
    fresh = SecAggClient(r.server.setup_for(3), r.clients[3].crypto, policy=LAX)
    with pytest.raises(ProtocolError, match="stage 4"):
        fresh.sign_survivors(ConsistencyRequest(survivors=(1, 2, 3)))
    fresh = SecAggClient(r.server.setup_for(4), r.clients[4].crypto, policy=LAX)
    fresh.advertise(1)
    with pytest.raises(ProtocolError, match="stage 1"):
        fresh.advertise(1)


def test_server_stage_order_is_enforced():
    r = new_round(5)
    keys = {i: c.advertise(1) for i, c in r.clients.items()}
    with pytest.raises(ProtocolError, match="stage 2 message, but the round is in stage 1"):
        r.server.receive_shares(1, ShareKeys(shares=(), commitment=bytes(32)))
    for i, k in keys.items():
        r.server.receive_keys(i, k)
    requests = r.server.close_keys()
    with pytest.raises(ProtocolError, match="stage 1 message, but the round is in stage 2"):
        r.server.receive_keys(1, keys[1])
    with pytest.raises(ProtocolError, match="stage 3 message"):
        r.server.receive_masked(1, MaskedInput(vector=np.zeros(8, np.uint32)))
    with pytest.raises(ProtocolError, match="stage 4 message"):
        r.server.receive_signature(1, SurvivorSignature(signature=b""))
    with pytest.raises(ProtocolError, match="stage 5 message"):
        r.server.receive_reveal(1, Reveal(self_mask=(), mask_key=()))
    assert requests


def test_server_refuses_messages_from_outside_the_stage():
    r = new_round(6, degree=5)
    requests = r.keys(skip={6})
    with pytest.raises(ProtocolError, match="client 6 is not part of stage 2"):
        r.server.receive_shares(6, ShareKeys(shares=(), commitment=bytes(32)))
    mask_requests = r.shares(requests, skip={5})
    replies = r.masked(mask_requests)
    with pytest.raises(ProtocolError, match="client 5 is not part of stage 3"):
        r.server.receive_masked(5, replies[1])


def test_server_refuses_malformed_keys():
    r = new_round(5)
    keys = r.clients[1].advertise(3)
    for bad, pattern in (
        (dataclasses.replace(keys, index=2), "labelled as client 2"),
        (dataclasses.replace(keys, mask_key=keys.cipher_key), "must differ"),
        (dataclasses.replace(keys, mask_key=keys.mask_key[:31]), "32 bytes"),
        (dataclasses.replace(keys, num_examples=0), "num_examples"),
        (dataclasses.replace(keys, num_examples=1 << 32), "num_examples"),
    ):
        with pytest.raises(ProtocolError, match=pattern):
            r.server.receive_keys(1, bad)
    with pytest.raises(ProtocolError, match="not part of stage 1"):
        r.server.receive_keys(99, dataclasses.replace(keys, index=99))


def test_server_refuses_malformed_shares():
    r = new_round(5)
    requests = r.keys()
    reply = r.clients[1].share(requests[1])
    with pytest.raises(ProtocolError, match="one share to each"):
        r.server.receive_shares(1, dataclasses.replace(reply, shares=reply.shares[1:]))
    with pytest.raises(ProtocolError, match="one share to each"):
        r.server.receive_shares(
            1, dataclasses.replace(reply, shares=(*reply.shares, reply.shares[0]))
        )
    relabelled = (dataclasses.replace(reply.shares[0], source=2), *reply.shares[1:])
    with pytest.raises(ProtocolError, match="another source"):
        r.server.receive_shares(1, dataclasses.replace(reply, shares=relabelled))
    with pytest.raises(ProtocolError, match="commitment"):
        r.server.receive_shares(1, dataclasses.replace(reply, commitment=b"short"))


def test_client_refuses_misrouted_or_duplicate_shares():
    r = new_round(5)
    requests = r.to_mask()
    shares = requests[1].shares
    misrouted = (dataclasses.replace(shares[0], target=2), *shares[1:])
    with pytest.raises(ProtocolError, match="routed to"):
        r.clients[1].mask(
            dataclasses.replace(requests[1], shares=misrouted), np.zeros(8, np.uint32)
        )
    with pytest.raises(ProtocolError, match="two shares"):
        r.clients[2].mask(
            dataclasses.replace(requests[2], shares=(*requests[2].shares, requests[2].shares[0])),
            np.zeros(8, np.uint32),
        )
    t = r.server.threshold
    with pytest.raises(ProtocolError, match="threshold"):
        r.clients[3].mask(
            dataclasses.replace(requests[3], shares=requests[3].shares[: t - 1]),
            np.zeros(8, np.uint32),
        )


def test_server_refuses_reveals_that_do_not_answer_the_request():
    r = new_round(5)  # complete graph, threshold 3
    reveal = r.clients[1].unmask(r.to_unmask(skip={5})[1])
    assert [u for u, _ in reveal.self_mask] == [2, 3, 4]
    assert [u for u, _ in reveal.mask_key] == [5]
    swapped = dataclasses.replace(
        reveal, self_mask=reveal.self_mask[1:], mask_key=(reveal.self_mask[0], *reveal.mask_key)
    )
    for bad in (
        dataclasses.replace(reveal, self_mask=reveal.self_mask[1:]),
        dataclasses.replace(reveal, mask_key=()),
        dataclasses.replace(reveal, self_mask=(*reveal.self_mask, reveal.mask_key[0])),
        swapped,  # one owner's secrets the other way round
    ):
        with pytest.raises(ProtocolError, match="do not answer"):
            r.server.receive_reveal(1, bad)
    short = tuple((u, s[:-1]) for u, s in reveal.self_mask)
    with pytest.raises(ProtocolError, match=f"{shamir.SHARE_BYTES} bytes"):
        r.server.receive_reveal(1, dataclasses.replace(reveal, self_mask=short))


def _setup(**changes) -> Setup:
    base = Setup(context=CONTEXT, index=1, cohort=cohort(5), degree=4, threshold=3)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("setup", "pattern"),
    [
        (_setup(index=0), "client index 0 is not in the cohort of 5"),
        (_setup(index=6), "client index 6 is not in the cohort of 5"),
        (_setup(cohort=("a", "b", "a", "c", "d")), "names a site twice"),
        (_setup(cohort=("a", "", "c", "d", "e")), "or an empty name"),
        (_setup(degree=0), "degree 0 is invalid"),
        (_setup(threshold=5), "threshold 5 exceeds the 4 neighbours"),
        (_setup(threshold=2), "rebuild both secrets"),  # 2t = 4 < k + 1
    ],
)
def test_invalid_setups_are_refused_by_the_client(setup, pattern):
    with pytest.raises(ProtocolError, match=pattern):
        check_setup(setup, LAX)
    with pytest.raises(ProtocolError, match=pattern):
        SecAggClient(setup, FakeCrypto(), policy=LAX)


def test_a_site_refuses_a_cohort_that_puts_another_site_at_its_index():
    setup = _setup(index=2)
    assert check_setup(setup, LAX, identity="site-2") == (1, 3, 4, 5)
    with pytest.raises(ProtocolError, match=r"puts 'site-2' at this site's index 2.*'site-3'"):
        check_setup(setup, LAX, identity="site-3")
    with pytest.raises(ProtocolError, match="this site is 'site-3'"):
        SecAggClient(setup, FakeCrypto(), identity="site-3", policy=LAX)


def test_the_default_policy_refuses_sparse_graphs_and_small_cohorts():
    big = tuple(f"s{i}" for i in range(16))
    sparse = Setup(context=CONTEXT, index=1, cohort=big, degree=4, threshold=3)
    with pytest.raises(ProtocolError, match="min_degree"):
        check_setup(sparse)  # 16 sites want 2·⌈log2 16⌉ = 8 neighbours
    assert len(check_setup(sparse, LAX)) == 4
    dense = dataclasses.replace(sparse, degree=8, threshold=5)
    assert len(check_setup(dense)) == 8
    with pytest.raises(ProtocolError, match="min_cohort"):
        check_setup(Setup(context=CONTEXT, index=1, cohort=("a", "b"), degree=1, threshold=1))


def test_invalid_servers_are_refused():
    with pytest.raises(ValueError, match="at least 2 clients"):
        SecAggServer(context=CONTEXT, cohort=["a"], vector_length=3, clip=1.0, crypto=FakeCrypto())
    with pytest.raises(ValueError, match="threshold"):
        make_round(6, FakeCrypto(), degree=5, threshold=2)  # not above half of 5
    with pytest.raises(ValueError, match="threshold"):
        make_round(6, FakeCrypto(), degree=5, threshold=6)


def test_encrypted_share_type_is_what_clients_send():
    r = new_round(4)
    requests = r.keys()
    reply = r.clients[1].share(requests[1])
    assert all(isinstance(s, EncryptedShare) and s.source == 1 for s in reply.shares)
    assert {s.target for s in reply.shares} == set(r.server.graph[1])
    assert len(reply.commitment) == 32


# -- known bugs (found by these tests, now fixed) ---------------
@pytest.mark.parametrize(
    "misuse",
    ["close_keys again", "close_shares again", "close_consistency early", "finish early"],
)
def test_closing_a_stage_out_of_order_is_refused(misuse):
    r = new_round(5)
    r.to_mask()  # the round is now in stage 3
    call = {
        "close_keys again": r.server.close_keys,
        "close_shares again": r.server.close_shares,
        "close_consistency early": r.server.close_consistency,
        "finish early": r.server.finish,
    }[misuse]
    with pytest.raises(ProtocolError, match="cannot close stage"):
        call()


def test_closing_the_masked_stage_twice_is_refused():
    r = new_round(5)
    r.to_consistency()
    with pytest.raises(ProtocolError, match="cannot close stage 3: the round is in stage 4"):
        r.server.close_masked()


def test_rerunning_close_shares_is_refused_and_the_round_still_sums_exactly():
    r = new_round(6, vector_length=5)
    requests = r.to_mask()
    victim, sender = 4, 2
    shares = tuple(
        dataclasses.replace(s, ciphertext=flip_last_byte(s.ciphertext)) if s.source == sender else s
        for s in requests[victim].shares
    )
    requests[victim] = dataclasses.replace(requests[victim], shares=shares)
    for i, reply in r.masked(requests).items():
        r.server.receive_masked(i, reply)
    with pytest.raises(ProtocolError, match="cannot close stage 2: the round is in stage 3"):
        r.server.close_shares()  # e.g. a coordinator retrying a stage
    result = r.finish(r.reveal(r.consistency(r.server.close_masked())))
    assert result.survivors == (1, 2, 3, 5, 6)
    assert np.array_equal(result.total, r.expected(result.survivors))


@pytest.mark.parametrize("key", ["cipher_key", "mask_key"])
def test_a_low_order_public_key_is_a_protocol_error(key):
    r = new_round(5, Crypto())
    advertised = {i: c.advertise(1) for i, c in r.clients.items()}
    weak = dataclasses.replace(advertised[2], **{key: bytes(32)})
    with pytest.raises(ProtocolError, match="unusable X25519 public key"):
        r.server.receive_keys(2, weak)  # an honest server refuses it at once
    for i, keys in advertised.items():
        r.server.receive_keys(i, keys)
    requests = r.server.close_keys()
    # a dishonest server forwards it anyway: the client declines instead of crashing
    forged = tuple(weak if k.index == 2 else k for k in requests[1].keys)
    encoding = requests[1].encoding
    if key == "cipher_key":  # used right away, to encrypt the shares for client 2
        with pytest.raises(ProtocolError):
            r.clients[1].share(NeighbourKeys(keys=forged, encoding=encoding))
        return
    r.clients[1].share(NeighbourKeys(keys=forged, encoding=encoding))  # mask keys: stage 3,
    with pytest.raises(ProtocolError):  # where every agreement goes through Crypto.agree
        Crypto().agree(Crypto().keypair()[0], bytes(32), b"fedops-secagg pairwise mask")
