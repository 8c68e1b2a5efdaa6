"""The worker side of a simulated secure round: each client's SecAgg+ session lives here.

On the process and Ray backends a client's whole side of SecAgg+ runs in the worker that
owns it (jobs for a client always go to the same worker): the
:class:`~fedops.core.secagg.client.SecAggClient` with its X25519 keys, self-mask seed,
Shamir shares and pairwise-mask expansion is built and kept here, between stages, as a
deployed site's agent keeps it (:mod:`fedops.client.secure_participant`). What crosses
to the parent are the protocol's messages in their wire form (``pb.SecAggRequest`` in,
``pb.SecAggReply`` and the masked vector out, through :mod:`fedops.wire.secagg`), so the
parent, the simulated coordinator, never holds a client's secret, nor its trained model.

The client trains at the key stage (as :class:`~fedops.simulation.secure_backend.SecureSimTransport`
does for the in-process backends) and keeps the result until the masked-input stage; its
key advertisement carries the trained example count, and a client the fault plan drops
advertises keys and then leaves at the masked-input stage. Keys and seeds come from
:class:`~fedops.crypto.Crypto` (the OS CSPRNG), in each worker; stochastic rounding and
distributed-DP noise draw from the same seeded generators as the in-process path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedops.core.params import InvalidUpdate, Params, specs_of
from fedops.core.results import FitResult
from fedops.core.rounds import Phase, ResultArrived, ResultRejected
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.messages import MaskRequest, Reply, Request, Setup
from fedops.core.secagg.primitives import ProtocolError, SecAggCrypto
from fedops.core.secagg.update import encode_update
from fedops.crypto import Crypto
from fedops.simulation.jobs import Blob, Job, decode, encode
from fedops.simulation.sim_transport import fit_event, node_id
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import secagg as secagg_codec

#: trains one client's fit job with the worker's sites: new params, examples, metrics
Fit = Callable[[Job], tuple[Params, int, dict[str, float]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StageJob:
    """One client's request for one SecAgg+ stage, as the parent sends it to the owner."""

    phase: str
    client: int
    server_round: int
    request: bytes  # the stage's pb.SecAggRequest, serialized as on the wire
    #: key stage: the client's fit job; None when the fault plan drops it (it advertises
    #: keys, then leaves at the masked-input stage)
    fit: Job | None = None
    #: masked-input stage: the run's seed (stochastic rounding) and distributed DP's
    #: noise seed (None: OS entropy, as a deployed site draws it)
    seeds: tuple[int, int | None] = (0, None)
    #: key stage: what the round's sites train (round_terms of the round's model, training
    #: settings and config), which the client masks against
    terms: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class StageAnswer:
    """The client's answer: its reply in wire form, or why it refused the stage."""

    phase: str
    client: int
    server_round: int
    reply: bytes = b""  # the pb.SecAggReply, serialized
    payload: Blob | None = None  # the masked vector, when the reply is a masked input
    num_examples: int = 0  # masked-input stage: examples trained on (0 under distributed DP)
    metrics: dict[str, float] = field(default_factory=dict)
    refused: str = ""  # non-empty: the client refused (a ProtocolError) or was rejected


@dataclass(slots=True)
class _Session:
    """One client's round: its protocol object, and what it trained at the key stage."""

    server_round: int
    client: SecAggClient
    start: Params | None = None
    trained: ResultArrived | ResultRejected | None = None  # the checked fit result
    terms: bytes = b""  # what it trained from (round_terms), held to the round's sealed terms


