"""A coordinator that runs sessions of one round until it holds two quorums (red team 2026-12-07).

Threat model: the coordinator is malicious (no colluders needed: c = 0); sites are
honest, have identities and the default policy. Goal: two different survivor sets,
each signed by a committee quorum, so that some holders reveal a victim's self-mask
seed (the victim "survived") and others the mask keys of its partners (they
"dropped"): the victim's update then falls out.

The attack that worked: a mask request with every good share and one duplicate made
``mask()`` fail *after* its stage advanced; the site declined, wrote no round record,
yet kept the session, and signed whatever survivor set came next. A second and third
setup of the same round were accepted (the record was written only with a masked
input), so one failed session signed X_a, another X_b, and a third, real one revealed
for both (n = 16..64, every cohort order tried).

Now a session that refused once answers nothing more, and the round is recorded when
a site deals its secrets, so a round has one session.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedops.client.secure_participant import SecureParticipant
from fedops.core.secagg import graph
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    MaskRequest,
    NeighbourKeys,
    Setup,
    bind,
    round_context,
    round_terms,
)
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.primitives import ProtocolError
from fedops.core.secagg.update import round_encoding
from fedops.crypto import Crypto, Identity, TrustedKeys
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import secagg as codec
from fedops.wire.training import train_of

RUN, ROUND, N, LENGTH = "run-red", 3, 8, 16


class _Site:
    """Trains to a fixed update; counts its trainings."""

    hides_count = False
    num_train_examples = 1000

    def __init__(self) -> None:
        self.fits = 0

    def training(self, train: Any) -> None:
        pass

    def fit(self, start, server_round, config, *, run_id, train):
        self.fits += 1
        return {"w": np.full(LENGTH, 0.25, np.float32)}, 1000, {}


def _task(request: Any) -> pb.Task:
    task = pb.Task(kind=pb.TASK_KIND_SECAGG, run_id=RUN, round=ROUND, task_id="t")
    task.secagg.CopyFrom(codec.request_to_proto(request))
    task.train.epochs, task.train.batch_size, task.train.lr = 1, 10, 0.01
    task.train.optimizer = "sgd"
    return task


#: what every site trains in these rounds: what _task carries (no model digest, its settings)
_TASK = _task(Setup(context=b"", index=1, cohort=("a",), degree=1, threshold=1))
TERMS = round_terms(_TASK.model_digest, train_of(_TASK), dict(_TASK.config))


@pytest.fixture
def fleet(tmp_path: Path):
    crypto = Crypto()
    names = [f"site-{i}" for i in range(N)]
    ids = {name: Identity.generate() for name in names}
    trusted = TrustedKeys({name: ids[name].key.public_key() for name in names})
    cohort = tuple(random.Random(1).sample(names, N))
    policy = SecAggPolicy()
    k = policy.required_degree(N)
    t = k // 2 + 1
    parts = {
        i: SecureParticipant(
            _Site(),
            crypto,
            sign=ids[cohort[i - 1]].sign,
            verify=trusted,
            identity=cohort[i - 1],
            policy=policy,
            run_dir=tmp_path / f"site{i}",
        )
        for i in range(1, N + 1)
    }
    start = {"w": np.zeros(LENGTH, np.float32)}

    def ask(i: int, request: Any) -> Any:
        reply, payload, _, _ = parts[i].answer(_task(request), lambda: start)
        return codec.reply_from_proto(reply, payload)

    bound = bind(round_context(RUN, ROUND), cohort, k, t, 0)
    neighbours = graph.neighbours(list(range(1, N + 1)), k, graph.graph_seed(bound))
    encoding = round_encoding(
        summands=N, cohort=N, clip=4.0, max_examples=1000, noise=None, min_survivors=3
    )

    def session() -> dict[int, list[Any]]:
        """Setup and key sharing for every site; each site's inbox of shares."""
        context = round_context(RUN, ROUND)
        keys = {
            i: ask(i, Setup(context=context, index=i, cohort=cohort, degree=k, threshold=t))
            for i in parts
        }
        shares = {
            u: ask(
                u,
                NeighbourKeys(
                    keys=tuple(keys[w] for w in neighbours[u]), encoding=encoding, terms=TERMS
                ),
            )
            for u in parts
        }
        return {u: [s for o in parts for s in shares[o].shares if s.target == u] for u in parts}

    return parts, ask, session, encoding


def test_a_session_that_refused_a_mask_request_signs_no_survivor_set(fleet):
    parts, ask, session, encoding = fleet
    inbox = session()
    everyone = tuple(parts)
    for u in parts:
        duplicated = (*inbox[u], inbox[u][-1])  # every good share, then one again
        with pytest.raises(ProtocolError, match="two shares from client"):
            ask(u, MaskRequest(shares=duplicated, encoding=encoding))
        with pytest.raises(ProtocolError, match="no secure-aggregation session"):
            ask(u, ConsistencyRequest(survivors=everyone))


def test_a_round_has_one_session_once_secrets_are_dealt(fleet):
    parts, ask, session, _ = fleet
    session()  # keys shared: every site has dealt its secrets for this round
    context = round_context(RUN, ROUND)
    for i in parts:
        setup = Setup(context=context, index=i, cohort=("a", "b", "c"), degree=2, threshold=2)
        with pytest.raises(ProtocolError, match="already dealt its secrets in round 3"):
            ask(i, setup)
    assert all(p.record.path.exists() for p in parts.values())  # fsynced as they were dealt


def test_a_setup_alone_deals_nothing_and_may_be_repeated(fleet):
    """Before the shares leave, a session has revealed nothing: a coordinator may set a
    round up again (e.g. after a site left before sharing), and honest rounds go on."""
    parts, ask, _, _ = fleet
    context = round_context(RUN, ROUND)
    cohort = parts[1].identity, *(p.identity for i, p in parts.items() if i != 1)
    first = ask(1, Setup(context=context, index=1, cohort=cohort, degree=6, threshold=4))
    again = ask(1, Setup(context=context, index=1, cohort=cohort, degree=6, threshold=4))
    assert first.mask_key != again.mask_key  # a fresh session, fresh keys
    assert not parts[1].record.path.exists()


def test_a_failed_mask_fails_the_core_session(fleet):
    """The core client on its own (no participant around it): a mask that failed after
    its stage began signs no survivor set; it used to, at stage 3 with its shares held."""
    _, _, _, encoding = fleet
    crypto = Crypto()
    cohort = ("a", "b", "c")
    clients = {
        i: SecAggClient(
            Setup(context=b"run:1", index=i, cohort=cohort, degree=2, threshold=2),
            crypto,
            policy=SecAggPolicy(min_cohort=3, min_degree=2),
        )
        for i in (1, 2, 3)
    }
    keys = {i: c.advertise(10) for i, c in clients.items()}
    shares = {
        i: c.share(NeighbourKeys(keys=tuple(keys[j] for j in keys if j != i), encoding=encoding))
        for i, c in clients.items()
    }
    inbox = [s for o in (2, 3) for s in shares[o].shares if s.target == 1]
    vector = np.zeros(LENGTH + 1, np.uint32)
    with pytest.raises(ProtocolError, match="two shares from client"):
        clients[1].mask(MaskRequest(shares=(*inbox, inbox[-1]), encoding=encoding), vector)
    with pytest.raises(ProtocolError, match="session failed"):
        clients[1].sign_survivors(ConsistencyRequest(survivors=(1, 2, 3)))
