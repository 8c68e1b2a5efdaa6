"""A malicious coordinator that shows sites different survivor sets learns no single update.

Threat model (fedops.core.secagg): the coordinator routes every message and may
tell each site a different story in the consistency and unmask stages; up to
``c`` sites collude with it (they reveal every share they hold and sign
anything), where the sites' policy demands ``2t >= k + c + 1``. Sites have
identities, so the coordinator cannot forge their signatures.

The coordinator's knowledge is modelled explicitly: the shares honest sites
revealed, plus everything colluders hold. From it we compute which secrets it
can rebuild (``t`` shares of one secret) and check, for every honest site,
that it never holds both of that site's secrets and never holds the self mask
together with every pairwise mask the site's input carries, which is what
rebuilding one update takes. Hypothesis draws the cohort, graph, threshold,
withheld shares and the views; an explicit example is the attack that worked
before the consistency check (victim "survived" for its neighbours, each
partner "dropped" for the partner's neighbours).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from dataclasses import dataclass, field

import numpy as np
import pytest
from fakes import FakeCrypto
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedops.core.secagg import ProtocolError, graph
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    MaskRequest,
    SignedSurvivors,
    UnmaskRequest,
    bind,
    survivors_message,
)
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.server import SecAggServer

CONTEXT = b"malicious-views"
LENGTH = 4


def _secret(name: str) -> bytes:
    return hashlib.sha256(b"identity " + name.encode()).digest()


def _sign(name: str):
    return lambda message: hmac.new(_secret(name), message, "sha256").digest()


def _verify(identity: str, message: bytes, signature: bytes, certificate: bytes) -> bool:
    return hmac.compare_digest(hmac.new(_secret(identity), message, "sha256").digest(), signature)


@dataclass
class Attack:
    n: int
    degree: int
    threshold: int
    colluders: set[int]
    withheld: set[tuple[int, int]]  # (source, target) shares the coordinator never delivers
    views: dict[int, tuple[int, ...]]  # the survivor set each site is shown
    seed: int = 0
    committee: int | None = None  # whose signatures count (None: the server's default)


@dataclass
class Knowledge:
    self_mask: dict[int, set[int]] = field(default_factory=dict)  # owner -> holders revealing
    mask_key: dict[int, set[int]] = field(default_factory=dict)

    def add(self, holder: int, reveal_self: list[int], reveal_key: list[int]) -> None:
        for owner in reveal_self:
            self.self_mask.setdefault(owner, set()).add(holder)
        for owner in reveal_key:
            self.mask_key.setdefault(owner, set()).add(holder)


def play(
    attack: Attack, *, check_signatures: bool = True
) -> tuple[Knowledge, dict[int, set[int]], int, set[int]]:
    """Run the round with the attack; ``(knowledge, masked-with sets, t, honest sites)``."""
    cohort = [f"site-{i}" for i in range(1, attack.n + 1)]
    crypto = FakeCrypto(attack.seed)
    server = SecAggServer(
        context=CONTEXT,
        cohort=cohort,
        vector_length=LENGTH,
        clip=1.0,
        crypto=crypto,
        degree=attack.degree,
        threshold=attack.threshold,
        min_survivors=2,
        committee=attack.committee,
    )
    t = server.threshold
    policy = SecAggPolicy(min_cohort=2, min_degree=1, max_colluders=len(attack.colluders))
    clients = {
        i: SecAggClient(
            server.setup_for(i),
            crypto,
            sign=_sign(cohort[i - 1]),
            verify=_verify if check_signatures else None,
            identity=cohort[i - 1],
            policy=policy,
        )
        for i in range(1, attack.n + 1)
    }
    for i, c in clients.items():
        server.receive_keys(i, c.advertise(1))
    for i, request in server.close_keys().items():
        server.receive_shares(i, clients[i].share(request))
    masked_with: dict[int, set[int]] = {}
    for i, request in server.close_shares().items():
        shares = tuple(s for s in request.shares if (s.source, i) not in attack.withheld)
        try:
            clients[i].mask(
                MaskRequest(shares=shares, encoding=request.encoding),
                np.zeros(LENGTH, np.uint32),
            )
        except ProtocolError:
            continue
        masked_with[i] = set(clients[i]._held)

    knowledge = Knowledge()
    for c in attack.colluders & set(masked_with):  # colluders hand over all they hold
        held = list(clients[c]._held)
        knowledge.add(c, held, held)
    honest = set(masked_with) - attack.colluders
    signatures: dict[int, tuple[tuple[int, ...], bytes]] = {}
    for v in honest:
        view = attack.views.get(v, ())
        try:
            reply = clients[v].sign_survivors(ConsistencyRequest(survivors=view))
        except ProtocolError:
            continue
        signatures[v] = (view, reply.signature)
    for v, (view, _) in signatures.items():
        # the coordinator hands over every signature it holds over v's view: honest
        # sites' (it cannot forge them) and colluders' (they sign whatever it asks)
        message = survivors_message(clients[v].context, view)
        given = [
            SignedSurvivors(index=w, signature=_sign(cohort[w - 1])(message))
            for w in sorted(attack.colluders)
        ] + [
            SignedSurvivors(index=w, signature=sig)
            for w, (other, sig) in sorted(signatures.items())
            if other == view
        ]
        try:
            reveal = clients[v].unmask(UnmaskRequest(survivors=view, signatures=tuple(given)))
        except ProtocolError:
            continue
        knowledge.add(v, [u for u, _ in reveal.self_mask], [u for u, _ in reveal.mask_key])
    return knowledge, masked_with, t, honest


def exposed(knowledge: Knowledge, masked_with: dict[int, set[int]], t: int, honest: set[int]):
    """Honest sites whose update the coordinator can rebuild, and why."""
    has_seed = {u for u, h in knowledge.self_mask.items() if len(h) >= t}
    has_key = {u for u, h in knowledge.mask_key.items() if len(h) >= t}
    colluders = set(masked_with) - honest
    found = []
    for u in sorted(honest):
        if u in has_seed and u in has_key:
            found.append((u, "both secrets"))
        elif u in has_seed and all(
            p in has_key or p in colluders or u in has_key for p in masked_with[u]
        ):
            found.append((u, "self mask and every pairwise mask"))
    return found


@st.composite
def attacks(draw) -> Attack:
    n = draw(st.integers(3, 40))
    degree = draw(st.integers(1, n - 1))
    k = graph.effective_degree(n, degree)
    c = draw(st.sampled_from([0, 0, 1, 2]))
    low = (k + c) // 2 + 1
    if low > k:
        c, low = 0, k // 2 + 1
    threshold = draw(st.integers(low, k))
    clients = list(range(1, n + 1))
    colluders = set(draw(st.lists(st.sampled_from(clients), max_size=c, unique=True)))
    seed = draw(st.integers(0, 2**16))
    committee = draw(st.integers(1, n))  # any committee the coordinator names
    nbrs = graph.neighbours(
        clients, degree, graph.graph_seed(_bound(n, degree, threshold, committee))
    )
    edges = [(u, v) for u in clients for v in nbrs[u]]
    withheld = set(draw(st.lists(st.sampled_from(edges), max_size=min(len(edges), 2 * n))))
    # a handful of candidate survivor sets, each site shown one of them
    candidates = [
        tuple(sorted(draw(st.sets(st.sampled_from(clients), min_size=2, max_size=n))))
        for _ in range(draw(st.integers(1, 4)))
    ]
    views = {}
    for v in clients:
        view = set(draw(st.sampled_from(candidates)))
        if draw(st.booleans()):
            view.add(v)  # usually a view the site is in, or it refuses outright
        views[v] = tuple(sorted(view))
    return Attack(
        n=n,
        degree=degree,
        threshold=threshold,
        colluders=colluders,
        withheld=withheld,
        views=views,
        seed=seed,
        committee=committee,
    )


def _bound(n: int, degree: int, threshold: int, committee: int = 0) -> bytes:
    cohort = tuple(f"site-{i}" for i in range(1, n + 1))
    return bind(CONTEXT, cohort, min(degree, n - 1), threshold, committee)


def split_view_attack(n: int = 16, degree: int = 6, victim: int = 1) -> Attack:
    """The attack of issue 15, with the coordinator's best routing.

    The victim is left to mask with exactly ``t`` partners (the coordinator
    withholds the other neighbours' shares from it). Every site is shown a
    survivor set with the victim in it, and each partner is left out of the sets
    shown to ``t`` of the partner's own neighbours (as many partners per site as
    its own check lets pass): the victim's neighbours reveal its self mask, the
    partners' neighbours reveal the partners' mask keys.
    """
    k = graph.effective_degree(n, degree)
    t = k // 2 + 1
    clients = list(range(1, n + 1))
    nbrs = graph.neighbours(clients, degree, graph.graph_seed(_bound(n, degree, t)))
    partners = nbrs[victim][:t]
    withheld = {(u, victim) for u in nbrs[victim] if u not in partners}
    excluded: dict[int, set[int]] = {v: set() for v in clients}
    for p in partners:
        holders = sorted(
            (w for w in nbrs[p] if w != victim and len(nbrs[w]) - len(excluded[w]) - 1 >= t),
            key=lambda w: len(excluded[w]),
        )
        for w in holders[:t]:
            excluded[w].add(p)
    views = {v: tuple(u for u in clients if u not in excluded[v]) for v in clients}
    return Attack(n=n, degree=degree, threshold=t, colluders=set(), withheld=withheld, views=views)


@settings(max_examples=150, deadline=None)
@given(attack=attacks())
@example(attack=split_view_attack())
@example(attack=split_view_attack(n=30, degree=8, victim=7))
def test_no_view_the_coordinator_shows_rebuilds_an_honest_update(attack: Attack):
    knowledge, masked_with, t, honest = play(attack)
    assert exposed(knowledge, masked_with, t, honest) == []


def test_the_split_view_attack_is_refused_and_works_without_the_check():
    """The explicit attack: refused by the consistency check, and a real attack without it.

    Without signature checks (a site with no identity) the same views rebuild the
    victim's update: what the README says an honest-but-curious-only site accepts,
    and the proof that :func:`exposed` can find what it looks for.
    """
    attack = split_view_attack()
    assert exposed(*play(attack)) == []
    found = exposed(*play(attack, check_signatures=False))
    assert (1, "self mask and every pairwise mask") in found


def test_a_site_told_another_encoding_shares_with_no_one_and_masks_nothing():
    """Red-team finding: one site's own grid (the others' words made to vanish) isolated it.

    The encoding comes with the keys and is sealed into every share's associated data:
    a site shown a different encoding can decrypt no neighbour's share, and its own
    shares decrypt for no neighbour, so it refuses to mask (below threshold).
    """
    n = 8
    cohort = [f"site-{i}" for i in range(1, n + 1)]
    crypto = FakeCrypto(3)
    server = SecAggServer(
        context=CONTEXT, cohort=cohort, vector_length=LENGTH, clip=4.0, crypto=crypto
    )
    clients = {i: SecAggClient(server.setup_for(i), crypto) for i in range(1, n + 1)}
    for i, c in clients.items():
        server.receive_keys(i, c.advertise(1))
    requests = server.close_keys()
    honest = requests[1].encoding
    assert honest is not None
    odd = dataclasses.replace(
        honest, quantizer=dataclasses.replace(honest.quantizer, levels=1 << 29)
    )
    requests[1] = dataclasses.replace(requests[1], encoding=odd)  # the victim's own grid
    for i, request in requests.items():
        server.receive_shares(i, clients[i].share(request))
    masks = server.close_shares()
    victim_request = MaskRequest(shares=masks[1].shares, encoding=odd)
    with pytest.raises(ProtocolError, match="only 0 neighbours are still in the round"):
        clients[1].mask(victim_request, np.zeros(LENGTH, np.uint32))
    # and a mask request whose encoding is not the one the shares were sealed with
    with pytest.raises(ProtocolError, match="not the one this round's shares were sealed with"):
        clients[2].mask(
            MaskRequest(shares=masks[2].shares, encoding=odd), np.zeros(LENGTH, np.uint32)
        )
