"""A malicious coordinator built from fedops' own server-side code, and honest sites to attack.

:class:`Fleet` starts the real gRPC server in the test process (a
:class:`~fedops.coordinator.grpc_transport.GrpcTransport`, as the coordinator uses)
and real ``fedops client --require-secagg`` processes with signing identities
(``--identity-key`` / ``--trusted-keys``); then the test, not a round driver,
decides which message goes to which site and when. :class:`Round` keeps an
honest :class:`~fedops.core.secagg.server.SecAggServer` for the bookkeeping of
one round, so a test runs the honest protocol and deviates where it attacks.

Every reply the coordinator receives is kept as :class:`Evidence`, and
:meth:`Evidence.rebuild` is what a coordinator would do with it: Shamir-combine
self-mask seeds and mask keys from the revealed shares (checked against the
commitments and public keys the sites sent), remove every mask it can, decode.
The sites' task file records each site's true update (trained minus start) in
its own directory, so a test can tell whether anything the coordinator holds
rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from procs import Procs, wait_until

from fedops.coordinator.grpc_server import build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.coordinator.result_intake import Assignment
from fedops.core.params import Params, TensorSpec, digest, specs_of
from fedops.core.results import FitResult, StageResult
from fedops.core.rounds import Event, Outcome, Phase, RoundTracker
from fedops.core.secagg import shamir
from fedops.core.secagg.client import MASK_INFO, mask_sign, pair_info
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    MaskedInput,
    MaskRequest,
    NeighbourKeys,
    PublicKeys,
    Request,
    Reveal,
    Setup,
    ShareKeys,
    SignedSurvivors,
    SurvivorSignature,
    UnmaskRequest,
    round_terms,
)
from fedops.core.secagg.server import SecAggServer
from fedops.core.secagg.update import Encoding, _decode_private_sum, vector_length
from fedops.core.train_settings import TrainSettings
from fedops.crypto import Crypto, Identity
from fedops.runtime.settings import SECAGG_CLIP
from fedops.runtime.transport import Instruction, StageRequest
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.secagg import MASKED_TENSOR

RUN_ID = "adversary-run"
DECLINED = "the client declined the task: "
#: the run's training settings every training task carries (as a coordinator's --epochs ...
#: send them): one local epoch, a small step: quick, and the update stays well inside the
#: SecAgg clip
TRAINING = TrainSettings(epochs=1, batch_size=32, lr=0.1)

# The digits task, but train() writes the site's true update where the test can read it:
# NNNN-<digest of the start model>.npz holding the start model and trained - start.
TRUTH_TASK = """
import os

import numpy as np

from fedops.core.params import digest
from fedops.core.training import get_params, train as default_train
from fedops.tasks.digits import make_task

_digits = make_task()
build_model = _digits.build_model
load_data = _digits.load_data


def train(model, data, config):
    start = get_params(model)
    metrics = default_train(model, data, config)
    trained = get_params(model)
    out = os.environ["FEDOPS_TEST_TRUTH_DIR"]
    count = sum(1 for name in os.listdir(out) if name.endswith(".npz"))
    arrays = {"start." + k: v for k, v in start.items()}
    for k, v in start.items():
        arrays["delta." + k] = trained[k].astype(np.float64) - v.astype(np.float64)
    tmp = os.path.join(out, ".partial")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, os.path.join(out, f"{count:04d}-{digest(start)}.npz"))
    return metrics
"""

PHASES: dict[type, Phase] = {
    Setup: Phase.SECAGG_KEYS,
    NeighbourKeys: Phase.SECAGG_SHARES,
    MaskRequest: Phase.SECAGG_MASKED,
    ConsistencyRequest: Phase.SECAGG_CONSISTENCY,
    UnmaskRequest: Phase.SECAGG_UNMASK,
}


def round_context(run_id: str, server_round: int) -> bytes:
    """The context the deployment's coordinator gives a round (``SecureFit``)."""
    return f"{run_id}:{server_round}".encode()


