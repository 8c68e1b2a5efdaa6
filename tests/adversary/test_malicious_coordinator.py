"""A malicious coordinator against honest sites: real agents, the real gRPC server, no mercy.

The coordinator here is the test itself, speaking through fedops' own
transport (:mod:`harness`): it sends any SecAgg message to any site, in any
order, shows sites different views, picks parameters at their extremes and
replays rounds and models. The sites are real ``fedops client
--require-secagg`` processes with signing identities; their task file records
each one's true update. Every attack asserts that (a) the targeted sites
decline, with the reason in their signed audit log, and (b) nothing the
coordinator received rebuilds a victim's update: :meth:`Evidence.rebuild`
combines every revealed share, removes every mask it can and decodes, and
either lacks a secret or lands far from the update. The controls show the
same rebuild succeeds where it should (the sum of a round; one update given
every secret), so the privacy checks can fail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping

import harness
import numpy as np
import pytest
from harness import (
    RUN_ID,
    Answer,
    CannotRebuild,
    Evidence,
    Fleet,
    Round,
    relative_error,
    round_context,
)

from fedops.core.params import Params
from fedops.core.results import FitResult
from fedops.core.rounds import ResultArrived
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    MaskedInput,
    NeighbourKeys,
    PublicKeys,
    Reveal,
    Setup,
    ShareKeys,
    SurvivorSignature,
    UnmaskRequest,
    signed_message,
)
from fedops.core.secagg.quantize import Quantizer
from fedops.core.secagg.server import SecAggServer
from fedops.core.secagg.update import Encoding, encode_update
from fedops.crypto import Crypto, Identity
from fedops.runtime.settings import SECAGG_CLIP
from fedops.v1 import fedops_pb2 as pb

pytestmark = pytest.mark.slow

#: eight sites: the default degree for 8 (2·⌈log2 8⌉ = 6 < 7) leaves each site one
#: non-neighbour, so graph checks bite; threshold 4 of 6
REGULAR = [f"site-{i}" for i in range(8)]
#: a ninth site that demands distributed DP: noise multiplier >= 1, L2 clip <= 1
DP_SITE = "site-dp"
DP_FLAGS = ["--secagg-min-noise-multiplier", "1.0", "--secagg-max-l2-clip", "1.0"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("adversary"), [*REGULAR, DP_SITE], extra={DP_SITE: DP_FLAGS})
    try:
        f.start()
        # before its first round a site sends a freshly built model: the base of every round
        answer = f.plain_task(REGULAR[0], pb.TASK_KIND_SEND_INITIAL, 0, {})
        assert answer.params, answer
        f.base = answer.params
        yield f
    finally:
        f.close()


# -- checks ---------------------------------------------------------------------------------
def assert_declined(
    fleet: Fleet,
    server_round: int,
    answers: Mapping[str, Answer],
    phase: str,
    *fragments: str,
) -> None:
    """Each named site declined, saying ``fragments``, and its audit log holds that reason."""
    assert answers, "no site was asked"
    for name, answer in answers.items():
        assert answer.declined and not answer.ok, f"{name} did not decline: {answer}"
        for fragment in fragments:
            assert fragment in answer.declined, (name, fragment, answer.declined)
        logged = [
            d["reason"]
            for d in fleet.declines(name, server_round)
            if d["kind"] == phase and d["reason"][:500] == answer.declined
        ]
        assert logged, (name, phase, answer.declined, fleet.declines(name, server_round))


def by_name(rnd: Round, answers: Mapping[int, Answer]) -> dict[str, Answer]:
    return {rnd.names[i]: a for i, a in answers.items()}


def assert_unrecoverable(rnd: Round, fleet: Fleet, victims: Iterable[int]) -> None:
    """Nothing the coordinator received in the round rebuilds a victim's update.

    Tried: the victim alone, and (when the whole sum is known) everyone else, whose
    difference from the sum would be the victim's input.
    """
    evidence = rnd.evidence
    held = set(evidence.masked)
    for u in victims:
        if u not in held:
            with pytest.raises(CannotRebuild):
                evidence.rebuild([u])
            continue
        alone = evidence.rebuild([u])
        assert not alone.complete, f"client {u}'s update was rebuilt"
        if not evidence.encodings[u].private:
            truth = evidence.truth(fleet, rnd.names, [u], rnd.start)
            assert relative_error(alone.values, truth) > 0.5
        others = held - {u}
        if others:
            assert not (evidence.rebuild(held).complete and evidence.rebuild(others).complete), (
                f"client {u}'s update is the difference of two sums the coordinator holds"
            )


def reveals_of(answers: Mapping[int, Answer]) -> set[int]:
    return {i for i, a in answers.items() if isinstance(a.reply, Reveal)}


# -- controls --------------------------------------------------------------------------------
def test_rebuild_finds_an_update_given_every_secret_and_not_from_the_protocol():
    """The rebuild is a real attack: handed both secrets of every site (what honest
    sites never reveal together), it recovers one site's update; from the honest
    reveals it recovers only the sum."""
    crypto = Crypto()
    rng = np.random.default_rng(3)
    start: Params = {"w": rng.normal(size=(10, 6)).astype(np.float32)}
    trained = {
        i: {"w": (start["w"] + rng.normal(0, 0.05, (10, 6))).astype(np.float32)}
        for i in range(1, 9)
    }
    examples = {i: 20 + 7 * i for i in trained}
    server = SecAggServer(
        context=b"control", cohort=REGULAR, vector_length=61, clip=SECAGG_CLIP, crypto=crypto
    )
    clients = {
        i: SecAggClient(server.setup_for(i), crypto, identity=REGULAR[i - 1]) for i in trained
    }
    evidence = Evidence(bound=server.bound, crypto=crypto)

    def note(i, request, reply, n=0):
        evidence.note(i, request, Answer(REGULAR[i - 1], reply=reply, num_examples=n))

    for i, client in clients.items():
        keys = client.advertise(examples[i])
        server.receive_keys(i, keys)
        note(i, server.setup_for(i), keys)
    for i, request in server.close_keys().items():
        shares = clients[i].share(request)
        server.receive_shares(i, shares)
        note(i, request, shares)
    for i, request in server.close_shares().items():
        vector, _ = encode_update(start, trained[i], examples[i], request.encoding, rng)
        masked = clients[i].mask(request, vector)
        server.receive_masked(i, masked)
        note(i, request, masked, examples[i])
    for i, request in server.close_masked().items():
        server.receive_signature(i, clients[i].sign_survivors(request))
    for i, request in server.close_consistency().items():
        note(i, request, clients[i].unmask(request))

    def truth(group):
        w = evidence.encodings[1].max_weight
        return sum(min(examples[u], w) * (trained[u]["w"] - start["w"]).ravel() for u in group)

    everyone = list(clients)
    assert relative_error(evidence.rebuild(everyone).values, truth(everyone)) < 1e-5
    honest = evidence.rebuild([1])
    assert not honest.complete and relative_error(honest.values, truth([1])) > 0.5

    # every holder leaks both shares it holds: the self-mask seed and the mask key
    leaky = dataclasses.replace(evidence, reveals=[])
    for i, client in clients.items():
        held = sorted(client._held.items())
        leaky.reveals.append(
            (
                i,
                Reveal(
                    self_mask=tuple((u, s) for u, (s, _) in held),
                    mask_key=tuple((u, k) for u, (_, k) in held),
                ),
            )
        )
    for victim in everyone:
        rebuilt = leaky.rebuild([victim])
        assert rebuilt.complete
        assert relative_error(rebuilt.values, truth([victim])) < 1e-5


# -- 1. the plaintext path -----------------------------------------------------------------------
def test_after_a_secure_round_the_plaintext_paths_are_closed(fleet: Fleet):
    rnd = Round(fleet, REGULAR)
    rnd.through("unmask")
    secure_sum = rnd.server.finish()
    everyone = list(rnd.names)
    # control on live data: what the sites revealed unmasks the sum, and it is their updates'
    rebuilt = rnd.evidence.rebuild(everyone)
    assert rebuilt.complete
    truth = rnd.evidence.truth(fleet, rnd.names, everyone, rnd.start)
    assert relative_error(rebuilt.values, truth) < 1e-4
    q = secure_sum.encoding.quantizer
    assert np.allclose(
        rebuilt.values, q.decode_sum(secure_sum.total[:-1], 8) * secure_sum.encoding.max_weight
    )
    assert_unrecoverable(rnd, fleet, everyone)

    site = REGULAR[0]  # it sent the initial model before its first round (the fixture)
    trainings = len(fleet.trainings(site))
    seen = len(fleet.events)
    initial = fleet.plain_task(site, pb.TASK_KIND_SEND_INITIAL, rnd.number, {})
    fit = fleet.plain_task(site, pb.TASK_KIND_FIT, rnd.number, rnd.start)
    assert_declined(fleet, rnd.number, {site: initial}, "initial", "only before the first round")
    assert_declined(fleet, rnd.number, {site: fit}, "fit", "--require-secagg")
    assert initial.params is None and fit.params is None
    assert not [
        e
        for e in fleet.events[seen:]
        if isinstance(e, ResultArrived) and isinstance(e.result, FitResult)
    ]
    assert len(fleet.trainings(site)) == trainings  # it did not even train


# -- 2. inconsistent views ------------------------------------------------------------------------
def split_views(rnd: Round, victim: int, a_side: int, drop: int) -> dict[int, tuple[int, ...]]:
    """The victim and ``a_side - 1`` of its neighbours hear "everyone survived" (they would
    reveal its self-mask seed); the other sites hear "``drop`` of the victim's partners
    dropped" (they would reveal those partners' mask keys)."""
    everyone = tuple(rnd.names)
    neighbours = sorted(rnd.graph[victim])
    assert set(rnd.evidence.partners[victim]) == set(neighbours)  # it masked with all six
    a_camp = {victim, *neighbours[: a_side - 1]}
    dropped = set(neighbours[:drop])
    assert dropped <= a_camp
    views = {i: everyone for i in a_camp}
    for i in set(everyone) - a_camp:
        views[i] = tuple(x for x in everyone if x not in dropped)
    return views


