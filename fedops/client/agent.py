"""``fedops client``: a site's agent. Dials out, pulls tasks, pushes results.

The agent keeps no state the coordinator depends on: if the coordinator goes
away it retries with exponential backoff (bounded by ``--max-retries``), and
if the coordinator no longer knows it (a restart) it simply registers again.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from fedops.client.calls import ModelRefused, Session, fetch_model
from fedops.client.channel import dial
from fedops.client.coordinator_checks import CoordinatorChecks
from fedops.client.secure_participant import SecureParticipant, secure_identity
from fedops.client.site_config import site_name, site_policy, started_policy
from fedops.client.site_trail import SiteTrail
from fedops.client.startup import check_ledger as _check_ledger
from fedops.client.startup import delivered_crl, warn_count_shows, warn_without_identities
from fedops.client.task_guard import TaskGuard
from fedops.client.task_handling import Outbox, TaskHandler
from fedops.consortium.crl import DeliveredCrl
from fedops.consortium.kit import Kit
from fedops.core.params import Params, specs_of
from fedops.crypto import Crypto
from fedops.runtime.settings import ClientConfig
from fedops.tasks.local_site import LocalSite
from fedops.tasks.site_policy import PolicyViolation, SitePolicy
from fedops.v1 import fedops_pb2 as pb
from fedops.v1 import fedops_pb2_grpc as pb_grpc
from fedops.wire import PROTOCOL_VERSION, codec

__all__ = [
    "RETRYABLE",
    "Agent",
    "CoordinatorRefused",
    "CoordinatorUnreachable",
    "RunOver",
    "site_name",
    "site_policy",
]

log = logging.getLogger("fedops.client")


#: a call that failed in the network, not by the coordinator's decision: try again.
#: CANCELLED without a word from the coordinator (it never cancels a call itself) is
#: the connection under it going away.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # the coordinator's per-site limits: back off, retry
}
T = TypeVar("T")


class CoordinatorRefused(RuntimeError):
    """The coordinator denies this site (e.g. its certificate was revoked)."""


class CoordinatorUnreachable(RuntimeError):
    """Gave up after ``max_retries`` consecutive failed attempts."""


class RunOver(Exception):
    """A standing site's run is not (or no longer) the one served: back to the offers."""


class _Reregister(Exception):
    """The coordinator does not know this node (it restarted): register again."""