@dataclass
class Answer:
    """One site's answer to one task: a reply, or the reason it declined."""

    name: str
    reply: Any = None
    declined: str = ""
    error: str = ""  # the coordinator's own refusal of the result (not a decline)
    num_examples: int = 0
    params: Params | None = None  # a plain result's model (FIT / SEND_INITIAL)

    @property
    def ok(self) -> bool:
        return self.reply is not None or self.params is not None


class AdversaryTransport(GrpcTransport):
    """The coordinator's transport, plus a way to hand one node any kind of task.

    Every task carries an audit head that advances (sites require one with each model):
    this coordinator keeps no log, and the heads it shows anchor nothing real, which only
    an audit export would notice.
    """

    heads = 0

    def next_head(self) -> tuple[int, str]:
        self.heads += 1
        return self.heads, hashlib.sha256(b"%d" % self.heads).hexdigest()

    def post(self, node: str, kind: int, server_round: int, params: Params) -> str:
        model_digest = digest(params) if params else ""
        with self._cond:
            self._round = server_round
            task = self._new_task(kind, server_round, {}, model_digest)
            task.coordinator_audit.seq, task.coordinator_audit.hash = self.next_head()
            self._assignments[node] = Assignment(
                task=task, params=params, specs=specs_of(params), model_digest=model_digest
            )
            self._post([node])
        return task.task_id