@pytest.mark.parametrize(
    ("a_side", "drop"), [(7, 2), (4, 3)], ids=["victim-side-majority", "even-split"]
)
def test_inconsistent_survivor_sets_are_refused(fleet: Fleet, a_side: int, drop: int):
    rnd = Round(fleet, REGULAR)
    rnd.through("mask")
    victim = 1
    views = split_views(rnd, victim, a_side, drop)
    assert len(set(views.values())) == 2
    signed = rnd.ask({i: ConsistencyRequest(survivors=s) for i, s in views.items()})
    assert all(isinstance(a.reply, SurvivorSignature) for a in signed.values()), signed

    answers = rnd.ask({i: rnd.unmask_request(s) for i, s in views.items()})
    # a site reveals only once a majority of the cohort signed the very set it signed:
    # each site signs one set per round, so at most one view can get there
    quorum = len(rnd.cohort) // 2 + 1
    backed = {i for i, s in views.items() if sum(views[v] == s for v in s) >= quorum}
    assert reveals_of(answers) == backed
    assert all(views[i] == views[victim] for i in backed)  # one view at most: the victim's
    refused = {i: a for i, a in answers.items() if i not in backed}
    assert refused and set(refused) >= set(views) - {victim, *rnd.graph[victim]}
    assert_declined(
        fleet,
        rnd.number,
        by_name(rnd, refused),
        "secagg_unmask",
        "signatures over this survivor set",
    )
    # no mask key of any partner was revealed, so the victim's input stays masked
    assert not [r for _, r in rnd.evidence.reveals if r.mask_key]
    assert_unrecoverable(rnd, fleet, list(views))


