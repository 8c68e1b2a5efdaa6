"""``fedops client --standing``: a site agent that stays up across a federation's runs.

It asks the coordinator which run is open (``Federation.Offer``), decides by its own
policy (:mod:`fedops.client.offer_check`), and joins that run as an ordinary
:class:`~fedops.client.agent.Agent` pinned to the run's id; when the run ends it goes
back to asking. Every decision is in the site's signed audit log in ``--run-dir``
(``run_declined`` with the rule, ``run_accepted``, ``run_left`` with how it ended),
each run's own journal and log in ``--run-dir/runs/<run id>``, and the privacy ledger
in ``--run-dir`` itself, so ε composes over every run the site ever trained in.

The agent outlives a coordinator restart (it retries, with capped backoff, up to
``--retry-for``, a day by default) and a run's failure (the run ends, the next offer
comes). It never restarts itself and never runs code the coordinator sends: a run
names one of the tasks the site was started with, and the site runs its own copy.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import grpc

from fedops.client.agent import (
    RETRYABLE,
    Agent,
    CoordinatorRefused,
    CoordinatorUnreachable,
    RunOver,
)
from fedops.client.channel import dial
from fedops.client.offer_check import SiteTask, decline_reason, offered_task
from fedops.client.site_config import site_name, started_policy
from fedops.client.site_trail import SiteTrail
from fedops.consortium.kit import Kit
from fedops.runtime.settings import ClientConfig
from fedops.tasks import load_task
from fedops.tasks.contract import Task, TaskError
from fedops.tasks.ledger import SiteLedger
from fedops.tasks.loader import source_digest
from fedops.tasks.local_site import LocalSite
from fedops.tasks.site_policy import PolicyViolation, SitePolicy
from fedops.v1 import fedops_pb2 as pb
from fedops.v1 import fedops_pb2_grpc as pb_grpc

log = logging.getLogger("fedops.client")

#: seconds between questions while no run is open (or the open one was decided)
OFFER_POLL_S = 2.0
#: the longest pause between decisions while offers keep being declined
MAX_PAUSE_S = 60.0
#: the most runs whose outcome a site remembers (the oldest are forgotten)
MAX_REMEMBERED = 1024
#: how long a standing site keeps retrying an unreachable coordinator (no --retry-for)
STANDING_PATIENCE_S = 24 * 3600.0


class StandingSite:
    """One site across runs: offers in, decisions and runs out."""

    def __init__(
        self,
        cfg: ClientConfig,
        policy: SitePolicy,
        make_site: Callable[[ClientConfig, Task, SitePolicy], LocalSite],
        *,
        kit: Kit | None = None,
    ) -> None:
        assert cfg.run_dir is not None  # ClientConfig.check_standing
        self.cfg, self.policy, self.kit, self.make_site = cfg, policy, kit, make_site
        self.root = cfg.run_dir
        # digests read now, without importing: a task file that is missing fails at start
        self.tasks = {name: SiteTask(name, source_digest(name)) for name in cfg.tasks}
        self.ledger = SiteLedger(self.root)
        signer = kit.signing_identity() if kit is not None else None
        self.trail = SiteTrail(self.root, cfg.site, site_name(cfg, kit), identity=signer)
        self.channel = dial(cfg.coordinator, kit)
        self.stub = pb_grpc.FederationStub(self.channel)
        self.decided: OrderedDict[str, str] = OrderedDict()  # run id -> how the site left it
        self._pause = OFFER_POLL_S  # after a decision; grows while offers keep being declined
        self._counted = 0  # runs decided (--max-runs counts them)
        self._idle_said = False  # "waiting for a run" logged since the last change
        self._stop = threading.Event()
        self._rng = random.Random(f"{cfg.site}-{time.time_ns()}")

    def run(self) -> int:
        """Serve runs until interrupted; 1 once the coordinator is unreachable for too long."""
        self.trail.audit(
            "standing_started",
            coordinator=self.cfg.coordinator,
            tasks={t.name: t.digest for t in self.tasks.values()},
            policy=started_policy(
                self.policy,
                self.cfg,
                share_monitoring=self.cfg.share_monitoring,
                privacy_ledger=self.ledger.path,
                secagg_identity=self.kit is not None,
            ),
        )
        try:
            limit = self.cfg.max_runs
            while not self._stop.is_set() and (limit is None or self._counted < limit):
                offer = self._offer()
                if offer.open and offer.run_id not in self.decided:
                    self._consider(offer)
                    self._idle_said = False
                    self._stop.wait(self._pause)  # never two decisions back to back
                else:
                    self._say_idle(offer)
                    self._stop.wait(OFFER_POLL_S)
            return 0
        finally:
            self.channel.close()
            self.trail.close()

    def _offer(self) -> pb.RunOffer:
        """The open run, retried through outages up to the site's patience."""
        failures, first = 0, time.monotonic()
        patience = self.cfg.retry_for or STANDING_PATIENCE_S
        while True:
            try:
                return self.stub.Offer(pb.OfferRequest(), timeout=15)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    self.trail.audit("refused_by_coordinator", code=exc.code().name)
                    raise CoordinatorRefused(
                        f"the coordinator refuses this site ({exc.code().name}): {exc.details()}"
                    ) from exc
                failures += 1
                self._idle_said = False  # said again once the coordinator answers
                if time.monotonic() - first > patience:
                    raise CoordinatorUnreachable(
                        f"coordinator {self.cfg.coordinator} unreachable for {patience:g} s "
                        f"({exc.code().name}); giving up (--retry-for)"
                    ) from exc
                delay = min(10.0, 0.5 * 2 ** min(failures - 1, 8)) * (0.5 + self._rng.random())
                log.warning(
                    "asking for the open run failed (%s); retry in %.1f s", exc.code().name, delay
                )
                self._stop.wait(delay)

    def _say_idle(self, offer: pb.RunOffer) -> None:
        """One line when the site starts waiting for a run (after a run, at start, after an
        outage), not one per question: what an operator watching the log wants to know."""
        if self._idle_said:
            return
        self._idle_said = True
        why = "no new run is open" if offer.open else (offer.message[:200] or "no run is open")
        log.info("waiting for a run at %s: %s", self.cfg.coordinator, why)

    def _consider(self, offer: pb.RunOffer) -> None:
        run_id = offer.run_id
        reason = decline_reason(offer, tasks=self.tasks, policy=self.policy, ledger=self.ledger)
        if reason is not None:
            self._decline(run_id, offer.task[:200], reason)
            return
        self.trail.audit(
            "run_accepted",
            run_id=run_id,
            task=offer.task,
            task_digest=offer.task_digest,
            config_digest=offer.config_digest[:64],
            privacy=offer.privacy[:40],
            secagg=offer.secagg[:40],
            rounds=offer.rounds,
        )
        log.info("joining run %s (task %s)", run_id, offer.task)
        outcome = self._take_part(offer)
        log.info("left run %s: %s", run_id, outcome)
        self.trail.audit("run_left", run_id=run_id, outcome=outcome[:500])
        if outcome != "unreachable":  # an outage: join again when it is offered again
            self._decided(run_id, outcome)

    def _decline(self, run_id: str, task: str, reason: str) -> None:
        log.warning("declining run %s: %s", run_id[:80], reason)
        self.trail.audit("run_declined", run_id=run_id[:80], task=task, reason=reason)
        self._decided(run_id, "declined")

    def _decided(self, run_id: str, outcome: str) -> None:
        """Remember how the site left run ``run_id`` (the full id: a shortened one would
        not match the next offer); a coordinator offering ever new runs that the site
        declines meets a growing pause, and a bounded memory."""
        self.decided[run_id] = outcome
        self._counted += 1
        while len(self.decided) > MAX_REMEMBERED:
            self.decided.popitem(last=False)
        refused = outcome.startswith(("declined", "over", "refused", "empty"))
        self._pause = min(MAX_PAUSE_S, self._pause * 2) if refused else OFFER_POLL_S

    def _take_part(self, offer: pb.RunOffer) -> str:
        """Run the offered run as an agent pinned to it; how it ended."""
        mine = offered_task(offer, self.tasks)
        assert mine is not None  # decline_reason: an offer naming no task of the site's
        try:  # the site's own copy, by the name it was started with
            task = load_task(
                mine.name,
                allowed=self.policy.allowed_tasks,
                partition=offer.partition,
                alpha=offer.alpha,
                seed=offer.data_seed,
            )
        except (TaskError, ValueError, TypeError) as exc:
            return f"declined: the task did not load: {exc}"
        if task.digest != offer.task_digest:
            return "declined: the task's code changed on this site's disk since it started"
        cfg = dataclasses.replace(self.cfg, run_dir=self.root / "runs" / offer.run_id)
        try:
            # the root's cfg: the site's privacy ledger is the root's, shared by every run
            site = self.make_site(self.cfg, task, self.policy)
            agent = Agent(cfg, site, kit=self.kit, policy=self.policy, run_id=offer.run_id)
        except Exception as exc:  # the run's data split or model fails here: decline it
            log.exception("run %s: this site could not build the task", offer.run_id)
            return f"declined: the site could not build the task: {type(exc).__name__}: {exc}"
        try:
            agent.run()
        except CoordinatorUnreachable:
            return "unreachable"
        except RunOver as exc:
            return f"over: {exc}"
        except (CoordinatorRefused, PolicyViolation) as exc:
            return f"refused: {exc}"
        ended = f" ({agent.ended})" if agent.ended else ""
        if not agent.tasks_seen:  # a run that asked nothing: offered again and again, it pauses
            return f"empty: the run ended without a task for this site{ended}"
        return f"finished{ended}"