class Fleet:
    """Honest site processes, and the in-process gRPC server the test drives them from.

    Args:
        workdir: logs, keys, run directories (``workdir/NAME``) and true updates.
        names: site names (``--site-name``, matching their identity keys).
        extra: per-site extra client flags (e.g. a stricter policy).
    """

    def __init__(
        self,
        workdir: Path,
        names: Sequence[str],
        extra: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.workdir = workdir
        self.names = list(names)
        self.extra = dict(extra or {})
        self.procs = Procs(workdir)
        self.crypto = Crypto()
        self.identities: dict[str, Identity] = {}
        self.node: dict[str, str] = {}  # site name -> node id
        self.events: list[Event] = []  # everything the coordinator received, in order
        self.base: Params = {}
        self._round = 0
        self._models = 0
        self.transport: AdversaryTransport | None = None
        self.server: Any = None

    # -- life ----------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> None:
        keys, trusted = self.workdir / "keys", self.workdir / "trusted"
        keys.mkdir()
        trusted.mkdir()
        for name in self.names:
            identity = Identity.generate()
            identity.save(keys / f"{name}.pem")
            (trusted / f"{name}.pub").write_bytes(identity.public_pem())
            self.identities[name] = identity
        task = self.workdir / "truth_task.py"
        task.write_text(TRUTH_TASK)

        self.transport = AdversaryTransport(
            run_id=RUN_ID, heartbeat_interval_s=1.0, liveness_timeout_s=60.0
        )
        self.transport.audit_head = self.transport.next_head  # dispatched stages too
        self.server = build_server(self.transport, max_workers=32)
        port = self.server.add_insecure_port("127.0.0.1:0")  # the kernel's pick, at bind time
        assert port != 0, "cannot listen on 127.0.0.1"
        self.server.start()
        for i, name in enumerate(self.names):
            truth = self.truth_dir(name)
            truth.mkdir(parents=True)
            self.procs.client(
                name,
                port,
                i,
                len(self.names),
                "--site-name",
                name,
                "--require-secagg",
                "--identity-key",
                str(keys / f"{name}.pem"),
                "--trusted-keys",
                str(trusted),
                *self.extra.get(name, ()),
                task=str(task),
                env={"FEDOPS_TEST_TRUTH_DIR": str(truth)},
            )

        def joined() -> bool:
            registry = self.transport.registry
            nodes = {registry.site_name(n): n for n in registry.node_ids(polled=True)}
            if sorted(nodes) != sorted(self.names):
                return False
            self.node = nodes
            return True

        wait_until(joined, timeout, "every site to register and poll", self.logs)

    def close(self) -> None:
        try:
            if self.transport is not None:
                self.transport.close(grace_s=2.0)  # SHUTDOWN to the sites that poll now
            if self.server is not None:
                self.server.stop(grace=1.0).wait(5)
        finally:
            self.procs.kill_all()

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{self.procs.log(name)[-2000:]}" for name, _ in self.procs.procs
        )

    # -- rounds and models ---------------------------------------------------
    def next_round(self) -> int:
        """A round number above every one used so far (sites only go forward)."""
        self._round += 1
        return self._round

    def fresh_model(self) -> Params:
        """The base model, moved a little: a start model no site has trained from yet."""
        self._models += 1
        rng = np.random.default_rng([7, self._models])
        return {
            k: (v + rng.normal(0.0, 0.01, v.shape)).astype(v.dtype) for k, v in self.base.items()
        }

    # -- talking to sites -------------------------------------------------------
    def ask(
        self,
        server_round: int,
        messages: Mapping[str, Request],
        *,
        params: Params | None = None,
        timeout: float = 120.0,
    ) -> dict[str, Answer]:
        """Send each named site its SecAgg message; wait (bounded) for every answer."""
        assert self.transport is not None
        kinds = {type(m) for m in messages.values()}
        assert len(kinds) == 1, f"one stage per call, got {kinds}"
        phase = PHASES[kinds.pop()]
        specs: tuple[TensorSpec, ...] = ()
        if phase is Phase.SECAGG_MASKED:
            assert params is not None, "a mask request needs the model to train"
            specs = (
                TensorSpec(name=MASKED_TENSOR, dtype="uint32", shape=(vector_length(params),)),
            )
        by_node = {self.node[name]: m for name, m in messages.items()}
        stage = StageRequest(messages=by_node, result_specs=specs)
        instruction = Instruction(phase=phase, params=params or {}, stage=stage, train=TRAINING)
        tasks = self.transport.dispatch(server_round, list(by_node), instruction)
        return self._wait(server_round, phase, tasks, timeout)

    def plain_task(
        self, name: str, kind: int, server_round: int, params: Params, timeout: float = 120.0
    ) -> Answer:
        """A FIT, SEND_INITIAL or any other plain task for one site."""
        assert self.transport is not None
        node = self.node[name]
        if kind == pb.TASK_KIND_FIT:
            tasks = self.transport.dispatch(
                server_round, [node], Instruction(phase=Phase.FIT, params=params, train=TRAINING)
            )
        else:
            tasks = {node: self.transport.post(node, kind, server_round, params)}
        return self._wait(server_round, Phase.FIT, tasks, timeout)[name]

    def _wait(
        self, server_round: int, phase: Phase, tasks: dict[str, str], timeout: float
    ) -> dict[str, Answer]:
        assert self.transport is not None
        tracker = RoundTracker(server_round=server_round, phase=phase, tasks=tasks)
        deadline = time.monotonic() + timeout
        while not tracker.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"round {server_round} {phase}: no answer within {timeout} s from "
                    f"{[self.transport.registry.site_name(n) for n in tracker.pending]}\n"
                    f"{self.logs()}"
                )
            event = self.transport.next_event(min(remaining, 1.0))
            if event is not None:
                self.events.append(event)
                tracker.apply(event)
        names = {node: name for name, node in self.node.items()}
        answers: dict[str, Answer] = {}
        for result in tracker.results:
            name = names[result.node_id]
            if isinstance(result, StageResult):
                answers[name] = Answer(name, reply=result.reply, num_examples=result.num_examples)
            else:
                assert isinstance(result, FitResult), result
                answers[name] = Answer(name, params=result.params, num_examples=result.num_examples)
        for node, outcome in tracker.outcomes.items():
            if outcome is Outcome.OK:
                continue
            reason = tracker.reasons.get(node, "")
            if outcome is not Outcome.REJECTED:
                raise AssertionError(f"{names[node]} {outcome}: {reason}\n{self.logs()}")
            if reason.startswith(DECLINED):
                answers[names[node]] = Answer(names[node], declined=reason.removeprefix(DECLINED))
            else:
                answers[names[node]] = Answer(names[node], error=reason)
        return answers

    # -- what sites wrote down ----------------------------------------------------
    def truth_dir(self, name: str) -> Path:
        return self.workdir / "truth" / name

    def trainings(self, name: str) -> list[Path]:
        """The site's trainings so far, oldest first."""
        return sorted(self.truth_dir(name).glob("*.npz"))

    def update(self, name: str, start: Params) -> np.ndarray:
        """The site's true update (trained - start), flat in the model's order."""
        files = list(self.truth_dir(name).glob(f"*-{digest(start)}.npz"))
        assert len(files) == 1, f"{name} trained {len(files)} times from this model"
        with np.load(files[0]) as data:
            for k, v in start.items():
                assert np.array_equal(data[f"start.{k}"], v), f"{name}: another start model"
            return np.concatenate([data[f"delta.{k}"].ravel() for k in start])

    def audit(self, name: str) -> list[dict[str, Any]]:
        path = self.workdir / name / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def declines(self, name: str, server_round: int | None = None) -> list[dict[str, Any]]:
        """``task_declined`` payloads in the site's audit log (of one round, if given)."""
        return [
            e["payload"]
            for e in self.audit(name)
            if e["event"] == "task_declined"
            and (server_round is None or e["payload"].get("round") == server_round)
        ]