# -- 3. unmasking another set than the one signed ------------------------------------------------
def test_unmask_for_another_survivor_set_than_the_signed_one_is_refused(fleet: Fleet):
    rnd = Round(fleet, REGULAR)
    rnd.through("consistency")
    victim = 2
    honest = rnd.server.close_consistency()
    holders = sorted(rnd.graph[victim])
    # four of its neighbours (t) reveal its self-mask seed; ask the other two for its
    # mask key by telling them it dropped after all
    liars = set(holders[4:])
    without = tuple(i for i in rnd.names if i != victim)
    requests = {
        i: UnmaskRequest(survivors=without, signatures=r.signatures) if i in liars else r
        for i, r in honest.items()
    }
    answers = rnd.ask(requests)
    assert reveals_of(answers) == set(rnd.names) - liars
    assert_declined(
        fleet,
        rnd.number,
        by_name(rnd, {i: answers[i] for i in liars}),
        "secagg_unmask",
        "another survivor set than the one this client signed",
    )
    # one reveal per round: neither the refusers nor a site that revealed answer again
    again = rnd.ask({i: honest[i] for i in sorted(liars)[:1]} | {holders[0]: requests[min(liars)]})
    assert_declined(
        fleet, rnd.number, by_name(rnd, again), "secagg_unmask", "no secure-aggregation session"
    )
    # the coordinator has the victim's self-mask seed and the round's sum, never its update
    assert "self-mask seed of 2" not in rnd.evidence.rebuild([victim]).missing
    everyone = list(rnd.names)
    assert rnd.evidence.rebuild(everyone).complete
    assert_unrecoverable(rnd, fleet, everyone)