class Agent:
    """Runs one site against one coordinator until told to shut down."""

    def __init__(
        self,
        cfg: ClientConfig,
        site: LocalSite,
        *,
        kit: Kit | None = None,
        policy: SitePolicy | None = None,
        run_id: str = "",
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id  # a standing site's accepted run: it registers for that one only
        self.ended = ""  # the coordinator's word on how the run ended (SHUTDOWN's message)
        self.tasks_seen = 0  # tasks of the run this agent was given (not WAIT or SHUTDOWN)
        self.site = site
        self.kit = kit
        self.channel = dial(cfg.coordinator, kit)
        self.stub = pb_grpc.CoordinatorStub(self.channel)
        self.session: Session | None = None
        self._stop = threading.Event()
        self._rng = random.Random(f"{cfg.site}-{time.time_ns()}")
        self._buffer = bytearray()  # reused for every model download
        self.policy = policy or site_policy(cfg, kit)
        _check_ledger(cfg, site, self.policy)
        # a kit site checks its SecAgg+ peers against the CRL the coordinator delivers
        crl = delivered_crl(kit)
        self.secure = self._secure_participant(crl)
        # a site that caps its ε protects its records: what it sends besides the noised
        # model must not depend on them (its record count, or a model evaluated at will)
        self.private = self.site.hides_count
        if self.policy.max_epsilon is not None and self.policy.dp_public_records is None:
            warn_count_shows(self.site.num_train_examples)
        self.guard = TaskGuard(
            require_secagg=self.policy.require_secagg,
            private=self.private,
            share_evaluation=cfg.share_evaluation,
        )
        # statistics of this site's own rows under a coordinator-chosen model are an
        # exact counting oracle: a site that protects its data keeps them unless it opts in
        secure_only = self.policy.require_secagg
        self.withhold_monitoring = not cfg.share_monitoring and (secure_only or self.private)
        if secure_only and self.secure.verify is None:
            warn_without_identities()
        signer = kit.signing_identity() if kit is not None else None  # the log's key: the kit's
        self.trail = SiteTrail(cfg.run_dir, cfg.site, self.site_name, identity=signer)
        self.checks = CoordinatorChecks(self._audit, anchors=self.trail.keeping, crl=crl)
        # each local-DP round's ε goes to this site's own signed log, never to the coordinator
        site.on_spend = self.trail.privacy_spent
        self._audit_started()

    def _secure_participant(self, crl: DeliveredCrl | None) -> SecureParticipant:
        """This site's SecAgg+ side, with the identities its peers are checked against."""
        cfg = self.cfg
        identity = secure_identity(
            cfg.identity_key,
            cfg.trusted_keys,
            self.site_name,
            kit=self.kit,
            revoked=crl.is_revoked if crl is not None else None,
        )
        return SecureParticipant(
            self.site, Crypto(), policy=self.policy.secagg, run_dir=cfg.run_dir, **identity
        )

    def _audit_started(self) -> None:
        """The policy the site holds itself to, signed before it takes any task."""
        cfg, kit = self.cfg, self.kit
        self._audit(
            "site_started",
            site=cfg.site,
            task=cfg.task,
            task_digest=self.site.task.digest,
            coordinator=cfg.coordinator,
            consortium=kit.consortium if kit is not None else None,
            policy=started_policy(
                self.policy,
                cfg,
                share_monitoring=not self.withhold_monitoring,
                privacy_ledger=self.site.ledger.path,
                secagg_identity=self.secure.verify is not None,
            ),
        )

    @property
    def site_name(self) -> str:
        return site_name(self.cfg, self.kit)

    # -- plumbing --------------------------------------------------------
    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        failures, first = 0, time.monotonic()
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                details = exc.details() or ""
                if "handshake failed" in details.lower():  # not a blip: say so at once
                    raise CoordinatorRefused(
                        f"TLS handshake with {self.cfg.coordinator} failed: the coordinator's "
                        "certificate is not from this kit's CA, or this kit's is not from its "
                        f"(another consortium, or a replaced kit?): {details[-300:]}"
                    ) from exc
                failures += 1
                if self._out_of_retries(failures, first):
                    budget = (
                        f"--retry-for {self.cfg.retry_for:g} s"
                        if self.cfg.retry_for is not None
                        else f"--max-retries {self.cfg.max_retries}"
                    )
                    hint = (
                        " (the coordinator closed the connection at once: does it need TLS, "
                        "a consortium kit (--kit)?)"
                        if "socket closed" in details.lower() and self.kit is None
                        else ""
                    )
                    raise CoordinatorUnreachable(
                        f"coordinator {self.cfg.coordinator} unreachable: {what} failed "
                        f"{failures} times in a row ({exc.code().name}: {details[-200:]}); "
                        f"giving up ({budget}){hint}"
                    ) from exc
                delay = min(10.0, 0.5 * 2 ** (failures - 1)) * (0.5 + self._rng.random())
                log.warning(
                    "%s failed (%s); retry %d/%d in %.1f s",
                    what,
                    exc.code().name,
                    failures,
                    self.cfg.max_retries,
                    delay,
                )
                if self._stop.wait(delay):
                    raise CoordinatorUnreachable("stopped") from exc

    def _out_of_retries(self, failures: int, first: float) -> bool:
        if self.cfg.retry_for is not None:
            return time.monotonic() - first > self.cfg.retry_for
        return failures > self.cfg.max_retries

    def _audit(self, event: str, **payload: Any) -> None:
        self.trail.audit(event, **payload)

    @property
    def announced_examples(self) -> int:
        """The record count this site tells the coordinator outside training: none when it
        caps its ε or plans local DP with a public count (n and n - 1 would differ
        exactly; the coordinator only logs it)."""
        return 0 if self.private else self.site.num_train_examples

    def _register(self) -> Session:
        request = pb.RegisterRequest(
            protocol_version=PROTOCOL_VERSION,
            site_name=self.site_name,
            num_train_examples=self.announced_examples,
            model=codec.specs_to_proto(specs_of(self.site.initial_params())),
            run_id=self.run_id,
        )
        try:
            reply = self._retrying("register", lambda: self.stub.Register(request, timeout=30))
        except grpc.RpcError as exc:
            if self.run_id and exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise RunOver(exc.details() or "the run is over") from exc
            raise
        if self.run_id and reply.run_id != self.run_id:  # never train for a run not accepted
            raise RunOver(f"the coordinator serves run {reply.run_id[:40]!r}, not {self.run_id}")
        # pinned from the first registration on: a coordinator that answers a later one with
        # another run would start this site's per-run ε, binning and anchors afresh
        self.run_id = reply.run_id
        log.info(
            "registered with %s as %s (run %s)", self.cfg.coordinator, reply.node_id, reply.run_id
        )
        self.trail.registered(reply.node_id, reply.run_id)
        return Session(
            node_id=reply.node_id,
            token=reply.token,
            run_id=reply.run_id,
            heartbeat_s=reply.heartbeat_interval_ms / 1000 or 2.0,
            chunk_bytes=reply.max_chunk_bytes or codec.DEFAULT_CHUNK_BYTES,
        )

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.session.heartbeat_s if self.session else 2.0):
            session = self.session
            if session is None:
                continue
            with contextlib.suppress(grpc.RpcError):  # the main loop notices and reconnects
                self.stub.Heartbeat(
                    pb.HeartbeatRequest(node_id=session.node_id, token=session.token), timeout=5
                )

    # -- the loop ----------------------------------------------------------
    def run(self) -> int:
        """Serve tasks until SHUTDOWN (exit code 0)."""
        beat = threading.Thread(target=self._heartbeats, name="fedops-heartbeat", daemon=True)
        beat.start()
        try:
            try:
                self.policy.check_task(self.site.task)
            except PolicyViolation as exc:
                self._audit("policy_refused", reason=str(exc))
                raise
            self.session = self._register()
            while True:
                try:
                    if not self._step():
                        return 0
                except _Reregister:
                    log.warning("the coordinator no longer knows this node; registering again")
                    self.session = self._register()
        except grpc.RpcError as exc:  # not worth a retry: the coordinator said why, say it
            self._audit("refused_by_coordinator", code=exc.code().name, reason=exc.details())
            raise CoordinatorRefused(
                f"the coordinator refuses this site ({exc.code().name}): {exc.details()}"
            ) from exc
        finally:
            # Join the heartbeat thread before closing the channel: a gRPC call still in
            # flight at interpreter exit aborts the process.
            self._stop.set()
            beat.join(timeout=10)
            self.channel.close()
            self.trail.close()

    def _step(self) -> bool:
        session = self.session
        assert session is not None
        request = pb.PullTaskRequest(
            node_id=session.node_id, token=session.token, wait_ms=int(self.cfg.poll_wait_s * 1000)
        )
        task = self._guarded(
            "pull", lambda: self.stub.PullTask(request, timeout=self.cfg.poll_wait_s + 15)
        )
        if task.kind == pb.TASK_KIND_SHUTDOWN:
            self.ended = task.message[:200] or "shutdown"  # how the run ended, as told
            then = "leaving the run" if self.run_id else "exiting"
            log.info("coordinator says: %s; %s", task.message or "shutdown", then)
            self.trail.finished(task, self.checks.head(task))
            return False
        if task.kind == pb.TASK_KIND_WAIT:
            return True
        self.tasks_seen += 1
        tasks = self._task_handler()
        if not tasks.allows(task):
            return self.policy.consents()  # consent withdrawn: this site leaves the run
        try:
            tasks.handle(task, session)
        except (grpc.RpcError, _Reregister, CoordinatorUnreachable, CoordinatorRefused):
            raise
        except ModelRefused as exc:  # the coordinator's doing: decline's one line, no trace
            tasks.decline(task, f"the model was refused: {exc}"[:500])
        except Exception as exc:  # whatever a task does to the site's code, never fatal
            log.exception("round %d: the task failed at this site", task.round)
            tasks.decline(task, f"the task failed at this site: {type(exc).__name__}: {exc}"[:500])
        return True

    def _task_handler(self) -> TaskHandler:
        """What carrying out a task may use, read afresh for each task so that it never
        works from a stale copy of this agent's parts."""
        session = self.session
        assert session is not None
        outbox = Outbox(
            channel=self.channel, session=session, trail=self.trail, guarded=self._guarded
        )
        return TaskHandler(
            site=self.site,
            policy=self.policy,
            guard=self.guard,
            checks=self.checks,
            secure=self.secure,
            consent_file=self.cfg.consent_file,
            withhold_monitoring=self.withhold_monitoring,
            announced_examples=self.announced_examples,
            audit=self._audit,
            fetch=self._fetch,
            outbox=outbox,
        )

    def _guarded(self, what: str, call: Callable[[], T]) -> T:
        try:
            return self._retrying(what, call)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise _Reregister() from exc
            raise

    def _fetch(self, task: pb.Task) -> Params:
        session = self.session
        assert session is not None
        params, got = self._guarded(
            "fetch model", lambda: fetch_model(self.channel, session, task, buffer=self._buffer)
        )
        self.trail.received(task, session.node_id, got, self.checks.head(task))
        return params