# -- what the coordinator holds ---------------------------------------------------------------
class CannotRebuild(Exception):
    pass


@dataclass
class Rebuilt:
    """A rebuild attempt: the decoded ``Σ w_u·Δ_u`` of the group, and what was missing."""

    values: np.ndarray
    missing: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class Evidence:
    """Everything the coordinator received in one round (and what it told sites it held)."""

    bound: bytes  # the round's bound context, as the sites computed it
    crypto: Crypto
    keys: dict[int, PublicKeys] = field(default_factory=dict)
    commitments: dict[int, bytes] = field(default_factory=dict)
    masked: dict[int, np.ndarray] = field(default_factory=dict)
    weights: dict[int, int] = field(default_factory=dict)  # the example counts sites reported
    partners: dict[int, set[int]] = field(default_factory=dict)  # whose shares each one got
    encodings: dict[int, Encoding] = field(default_factory=dict)
    reveals: list[tuple[int, Reveal]] = field(default_factory=list)

    def note(self, index: int, request: Request, answer: Answer) -> None:
        reply = answer.reply
        if isinstance(request, MaskRequest):
            self.partners[index] = {s.source for s in request.shares}
            self.encodings[index] = request.encoding
        if isinstance(reply, PublicKeys):
            self.keys[index] = reply
        elif isinstance(reply, ShareKeys):
            self.commitments[index] = reply.commitment
        elif isinstance(reply, MaskedInput):
            self.masked[index] = reply.vector
            self.weights[index] = answer.num_examples
            self.partners[index] -= set(reply.complaints)
        elif isinstance(reply, Reveal):
            self.reveals.append((index, reply))

    def _shares(self, owner: int, which: str) -> dict[int, bytes]:
        return {h: s for h, r in self.reveals for u, s in getattr(r, which) if u == owner}

    def self_mask_seed(self, owner: int) -> bytes | None:
        """``owner``'s self-mask seed, if the revealed shares give one it committed to."""
        seed = _combine(self._shares(owner, "self_mask"))
        commitment = self.commitments.get(owner)
        if seed is None or commitment != hashlib.sha256(self.bound + seed).digest():
            return None
        return seed

    def mask_private_key(self, owner: int) -> bytes | None:
        """``owner``'s mask private key, if the revealed shares give the one it advertised."""
        key = _combine(self._shares(owner, "mask_key"))
        if key is None or owner not in self.keys:
            return None
        if self.crypto.public_key(key) != self.keys[owner].mask_key:
            return None
        return key

    def pair_seed(self, u: int, v: int) -> bytes | None:
        """The mask seed ``u`` and ``v`` agreed, from either one's mask private key."""
        info = pair_info(MASK_INFO, self.bound, u, v)
        for own, other in ((u, v), (v, u)):
            key = self.mask_private_key(own)
            if key is not None and other in self.keys:
                return self.crypto.agree(key, self.keys[other].mask_key, info)
        return None

    def rebuild(self, group: Iterable[int]) -> Rebuilt:
        """Unmask the sum of ``group``'s masked inputs as far as the evidence allows.

        Masks shared inside the group cancel; each self mask and each mask shared with
        a partner outside the group needs a secret rebuilt from revealed shares. What
        cannot be rebuilt is listed in ``missing`` (and left in, as it would be).
        """
        group = sorted(set(group))
        absent = [u for u in group if u not in self.masked]
        if absent:
            raise CannotRebuild(f"the coordinator holds no masked input of {absent}")
        encoding = self.encodings[group[0]]
        length = self.masked[group[0]].size
        total = np.zeros(length, dtype=np.uint32)
        missing: list[str] = []
        for u in group:
            total += self.masked[u]
            seed = self.self_mask_seed(u)
            if seed is None:
                missing.append(f"self-mask seed of {u}")
            else:
                total -= self.crypto.expand(seed, length)
            for v in sorted(self.partners.get(u, set())):
                if v in group and u in self.partners.get(v, set()):
                    continue  # +mask and -mask of the pair are both in the sum
                pair = self.pair_seed(u, v)
                if pair is None:
                    missing.append(f"mask of pair ({u}, {v})")
                elif mask_sign(u, v) > 0:
                    total -= self.crypto.expand(pair, length)
                else:
                    total += self.crypto.expand(pair, length)
        q = encoding.quantizer
        if encoding.private:
            values = _decode_private_sum(total[:-1], len(group), q)
        else:
            values = q.decode_sum(total[:-1], len(group)) * encoding.max_weight
        return Rebuilt(values=values, missing=missing)

    def truth(self, fleet: Fleet, names: Mapping[int, str], group: Iterable[int], start: Params):
        """``Σ w_u·clip(Δ_u)`` over ``group``, from the sites' own records (plain encoding)."""
        total = 0.0
        for u in group:
            encoding = self.encodings[u]
            weight = min(self.weights[u], encoding.max_weight)
            clip = encoding.quantizer.clip
            total = total + weight * np.clip(fleet.update(names[u], start), -clip, clip)
        return total