# -- 4. crafted parameters ---------------------------------------------------------------------
def test_setups_below_the_site_policy_are_refused(fleet: Fleet):
    number = fleet.next_round()
    context = round_context(RUN_ID, number)
    eight = tuple(REGULAR)

    def setup(name: str, cohort=eight, **kw) -> Setup:
        kw = {"degree": 6, "threshold": 4, **kw}
        return Setup(context=context, index=cohort.index(name) + 1, cohort=cohort, **kw)

    three = tuple(REGULAR[5:8])
    crafted = {
        "site-0": (setup("site-0", degree=1, threshold=1), "secagg min_degree"),
        "site-1": (setup("site-1", threshold=3), "2t > k + c"),
        "site-2": (setup("site-2", cohort=("site-2", "site-3")), "secagg min_cohort"),
        "site-3": (setup("site-3", threshold=7), "exceeds the 6 neighbours"),
        "site-4": (setup("site-4", degree=0), "degree 0 is invalid"),
        "site-5": (setup("site-5", cohort=three, degree=1, threshold=1), "2t > k + c"),
        "site-6": (setup("site-6", threshold=0), "2t > k + c"),
        "site-7": (setup("site-7", degree=-3, threshold=-1), "invalid"),
    }
    answers = fleet.ask(number, {name: s for name, (s, _) in crafted.items()})
    for name, (_, reason) in crafted.items():
        assert_declined(fleet, number, {name: answers[name]}, "secagg_keys", reason)
    # k = 1, t = 1 is refused by both rules: no site's keys left
    assert "at least 6" in answers["site-0"].declined
    assert all(a.reply is None for a in answers.values())


# -- 5. substituted keys ----------------------------------------------------------------------
def test_substituted_neighbour_keys_are_refused(fleet: Fleet):
    earlier = Round(fleet, REGULAR)
    earlier.advertise()
    rnd = Round(fleet, REGULAR)
    rnd.advertise()
    honest = rnd.server.close_keys()
    crypto, impostor = fleet.crypto, Identity.generate()

    def fresh(index: int, *, identity: str, signer: Identity | None) -> PublicKeys:
        cipher, mask = crypto.keypair()[1], crypto.keypair()[1]
        message = signed_message(rnd.server.bound, index, cipher, mask)
        signature = signer.sign(message) if signer is not None else b""
        return PublicKeys(
            index=index,
            cipher_key=cipher,
            mask_key=mask,
            num_examples=0,
            identity=identity,
            signature=signature,
        )

    def genuine(w: int) -> PublicKeys:
        return dataclasses.replace(rnd.evidence.keys[w], num_examples=0)

    # (victim, the keys it gets for its neighbour `target`), one forgery per victim
    forgeries = {
        1: lambda victim, target: fresh(target, identity=rnd.names[target], signer=None),
        2: lambda victim, target: fresh(target, identity=rnd.names[target], signer=impostor),
        3: lambda victim, target: fresh(target, identity="coordinator", signer=impostor),
        # the target's own signed keys, from an earlier round
        4: lambda victim, target: dataclasses.replace(
            earlier.evidence.keys[target], num_examples=0
        ),
        # a third site's signed keys of this round, relabelled as the target's
        5: lambda victim, target: dataclasses.replace(genuine(third(victim, target)), index=target),
        6: lambda victim, target: dataclasses.replace(
            genuine(third(victim, target)), index=target, identity=rnd.names[target]
        ),
    }

    def third(victim: int, target: int) -> int:
        return next(w for w in rnd.names if w not in (victim, target))

    requests, targets = dict(honest), {}
    for victim, forge in forgeries.items():
        target = rnd.graph[victim][0]
        keys = honest[victim].keys
        requests[victim] = dataclasses.replace(
            honest[victim],
            keys=tuple(forge(victim, target) if k.index == target else k for k in keys),
        )
        targets[victim] = rnd.names[target]
    answers = rnd.ask(requests)
    for victim in forgeries:
        assert_declined(
            fleet,
            rnd.number,
            {rnd.names[victim]: answers[victim]},
            "secagg_shares",
            f"not signed by {targets[victim]!r}",
        )
    assert {i for i, a in answers.items() if isinstance(a.reply, ShareKeys)} == set(
        rnd.names
    ) - set(forgeries)
    assert_unrecoverable(rnd, fleet, forgeries)