class SecureSessions:
    """The SecAgg+ sessions of the clients one worker owns.

    Args:
        fit: trains a client's fit job with the worker's sites.
        crypto: key agreement, encryption and PRG (the OS CSPRNG by default).
    """

    def __init__(self, fit: Fit, crypto: SecAggCrypto | None = None) -> None:
        self.fit = fit
        self.crypto = crypto if crypto is not None else Crypto()
        self._sessions: dict[int, _Session] = {}

    def run(self, job: StageJob) -> StageAnswer:
        """Answer one stage; a request the client refuses is answered with the reason."""
        try:
            request = secagg_codec.request_from_proto(pb.SecAggRequest.FromString(job.request))
            if job.phase == Phase.SECAGG_KEYS:
                assert isinstance(request, Setup)
                return self._reply(job, self._advertise(job, request))
            session = self._session(job)
            if job.phase == Phase.SECAGG_MASKED:
                assert isinstance(request, MaskRequest)
                return self._mask(job, session, request)
            return self._reply(job, self._answer(job, session, request))
        except (ProtocolError, InvalidUpdate) as exc:
            return StageAnswer(
                phase=job.phase, client=job.client, server_round=job.server_round, refused=str(exc)
            )

    def _advertise(self, job: StageJob, setup: Setup) -> Reply:
        # a new round: sessions of earlier rounds (clients that dropped or were refused
        # before unmasking) end here
        for c in [c for c, s in self._sessions.items() if s.server_round < job.server_round]:
            del self._sessions[c]
        self._sessions.pop(job.client, None)
        session = _Session(job.server_round, SecAggClient(setup, self.crypto))
        self._sessions[job.client] = session
        examples = 1
        if job.fit is not None:
            session.start = decode(job.fit[3])
            session.terms = job.terms
            new, n, metrics = self.fit(job.fit)
            node = node_id(job.client)
            trained = fit_event(node, "", specs_of(session.start), new, n, metrics)
            assert isinstance(trained, ResultArrived | ResultRejected)
            session.trained = trained
            if isinstance(trained, ResultArrived):
                examples = trained.result.num_examples
        return session.client.advertise(examples)

    def _session(self, job: StageJob) -> _Session:
        session = self._sessions.get(job.client)
        if session is None or session.server_round != job.server_round:
            raise ProtocolError(
                f"no secure-aggregation session for round {job.server_round} (no setup)"
            )
        return session

    def _answer(self, job: StageJob, session: _Session, request: Request) -> Reply:
        client = session.client
        if job.phase == Phase.SECAGG_SHARES:
            return client.share(request)  # type: ignore[arg-type]
        if job.phase == Phase.SECAGG_CONSISTENCY:
            return client.sign_survivors(request)  # type: ignore[arg-type]
        del self._sessions[job.client]  # one reveal per round, never two
        return client.unmask(request)  # type: ignore[arg-type]

    def _mask(self, job: StageJob, session: _Session, request: MaskRequest) -> StageAnswer:
        trained = session.trained
        if not isinstance(trained, ResultArrived):  # rejected when it trained
            raise ProtocolError(trained.reason if trained is not None else "no training result")
        result = trained.result
        assert isinstance(result, FitResult) and session.start is not None
        seed, noise_seed = job.seeds
        if request.encoding.private:
            entropy = None if noise_seed is None else [noise_seed, job.server_round, job.client]
            rng = np.random.default_rng(entropy)
        else:
            rng = np.random.default_rng([seed, job.server_round, job.client])
        vector, clipped = encode_update(
            session.start, result.params, result.num_examples, request.encoding, rng
        )
        masked = session.client.mask(request, vector, session.terms)
        session.start = session.trained = None  # the update leaves only masked
        answer = self._reply(job, masked)
        if request.encoding.private:  # distributed DP: nothing of the site's but the sum
            return answer
        return StageAnswer(
            phase=answer.phase,
            client=answer.client,
            server_round=answer.server_round,
            reply=answer.reply,
            payload=answer.payload,
            num_examples=result.num_examples,
            metrics={**result.metrics, "secagg_clipped": clipped},
        )

    def _reply(self, job: StageJob, reply: Reply) -> StageAnswer:
        message, payload = secagg_codec.reply_to_proto(reply)
        return StageAnswer(
            phase=job.phase,
            client=job.client,
            server_round=job.server_round,
            reply=message.SerializeToString(),
            payload=encode(payload) if payload else None,
        )