def _combine(shares: Mapping[int, bytes]) -> bytes | None:
    if not shares:
        return None
    try:
        return shamir.combine(shares)
    except ValueError:
        return None


def relative_error(values: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(values - truth) / np.linalg.norm(truth))


# -- one round, honest bookkeeping, any deviation ------------------------------------------
class Round:
    """One SecAgg+ round over ``cohort`` (site names, client ``i`` = ``cohort[i - 1]``).

    ``server`` is the honest :class:`SecAggServer`; the stage methods run it
    honestly, and :meth:`ask` sends any message (to any subset) for a deviation.
    """

    def __init__(
        self,
        fleet: Fleet,
        cohort: Sequence[str],
        *,
        degree: int | None = None,
        threshold: int | None = None,
        noise: tuple[float, float] | None = None,
        min_survivors: int | None = None,
        context: bytes | None = None,
        run_id: str = RUN_ID,
        number: int | None = None,  # a round number already used: a second session of it
    ) -> None:
        self.fleet = fleet
        self.number = fleet.next_round() if number is None else number
        self.cohort = tuple(cohort)
        self.start = fleet.fresh_model()
        self.server = SecAggServer(
            context=context or round_context(run_id, self.number),
            cohort=self.cohort,
            vector_length=vector_length(self.start),
            clip=SECAGG_CLIP,
            crypto=fleet.crypto,
            degree=degree,
            threshold=threshold,
            min_survivors=min_survivors,
            noise=noise,
            # what every site trains this round: the model the mask stage sends, the run's
            # training settings and no config (Fleet.ask sends none)
            terms=round_terms(digest(self.start), TRAINING, {}),
        )
        self.evidence = Evidence(bound=self.server.bound, crypto=fleet.crypto)
        self.signatures: dict[int, dict[tuple[int, ...], bytes]] = {}  # who signed which set
        self.sent: dict[int, list[Request]] = {}

    @property
    def names(self) -> dict[int, str]:
        return dict(enumerate(self.cohort, start=1))

    def index(self, name: str) -> int:
        return self.cohort.index(name) + 1

    @property
    def graph(self) -> dict[int, tuple[int, ...]]:
        return self.server.graph

    def ask(
        self, requests: Mapping[int, Request], *, start: Params | None = None
    ) -> dict[int, Answer]:
        """Send client ``i`` the message ``requests[i]``; keep what comes back as evidence."""
        messages = {self.names[i]: r for i, r in requests.items()}
        params = None
        if any(isinstance(r, MaskRequest) for r in requests.values()):
            params = self.start if start is None else start
        answers = self.fleet.ask(self.number, messages, params=params)
        out = {self.index(name): a for name, a in answers.items()}
        for i, answer in out.items():
            request = requests[i]
            self.sent.setdefault(i, []).append(request)
            self.evidence.note(i, request, answer)
            if isinstance(request, ConsistencyRequest) and isinstance(
                answer.reply, SurvivorSignature
            ):
                self.signatures.setdefault(i, {})[request.survivors] = answer.reply.signature
        return out

    def stage(self, requests: Mapping[int, Request], **kwargs: Any) -> dict[int, Answer]:
        """:meth:`ask`, then hand the honest server every reply (as the driver would)."""
        answers = self.ask(requests, **kwargs)
        receive = {
            PublicKeys: self.server.receive_keys,
            ShareKeys: self.server.receive_shares,
            MaskedInput: self.server.receive_masked,
            SurvivorSignature: self.server.receive_signature,
            Reveal: self.server.receive_reveal,
        }
        for i, answer in sorted(answers.items()):
            if answer.reply is not None:
                receive[type(answer.reply)](i, answer.reply)
        return answers

    # -- the honest protocol, stage by stage ------------------------------------
    def advertise(self, only: Iterable[int] | None = None) -> dict[int, Answer]:
        chosen = set(self.names) if only is None else set(only)
        return self.stage({i: self.server.setup_for(i) for i in sorted(chosen)})

    def share(self) -> dict[int, Answer]:
        return self.stage(self.server.close_keys())

    def mask(self) -> dict[int, Answer]:
        return self.stage(self.server.close_shares())

    def consistency(self) -> dict[int, Answer]:
        return self.stage(self.server.close_masked())

    def unmask(self) -> dict[int, Answer]:
        return self.stage(self.server.close_consistency())

    def through(self, last: str) -> None:
        """Run the honest stages up to ``last`` (advertise, share, mask, consistency,
        unmask), every site answering."""
        for name in ("advertise", "share", "mask", "consistency", "unmask"):
            answers = getattr(self, name)()
            refused = {self.names[i]: a.declined or a.error for i, a in answers.items() if not a.ok}
            assert not refused, f"round {self.number} {name}: {refused}"
            if name == last:
                return

    def unmask_request(self, survivors: tuple[int, ...]) -> UnmaskRequest:
        """An unmask request naming ``survivors`` with every signature the coordinator holds
        of a site in it: over that very set where it has one, else over whatever set that
        site signed (the best a coordinator can do)."""
        entries = []
        for v, signed in sorted(self.signatures.items()):
            if v in survivors:
                signature = signed.get(survivors, next(iter(signed.values())))
                certificate = self.evidence.keys[v].certificate if v in self.evidence.keys else b""
                entries.append(
                    SignedSurvivors(index=v, signature=signature, certificate=certificate)
                )
        return UnmaskRequest(survivors=survivors, signatures=tuple(entries))