# -- 6. crafted cohorts and graphs -----------------------------------------------------------------
def test_crafted_cohorts_and_non_neighbour_keys_are_refused(fleet: Fleet):
    number = fleet.next_round()
    context = round_context(RUN_ID, number)
    eight = list(REGULAR)
    swapped = [eight[1], eight[0], *eight[2:]]
    twice = [*eight[:7], eight[1]]
    crafted = {
        "site-0": (
            Setup(context=context, index=1, cohort=tuple(swapped), degree=6, threshold=4),
            "puts 'site-1' at this site's index 1",
        ),
        "site-1": (
            Setup(context=context, index=2, cohort=tuple(twice), degree=6, threshold=4),
            "names a site twice",
        ),
        "site-2": (
            Setup(context=context, index=0, cohort=tuple(eight), degree=6, threshold=4),
            "client index 0 is not in the cohort of 8",
        ),
        "site-3": (
            Setup(context=context, index=9, cohort=tuple(eight), degree=6, threshold=4),
            "client index 9 is not in the cohort of 8",
        ),
    }
    answers = fleet.ask(number, {name: s for name, (s, _) in crafted.items()})
    for name, (_, reason) in crafted.items():
        assert_declined(fleet, number, {name: answers[name]}, "secagg_keys", reason)

    rnd = Round(fleet, REGULAR)
    rnd.advertise()
    honest = rnd.server.close_keys()
    everyone = set(rnd.names)
    stranger = {i: (everyone - set(rnd.graph[i]) - {i}).pop() for i in everyone}
    keys = rnd.evidence.keys  # genuine, signed keys of every site of this round
    added, replaced = 1, next(i for i in everyone if i not in (1, stranger[1]))
    doubled = next(i for i in everyone if i not in (added, replaced))
    requests = dict(honest)

    # the genuine keys of a site the victim's own graph does not connect it to
    def keyed(i: int, *chosen: PublicKeys) -> NeighbourKeys:  # the honest request, other keys
        return dataclasses.replace(honest[i], keys=chosen)

    requests[added] = keyed(added, *honest[added].keys, keys[stranger[added]])
    requests[replaced] = keyed(replaced, *honest[replaced].keys[1:], keys[stranger[replaced]])
    requests[doubled] = keyed(doubled, *honest[doubled].keys, honest[doubled].keys[0])
    answers = rnd.ask(requests)
    for victim in (added, replaced):
        assert_declined(
            fleet,
            rnd.number,
            {rnd.names[victim]: answers[victim]},
            "secagg_shares",
            f"keys of client {stranger[victim]}, who is not a neighbour",
        )
    assert_declined(
        fleet,
        rnd.number,
        {rnd.names[doubled]: answers[doubled]},
        "secagg_shares",
        "two sets of keys",
    )
    assert_unrecoverable(rnd, fleet, (added, replaced, doubled))


# -- 7. replays -----------------------------------------------------------------------------------
def test_replayed_rounds_sessions_and_contexts_are_refused(fleet: Fleet):
    first = Round(fleet, REGULAR)
    first.through("consistency")  # every site sent its masked input for round `first`
    setups = {i: first.server.setup_for(i) for i in first.names}

    # the whole setup of that round again (a second session), and a setup for an earlier round
    for number in (first.number, first.number - 1):
        answers = fleet.ask(number, {first.names[i]: s for i, s in setups.items()})
        assert_declined(fleet, number, answers, "secagg_keys", "rounds only go forward")
        if number == first.number:
            assert f"already dealt its secrets in round {number}" in answers["site-0"].declined

    # a later round number with that round's context: its signatures would verify again
    reused = Round(fleet, REGULAR, context=round_context(RUN_ID, first.number))
    answers = reused.ask({i: reused.server.setup_for(i) for i in reused.names})
    assert_declined(
        fleet,
        reused.number,
        by_name(reused, answers),
        "secagg_keys",
        f"is not this task's run and round '{RUN_ID}:{reused.number}'",
    )

    # a second session of a round whose mask stage a site already answered, never asked to
    # sign (red-team finding: its input would be in two sums of one round)
    rnd = Round(fleet, REGULAR)
    rnd.through("mask")
    again = Round(fleet, REGULAR, number=rnd.number)
    answers = again.ask({i: again.server.setup_for(i) for i in again.names})
    assert_declined(
        fleet,
        rnd.number,
        by_name(again, answers),
        "secagg_keys",
        f"already dealt its secrets in round {rnd.number}",
    )
    assert_unrecoverable(rnd, fleet, list(rnd.names))


