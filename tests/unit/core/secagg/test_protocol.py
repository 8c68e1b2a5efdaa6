"""SecAgg+ end to end: the server unmasks exactly the survivors' sum, or aborts.

The property tests drive a whole round (client and server state machines)
with random graphs, thresholds, vector sizes and dropouts at every stage, and
compare against a reference model of who survives, computed here from
``server.graph`` and ``server.threshold``. Most runs use the hash-based
:class:`fakes.FakeCrypto` for speed; a few use the real :class:`Crypto`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pytest
from fakes import FakeCrypto
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from fedops.core.secagg import ProtocolError, SecAggAborted, graph
from fedops.core.secagg.client import SecAggClient, check_setup
from fedops.core.secagg.messages import (
    EncryptedShare,
    MaskedInput,
    MaskRequest,
    NeighbourKeys,
    PublicKeys,
    Reveal,
    Setup,
    ShareKeys,
    UnmaskRequest,
    signed_message,
)
from fedops.core.secagg.primitives import SecAggCrypto
from fedops.core.secagg.server import SecAggServer, SecureSum
from fedops.core.secagg.update import decode_mean, encode_update, vector_length
from fedops.crypto import Crypto, Identity, TrustedKeys

CONTEXT = b"test-run\x00round-1"
STAGES = ("keys", "shares", "masked", "finish")


# -- driving a round -----------------------------------------------------------------
@dataclass
class Drops:
    """Who goes silent at each stage (their reply never reaches the server)."""

    keys: set[int] = field(default_factory=set)  # never advertise keys
    shares: set[int] = field(default_factory=set)  # advertise, then vanish
    masked: set[int] = field(default_factory=set)  # share keys, send no masked input
    unmask: set[int] = field(default_factory=set)  # mask, then never reveal


@dataclass
class Outcome:
    aborted_at: str | None = None
    result: SecureSum | None = None
    inputs: dict[int, np.ndarray] = field(default_factory=dict)


def make_round(
    n: int,
    crypto: SecAggCrypto,
    *,
    vector_length: int = 8,
    degree: int | None = None,
    threshold: int | None = None,
    seed: int = 0,
    min_survivors: int | None = None,
    client_kwargs: Callable[[int], dict] | None = None,
) -> tuple[SecAggServer, dict[int, SecAggClient]]:
    server = SecAggServer(
        context=CONTEXT,
        clients=list(range(1, n + 1)),
        vector_length=vector_length,
        clip=1.0,
        crypto=crypto,
        degree=degree,
        threshold=threshold,
        seed=seed,
        min_survivors=min_survivors,
    )
    clients = {
        i: SecAggClient(server.setup_for(i), crypto, **(client_kwargs(i) if client_kwargs else {}))
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
    """Run all four stages; an abort is reported with the stage that raised it."""
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
        unmask_requests = server.close_masked()
        stage = "finish"
        for i, req in unmask_requests.items():
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
def t_core(members: set[int], nbrs: Mapping[int, tuple[int, ...]], t: int) -> set[int]:
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
    """``(stage that must abort or None, the survivors whose inputs are summed)``."""
    nbrs, t, least = server.graph, server.threshold, server.min_survivors

    def alive(u: int, members: set[int]) -> int:
        return len(set(nbrs[u]) & members)

    u1 = t_core(set(server.clients) - drops.keys, nbrs, t)
    if len(u1) < least:
        return "keys", set()
    u2 = t_core(u1 - drops.shares, nbrs, t)
    if len(u2) < least:
        return "shares", set()
    u3 = u2 - drops.masked
    # every survivor's self-mask seed and every dropped client's mask key must be
    # recoverable from >= t neighbours that are still there
    if len(u3) < least or any(alive(u, u3) < t for u in u2):
        return "masked", set()
    revealers = u3 - drops.unmask
    if any(alive(u, revealers) < t for u in u2):
        return "finish", set()
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
    assert set(outcome.inputs) == survivors
    assert result.total.dtype == np.uint32
    assert np.array_equal(result.total, sum_mod(outcome.inputs.values(), server.vector_length))
    # honest parties: no survivor is flagged, and every other participant has a reason
    assert not set(result.survivors) & set(server.excluded)
    advertised = set(server.clients) - drops.keys
    assert advertised - survivors <= set(server.excluded)
    return "summed"


@st.composite
def rounds(draw, max_clients: int, max_length: int):
    n = draw(st.integers(2, max_clients))
    degree = draw(st.integers(1, n - 1))
    seed = draw(st.integers(0, 2**16))
    actual = min(len(v) for v in graph.neighbours(range(1, n + 1), degree, seed).values())
    threshold = draw(st.integers(actual // 2 + 1, actual))
    length = draw(st.integers(1, max_length))
    clients = list(range(1, n + 1))

    def dropouts():
        rate = draw(st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.6]))
        size = draw(st.integers(0, int(rate * n)))
        return draw(st.sets(st.sampled_from(clients), min_size=size, max_size=size))

    drops = Drops(keys=dropouts(), shares=dropouts(), masked=dropouts(), unmask=dropouts())
    return n, degree, threshold, seed, length, drops


@settings(max_examples=120, deadline=None)
@given(case=rounds(max_clients=40, max_length=300), data_seed=st.integers(0, 2**32 - 1))
@example(case=(2, 1, 1, 0, 1, Drops()), data_seed=0)
@example(case=(2, 1, 1, 0, 3, Drops(unmask={2})), data_seed=0)
@example(case=(10, 4, 3, 1, 5, Drops(masked={1, 2, 3})), data_seed=0)
@example(case=(12, 11, 11, 1, 5, Drops(masked={4})), data_seed=0)
@example(
    case=(40, 39, 20, 5, 300, Drops(keys={1}, shares={2}, masked={3}, unmask={4})), data_seed=1
)
def test_round_sums_survivors_exactly_or_aborts(case, data_seed):
    n, degree, threshold, seed, length, drops = case
    server, clients = make_round(
        n,
        FakeCrypto(data_seed),
        vector_length=length,
        degree=degree,
        threshold=threshold,
        seed=seed,
    )
    assert server.threshold == threshold
    event(check_round(server, clients, drops, np.random.default_rng(data_seed)))


@settings(max_examples=10, deadline=None)
@given(case=rounds(max_clients=10, max_length=40), data_seed=st.integers(0, 2**32 - 1))
@example(case=(6, 5, 3, 0, 17, Drops(masked={2}, unmask={5})), data_seed=0)
def test_round_with_real_crypto(case, data_seed):
    n, degree, threshold, seed, length, drops = case
    server, clients = make_round(
        n, Crypto(), vector_length=length, degree=degree, threshold=threshold, seed=seed
    )
    event(check_round(server, clients, drops, np.random.default_rng(data_seed)))


@pytest.mark.parametrize("n", [2, 3, 5, 16, 33])
def test_default_degree_and_threshold_round_without_dropouts(n):
    server, clients = make_round(n, FakeCrypto(n), vector_length=11)
    assert server.degree == graph.default_degree(n)
    assert server.threshold == graph.default_threshold(server.degree)
    assert check_round(server, clients, Drops(), np.random.default_rng(n)) == "summed"


def test_min_survivors_aborts_before_keys_are_shared():
    server, clients = make_round(6, FakeCrypto(), min_survivors=6)
    outcome = drive(server, clients, Drops(keys={3}), np.random.default_rng(0))
    assert outcome.aborted_at == "keys"


def test_dropout_after_masking_still_sums_the_rest():
    server, clients = make_round(8, FakeCrypto(), degree=7, vector_length=50)
    outcome = drive(server, clients, Drops(masked={2, 7}), np.random.default_rng(1))
    assert outcome.result is not None
    assert outcome.result.survivors == (1, 3, 4, 5, 6, 8)
    assert np.array_equal(outcome.result.total, sum_mod(outcome.inputs.values(), 50))
    assert set(server.excluded) == {2, 7}


def test_too_many_dropouts_in_one_neighbourhood_abort():
    # a ring of degree 2 with threshold 2: losing a neighbour of a survivor after
    # masking leaves its self mask unrecoverable
    server, clients = make_round(8, FakeCrypto(), degree=2, threshold=2)
    u = 1
    outcome = drive(server, clients, Drops(masked={server.graph[u][0]}), np.random.default_rng(0))
    assert outcome.aborted_at == "masked"
    assert outcome.result is None


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
    for i, req in mask_requests.items():
        if i != 4:  # drops before sending its update
            vec, _ = encode_update(start, trained[i], examples[i], req.encoding, rng)
            server.receive_masked(i, clients[i].mask(req, vec))
    for i, req in server.close_masked().items():
        server.receive_reveal(i, clients[i].unmask(req))
    result = server.finish()
    survivors = result.survivors
    assert 4 not in survivors and len(survivors) == 8
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

    def to_mask(self, skip=()) -> dict[int, MaskRequest]:
        return self.shares(self.keys(), skip)

    def to_unmask(self, skip=()) -> dict[int, UnmaskRequest]:
        for i, reply in self.masked(self.to_mask(), skip).items():
            self.server.receive_masked(i, reply)
        return self.server.close_masked()

    def reveal(self, requests: Mapping[int, UnmaskRequest]) -> dict[int, Reveal]:
        return {i: self.clients[i].unmask(req) for i, req in requests.items()}


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


def test_client_refuses_to_reveal_both_secrets_of_one_client():
    r = new_round(6)
    requests = r.to_unmask()
    client = r.clients[1]
    other = r.server.graph[1][0]
    held = tuple(v for v in requests[1].survivors if v != other)
    bad = UnmaskRequest(survivors=(*held, other), dropped=(other,))
    with pytest.raises(ProtocolError, match="both survivors and dropped"):
        client.unmask(bad)


def test_client_refuses_unmask_for_clients_it_holds_no_shares_of():
    r = new_round(8, degree=2, threshold=2)
    requests = r.to_unmask()
    stranger = next(v for v in r.server.clients if v not in r.server.graph[1] and v != 1)
    req = dataclasses.replace(requests[1], dropped=(stranger,))
    with pytest.raises(ProtocolError, match="no shares held"):
        r.clients[1].unmask(req)


def test_client_refuses_unmask_when_too_few_survive():
    r = new_round(6)  # complete graph, threshold 3
    requests = r.to_unmask()
    survivors = requests[1].survivors
    req = UnmaskRequest(survivors=survivors[:1], dropped=())
    with pytest.raises(ProtocolError, match="threshold"):
        r.clients[1].unmask(req)


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


# -- signed keys (consortium mode) ------------------------------------------------------
def signed_round(n: int = 5) -> tuple[Round, dict[int, Identity]]:
    identities = {i: Identity.generate() for i in range(1, n + 1)}
    trusted = TrustedKeys.from_pem(
        {f"site-{i}": ident.public_pem() for i, ident in identities.items()}
    )

    def kwargs(i: int) -> dict:
        return {"sign": identities[i].sign, "verify": trusted, "identity": f"site-{i}"}

    return Round(*make_round(n, FakeCrypto(n), client_kwargs=kwargs)), identities


def test_signed_keys_are_accepted_and_the_round_completes():
    r, _ = signed_round()
    requests = r.keys()
    assert all(k.signature and k.identity == f"site-{k.index}" for k in requests[1].keys)
    for i, reply in r.masked(r.shares(requests)).items():
        r.server.receive_masked(i, reply)
    reveals = r.reveal(r.server.close_masked())
    for i, reveal in reveals.items():
        r.server.receive_reveal(i, reveal)
    result = r.server.finish()
    assert np.array_equal(result.total, sum_mod(r.inputs.values(), r.server.vector_length))


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
    with pytest.raises(ProtocolError, match="not signed by that site"):
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
            r.server.setup_for(1), r.clients[1].crypto, verify=r.clients[1].verify
        )
        client.advertise(1)
        with pytest.raises(ProtocolError, match="not signed"):
            client.share(_substitute(requests, 1, 2, **changes))
    # client 3's genuine keys, presented as client 2's
    keys3 = next(k for k in requests[1].keys if k.index == 3)
    relabelled = tuple(
        dataclasses.replace(keys3, index=2) if k.index == 2 else k for k in requests[1].keys
    )
    with pytest.raises(ProtocolError, match="not signed"):
        r.clients[1].share(NeighbourKeys(keys=relabelled))


# -- misbehaving parties -----------------------------------------------------------------
@pytest.mark.parametrize("crypto", [FakeCrypto, Crypto], ids=["fake", "real"])
def test_corrupted_share_excludes_its_sender(crypto):
    r = new_round(6, crypto(), vector_length=20)  # complete graph, threshold 3
    requests = r.to_mask()
    victim, sender = 4, 2
    shares = tuple(
        dataclasses.replace(s, ciphertext=flip_last_byte(s.ciphertext)) if s.source == sender else s
        for s in requests[victim].shares
    )
    requests[victim] = dataclasses.replace(requests[victim], shares=shares)
    replies = r.masked(requests)
    assert replies[victim].complaints == (sender,)
    assert all(not rep.complaints for i, rep in replies.items() if i != victim)
    for i, reply in replies.items():
        r.server.receive_masked(i, reply)
    assert "could not decrypt" in r.server.excluded[sender]
    unmask = r.server.close_masked()
    assert sender not in unmask
    assert all(sender not in req.survivors for req in unmask.values())
    for i, reveal in r.reveal(unmask).items():
        r.server.receive_reveal(i, reveal)
    result = r.server.finish()
    assert result.survivors == (1, 3, 4, 5, 6)
    expected = sum_mod([r.inputs[i] for i in result.survivors], 20)
    assert np.array_equal(result.total, expected)


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
    requests = r.to_unmask(skip={dropped})
    reveals = r.reveal(requests)
    liar, owner = 3, 1 if secret == "self_mask" else dropped
    pairs = getattr(reveals[liar], secret)
    bad = tuple((u, flip_last_byte(s)) if u == owner else (u, s) for u, s in pairs)
    reveals[liar] = dataclasses.replace(reveals[liar], **{secret: bad})
    for i, reveal in reveals.items():
        r.server.receive_reveal(i, reveal)
    result = r.server.finish()
    assert "wrong share" in r.server.excluded[liar]
    assert result.survivors == (1, 2, 3, 4, 5, 6)
    assert np.array_equal(result.total, sum_mod(r.inputs.values(), 30))


def test_wrong_shares_without_spare_holders_abort():
    r = new_round(4, degree=3, threshold=3, vector_length=5)  # exactly threshold holders
    requests = r.to_unmask()
    reveals = r.reveal(requests)
    pairs = reveals[2].self_mask
    reveals[2] = dataclasses.replace(
        reveals[2], self_mask=tuple((u, flip_last_byte(s)) for u, s in pairs)
    )
    for i, reveal in reveals.items():
        r.server.receive_reveal(i, reveal)
    with pytest.raises(SecAggAborted, match="inconsistent"):
        r.server.finish()


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
    fresh = SecAggClient(r.server.setup_for(2), r.clients[2].crypto)
    with pytest.raises(ProtocolError, match="stage 4"):
        fresh.unmask(UnmaskRequest(survivors=(), dropped=()))
    fresh2 = SecAggClient(r.server.setup_for(3), r.clients[3].crypto)
    fresh2.advertise(1)
    with pytest.raises(ProtocolError, match="stage 1"):
        fresh2.advertise(1)


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
    r = new_round(5)
    requests = r.to_unmask()
    reveal = r.clients[1].unmask(requests[1])
    with pytest.raises(ProtocolError, match="do not answer"):
        r.server.receive_reveal(1, dataclasses.replace(reveal, self_mask=reveal.self_mask[1:]))
    short = tuple((u, s[:-1]) for u, s in reveal.self_mask)
    with pytest.raises(ProtocolError, match="66 bytes"):
        r.server.receive_reveal(1, dataclasses.replace(reveal, self_mask=short))


def test_invalid_setups_are_refused():
    with pytest.raises(ValueError, match="at least 2 clients"):
        SecAggServer(context=CONTEXT, clients=[1], vector_length=3, clip=1.0, crypto=FakeCrypto())
    with pytest.raises(ValueError, match="threshold"):
        make_round(6, FakeCrypto(), degree=5, threshold=2)  # not above half of 5
    with pytest.raises(ValueError, match="threshold"):
        make_round(6, FakeCrypto(), degree=5, threshold=6)
    for setup, pattern in (
        (Setup(context=CONTEXT, index=1, neighbours=(2, 3, 4, 5), threshold=2), "threshold"),
        (Setup(context=CONTEXT, index=1, neighbours=(1, 3), threshold=2), "invalid"),
        (Setup(context=CONTEXT, index=0, neighbours=(2, 3), threshold=2), "invalid"),
        (Setup(context=CONTEXT, index=1, neighbours=(2, 2, 3), threshold=2), "distinct"),
    ):
        with pytest.raises(ProtocolError, match=pattern):
            check_setup(setup)
        with pytest.raises(ProtocolError, match=pattern):
            SecAggClient(setup, FakeCrypto())


def test_encrypted_share_type_is_what_clients_send():
    r = new_round(4)
    requests = r.keys()
    reply = r.clients[1].share(requests[1])
    assert all(isinstance(s, EncryptedShare) and s.source == 1 for s in reply.shares)
    assert {s.target for s in reply.shares} == set(r.server.graph[1])
    assert len(reply.commitment) == 32


# -- known bugs (found by these tests, now fixed) ---------------
@pytest.mark.parametrize("misuse", ["close_keys again", "close_shares again", "finish early"])
def test_closing_a_stage_out_of_order_is_refused(misuse):
    r = new_round(5)
    r.to_mask()  # the round is now in stage 3
    call = {
        "close_keys again": r.server.close_keys,
        "close_shares again": r.server.close_shares,
        "finish early": r.server.finish,
    }[misuse]
    with pytest.raises(ProtocolError, match="stage"):
        call()


def test_rerunning_close_shares_cannot_corrupt_the_sum():
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
    try:
        r.server.close_shares()  # e.g. a coordinator retrying a stage
        unmask = r.server.close_masked()
        for i, req in unmask.items():
            with contextlib.suppress(ProtocolError):  # the complainer holds no such share
                r.server.receive_reveal(i, r.clients[i].unmask(req))
        result = r.server.finish()
    except (ProtocolError, SecAggAborted):
        return  # refusing is fine; a wrong sum is not
    expected = sum_mod([r.inputs[i] for i in result.survivors], 5)
    assert np.array_equal(result.total, expected)


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
    if key == "cipher_key":  # used right away, to encrypt the shares for client 2
        with pytest.raises(ProtocolError):
            r.clients[1].share(NeighbourKeys(keys=forged))
        return
    r.clients[1].share(NeighbourKeys(keys=forged))  # mask keys are only used in stage 3,
    with pytest.raises(ProtocolError):  # where every agreement goes through Crypto.agree
        Crypto().agree(Crypto().keypair()[0], bytes(32), b"fedops-secagg pairwise mask")


def test_one_site_cannot_sign_keys_for_two_neighbours():
    r, identities = signed_round()
    requests = r.keys()
    attacker = FakeCrypto(1234)
    cipher_key, mask_key = attacker.keypair()[1], attacker.keypair()[1]
    message = signed_message(CONTEXT, 3, cipher_key, mask_key)
    forged = PublicKeys(
        index=3,
        cipher_key=cipher_key,
        mask_key=mask_key,
        num_examples=1,
        identity="site-2",
        signature=identities[2].sign(message),
    )
    keys = tuple(forged if k.index == 3 else k for k in requests[1].keys)
    with pytest.raises(ProtocolError):
        r.clients[1].share(NeighbourKeys(keys=keys))


def test_two_lying_revealers_with_spare_holders_do_not_abort():
    r = new_round(13, degree=12, threshold=10, vector_length=4)
    reveals = r.reveal(r.to_unmask())
    for liar in (2, 3):
        pairs = reveals[liar].self_mask
        reveals[liar] = dataclasses.replace(
            reveals[liar], self_mask=tuple((u, flip_last_byte(s)) for u, s in pairs)
        )
    for i, reveal in reveals.items():
        r.server.receive_reveal(i, reveal)
    result = r.server.finish()
    assert np.array_equal(result.total, sum_mod(r.inputs.values(), 4))
    assert {2, 3} <= set(r.server.excluded)