# -- 8. distributed DP at the extremes -----------------------------------------------------------
def test_distributed_dp_below_the_site_floor_is_refused(fleet: Fleet):
    cohort = [*REGULAR[:3], DP_SITE]
    rnd = Round(fleet, cohort, noise=(1.0, 1.0), min_survivors=4)
    rnd.advertise()
    rnd.share()
    requests = rnd.server.close_shares()
    dp = rnd.index(DP_SITE)
    honest = requests[dp]
    good = honest.encoding
    assert good.private
    bad = {
        "only sends updates with distributed DP noise": Encoding(
            quantizer=Quantizer.for_summands(SECAGG_CLIP, 4), max_weight=100, min_survivors=4
        ),
        "noise multiplier of 0 if only 4 of the 4 sites survive": dataclasses.replace(
            good, noise_mu=0.0
        ),
        "noise multiplier of 0.5 if only 4 of the 4": dataclasses.replace(
            good, noise_mu=good.noise_mu / 4
        ),
        # σ = 1 over all four, but a sum of three may be unmasked: √(3/4) of it
        "noise multiplier of 0.8661 if only 3 of the 4": dataclasses.replace(good, min_survivors=3),
        "clip 1e+06 exceeds this site's max_l2_clip 1": dataclasses.replace(
            good,
            quantizer=Quantizer(clip=1e6, levels=good.quantizer.levels),
            l2_clip=1e6,
        ),
    }
    for reason, encoding in bad.items():  # the encoding comes with the keys: refused there
        rnd = Round(fleet, cohort, noise=(1.0, 1.0), min_survivors=4)
        rnd.advertise()
        requests = rnd.server.close_keys()
        request = dataclasses.replace(requests[rnd.index(DP_SITE)], encoding=encoding)
        answers = rnd.ask({rnd.index(DP_SITE): request})
        assert_declined(fleet, rnd.number, by_name(rnd, answers), "secagg_shares", reason)
    # a mask request whose encoding is not the sealed one is refused before the site trains
    # (red team, issue 16: a round that is then refused must not cost training or budget)
    rnd = Round(fleet, cohort, noise=(1.0, 1.0), min_survivors=4)
    rnd.advertise()
    rnd.share()
    dp = rnd.index(DP_SITE)
    request = rnd.server.close_shares()[dp]
    quieter = dataclasses.replace(request.encoding, noise_mu=request.encoding.noise_mu / 2)
    trainings = len(fleet.trainings(DP_SITE))
    answers = rnd.ask({dp: dataclasses.replace(request, encoding=quieter)})
    assert_declined(
        fleet, rnd.number, by_name(rnd, answers), "secagg_masked", "shares were sealed with"
    )
    assert len(fleet.trainings(DP_SITE)) == trainings
    # the noise it agreed to: it trains and masks
    rnd = Round(fleet, cohort, noise=(1.0, 1.0), min_survivors=4)
    rnd.advertise()
    rnd.share()
    dp = rnd.index(DP_SITE)
    trainings = len(fleet.trainings(DP_SITE))
    (answer,) = rnd.ask({dp: rnd.server.close_shares()[dp]}).values()
    assert isinstance(answer.reply, MaskedInput)
    assert len(fleet.trainings(DP_SITE)) == trainings + 1
    assert_unrecoverable(rnd, fleet, [dp])


# -- 9. out of order ----------------------------------------------------------------------------


def test_sites_drop_after_masking_below_the_sealed_floor(fleet: Fleet):
    """Red team, issue 16 (B1): the coordinator says sites dropped after masking, so that
    the DP site's input is unmasked with fewer noise shares than its floor needs. The
    floor (all 7 shares: σ = 1) is sealed into the encoding, so every site, whatever its
    own floor, refuses to sign the smaller set: no quorum, nothing is revealed."""
    cohort = [*REGULAR[:6], DP_SITE]
    rnd = Round(fleet, cohort, noise=(1.0, 1.0), min_survivors=len(cohort))
    rnd.through("mask")
    honest = rnd.server.close_masked()
    assert all(len(r.survivors) == 7 for r in honest.values())
    dropped = {rnd.index(REGULAR[0]), rnd.index(REGULAR[1])}
    smaller = tuple(sorted(set(rnd.names) - dropped))
    answers = rnd.ask({i: ConsistencyRequest(survivors=smaller) for i in smaller})
    assert_declined(
        fleet,
        rnd.number,
        by_name(rnd, answers),
        "secagg_consistency",
        "only 5 sites survive",
        "promised a sum of at least 7",
    )
    assert not rnd.signatures  # no signature over any set: no reveal can be authorised
    assert_unrecoverable(rnd, fleet, [rnd.index(DP_SITE)])


def test_messages_out_of_stage_order_are_refused(fleet: Fleet):
    rnd = Round(fleet, REGULAR)
    rnd.advertise()
    neighbour_keys = rnd.server.close_keys()
    rnd.stage(neighbour_keys)
    mask_requests = rnd.server.close_shares()
    rnd.stage(mask_requests)
    everyone = tuple(rnd.names)
    early, twice, rekeyed = 1, 2, 3
    trainings = len(fleet.trainings(rnd.names[twice]))
    answers = rnd.ask({early: UnmaskRequest(survivors=everyone, signatures=())})
    assert_declined(
        fleet,
        rnd.number,
        by_name(rnd, answers),
        "secagg_unmask",
        "unmasking is stage 5, but this client is at stage 4",
    )
    answers = rnd.ask({twice: mask_requests[twice]})
    assert_declined(
        fleet,
        rnd.number,
        by_name(rnd, answers),
        "secagg_masked",
        "a mask request, but this round's session is at stage 4",
    )
    assert len(fleet.trainings(rnd.names[twice])) == trainings  # no second training
    answers = rnd.ask({rekeyed: neighbour_keys[rekeyed]})
    assert_declined(
        fleet,
        rnd.number,
        by_name(rnd, answers),
        "secagg_shares",
        "sharing keys is stage 2, but this client is at stage 4",
    )
    # the early unmask ended the site's session: it signs nothing in this round
    answers = rnd.ask({early: ConsistencyRequest(survivors=everyone)})
    assert_declined(
        fleet,
        rnd.number,
        by_name(rnd, answers),
        "secagg_consistency",
        "no secure-aggregation session",
    )

    later = Round(fleet, REGULAR)
    answers = later.ask({1: NeighbourKeys(keys=())})  # no setup in this round
    assert_declined(
        fleet,
        later.number,
        by_name(later, answers),
        "secagg_shares",
        f"no secure-aggregation session for round {later.number}",
    )
    later.advertise(only=[2])
    answers = later.ask({2: ConsistencyRequest(survivors=everyone)})
    assert_declined(
        fleet,
        later.number,
        by_name(later, answers),
        "secagg_consistency",
        "signing the survivor set is stage 4, but this client is at stage 2",
    )
    assert_unrecoverable(rnd, fleet, everyone)


# -- 10. one round, different training per site ---------------------------------------------------
def test_sites_told_to_train_otherwise_than_the_round_sealed_mask_nothing(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
):
    """Red team 2026-12-07 (the model-inconsistency attack, Pasquini et al. 2022): the
    coordinator gives the victim the run's settings and every other site a learning rate
    of 1e-30. Their updates are exactly zero, every SecAgg check passes, and the sum of
    all n sites was the victim's update alone, rebuilt to 1.8e-7 (real agents, c = 0,
    every site pinning a floor of n). The key request now seals what the round's sites
    train (model digest, settings, config); a site told otherwise refuses to train."""
    rnd = Round(fleet, REGULAR)
    rnd.through("share")
    masks = rnd.server.close_shares()
    victim = 2
    assert rnd.stage({victim: masks[victim]})[victim].ok  # trained as the round sealed
    frozen = dataclasses.replace(harness.TRAINING, lr=1e-30)
    monkeypatch.setattr(harness, "TRAINING", frozen)
    others = rnd.stage({i: m for i, m in masks.items() if i != victim})
    assert_declined(
        fleet,
        rnd.number,
        by_name(rnd, others),
        "secagg_masked",
        "not the ones this round's shares were sealed with",
    )
    assert_unrecoverable(rnd, fleet, [victim])
