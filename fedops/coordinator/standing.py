"""``fedops serve``: a coordinator that stays up and serves queued runs, one at a time.

One server (one port, one TLS identity) for the life of the process; each run is
exactly what ``fedops coordinator --run-dir ROOT/runs/<id>`` would run (same
records, audit chain, checkpoints, resume), served through a :class:`RunSwitch`
instead of a server of its own. Runs queue in ``ROOT/federation.sqlite``
(:mod:`fedops.runtime.run_queue`) and run oldest first; only one is open at a time
(say so to users: a second run waits, it never shares the sites). Standing sites ask
``Federation.Offer`` which run is open, decide by their own policy, and register for
that run by its id.

What survives what:

- a run that fails (a join timeout, a task that does not load, an aborted round) is
  marked ``failed`` with the reason, and the next queued run starts;
- a serve process killed at any point (SIGKILL included) comes back to the same
  queue: the run it was serving is still ``running`` there and is resumed from its
  run directory first; standing sites retry meanwhile and re-register.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedops.consortium.kit import Kit
from fedops.consortium.tls import Revocation
from fedops.coordinator.admin import ADMIN_SERVICE
from fedops.coordinator.aio import LoopServer
from fedops.coordinator.app import (
    INSECURE_WARNING,
    ServedRun,
    check_port_free,
    coordinator_kit,
    kit_gate,
    listen_on,
    run_admin,
    run_coordinator,
)
from fedops.coordinator.federation_service import FederationParts, OfferBoard, federation_handler
from fedops.coordinator.grpc_server import SERVICE, coordinator_service, new_server
from fedops.coordinator.listening import Listening, remove_listening, write_listening
from fedops.coordinator.run_switch import ADMIN_METHODS, COORDINATOR_METHODS, RunSwitch
from fedops.crypto import Identity
from fedops.runtime.audit.log_file import AuditLog
from fedops.runtime.control import RunControl
from fedops.runtime.run_queue import QueuedRun, RunQueue, SpecError
from fedops.runtime.settings import CoordinatorConfig
from fedops.tasks.builtin import TaskError
from fedops.tasks.loader import source_digest
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.training import train_to_proto

log = logging.getLogger("fedops.serve")

#: (the run's settings as submitted, its run directory, the address served) -> its config
RunParser = Callable[[str, Path, str], CoordinatorConfig]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSettings:
    root: Path
    address: str = "127.0.0.1:8765"
    kit: Path | None = None
    ca_fingerprint: str | None = None
    max_workers: int = 64
    poll_s: float = 1.0  # how often the queue file is read for runs submitted with --root
    max_runs: int | None = None  # exit 0 once this many runs closed (scripts, CI); None: never
    #: the task code a run may name, by sha256 (``--allowed-task``); empty: any (built-ins
    #: always: they ship with fedops)
    allowed_tasks: tuple[str, ...] = ()


def offer_of(run: ServedRun) -> pb.RunOffer:
    """What a standing site is told of the open run (and checks again on every task)."""
    cfg, privacy = run.cfg, run.cfg.privacy
    return pb.RunOffer(
        open=True,
        run_id=run.run_id,
        task=cfg.task or "",
        task_digest=run.task.digest if run.task is not None else "",
        partition=cfg.partition,
        alpha=cfg.alpha,
        data_seed=cfg.data_seed,
        train=train_to_proto(cfg.train.plan().at(1)),
        privacy=privacy.name,
        epsilon=float(privacy.target_epsilon or 0.0),
        delta=float(privacy.delta),
        secagg=cfg.secagg.name,
        rounds=cfg.rounds,
        config_digest=run.config_digest,
    )


class StandingHost:
    """Serves one run at a time on the federation's server (a :class:`RunHost`)."""

    def __init__(self, federation: Federation, entry: QueuedRun) -> None:
        self._federation = federation
        self._entry = entry
        self.control: RunControl | None = None

    def check(self, cfg: CoordinatorConfig) -> None:
        """The federation's server is bound already."""

    def serve(self, run: ServedRun) -> str:
        fed = self._federation
        loaded = run.task.digest if run.task is not None else ""
        if self._entry.task_digest and loaded != self._entry.task_digest:  # read once more
            raise SpecError("task: its code changed between the checks and the load")
        fed.check_allowed(run.cfg.task or "", loaded)
        gate = kit_gate(run.transport, run.kit) if run.kit is not None else None
        fed.coordinator.open(coordinator_service(run.transport, fed.server, gate=gate))
        if gate is not None:
            admin = run_admin(
                run.transport, gate, control=run.control, run_id=run.run_id, audit=run.audit
            )
            fed.admin.open(admin)
        self.control = run.control
        if not fed.queue.started(self._entry.seq, run.run_id):  # cancelled as it was opened
            run.control.stop(fed.queue.get(self._entry.seq).message or "cancelled")
        fed.board.open(offer_of(run))
        log.info("%s open: run %s, task %s", self._entry.id, run.run_id, run.cfg.task)
        return fed.address

    def close(self, status: str) -> None:
        fed = self._federation
        fed.board.close()
        fed.coordinator.close()
        fed.admin.close()


class Federation:
    """The serve process: its server, queue, signed log, and the loop over runs."""

    def __init__(self, settings: ServeSettings, parse_run: RunParser) -> None:
        self.settings = settings
        self.parse_run = parse_run
        self.kit: Kit | None = (
            coordinator_kit(settings.kit, settings.ca_fingerprint) if settings.kit else None
        )
        check_port_free(settings.address)
        self.queue = RunQueue(settings.root)
        identity: Identity | None = self.kit.signing_identity() if self.kit else None
        self.audit = AuditLog.open(settings.root, "coordinator", identity=identity)
        self.board = OfferBoard()
        self.coordinator = RunSwitch(SERVICE, COORDINATOR_METHODS, self._closed)
        self.admin = RunSwitch(ADMIN_SERVICE, ADMIN_METHODS, self._closed)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._host: StandingHost | None = None
        self._open: QueuedRun | None = None
        self.server, self.address = self._start_server()

    def _closed(self) -> str:
        queued = self.queue.queued()
        return f"no run is open at this federation ({queued} queued); ask again shortly"

    def _start_server(self) -> tuple[LoopServer, str]:
        settings = self.settings
        server = new_server(settings.max_workers)
        parts = FederationParts(
            board=self.board,
            queue=self.queue,
            check_spec=self._check_spec,
            audit=self.audit.record,
            wake=self._wake.set,
            stop_running=self._stop_running,
            revocation=Revocation.from_kit(self.kit) if self.kit is not None else None,
        )
        server.add_generic_rpc_handlers((self.coordinator, self.admin, federation_handler(parts)))
        host = settings.address.rpartition(":")[0]
        port = listen_on(server, settings.address, self.kit)
        server.start()
        address = f"{host}:{port}"
        if self.kit is None:
            log.warning(INSECURE_WARNING, address)
        write_listening(settings.root, Listening(address, os.getpid(), "federation"))
        return server, address

    def _check_spec(self, spec: str) -> tuple[str, str]:
        """A submitted run's task and its code's digest, once its settings parse by the
        coordinator's rules and the task is one this federation runs."""
        cfg = self.parse_run(spec, self.settings.root / "runs" / "(check)", self.address)
        task = cfg.task or ""
        return task, self._allowed_digest(task)

    def _allowed_digest(self, task: str) -> str:
        """The task's code digest ("" for a built-in); :class:`SpecError` unless allowed."""
        try:
            digest = source_digest(task)
        except (TaskError, OSError) as exc:
            raise SpecError(f"task: {exc}") from None
        self.check_allowed(task, digest)
        return digest

    def check_allowed(self, task: str, digest: str) -> None:
        allowed = self.settings.allowed_tasks
        if digest and allowed and digest not in allowed:
            raise SpecError(
                f"task: {task[:200]!r} has digest {digest}, which this federation does not "
                "run (fedops serve --allowed-task)"
            )

    def _stop_running(self, seq: int, reason: str) -> bool:
        host, entry = self._host, self._open
        if host is None or entry is None or entry.seq != seq or host.control is None:
            return False
        host.control.stop(reason)
        return True

    def serve(self) -> None:
        """Serve queued runs until interrupted (SIGTERM, Ctrl-C)."""
        log.info("federation at %s serving runs from %s", self.address, self.settings.root)
        closed, limit = 0, self.settings.max_runs
        try:
            while not self._closing.is_set() and (limit is None or closed < limit):
                entry = self.queue.next_run()
                if entry is None:
                    self._wake.wait(self.settings.poll_s)
                    self._wake.clear()
                    continue
                if entry.stop_requested and entry.state == "running":  # stopped, then killed
                    self._finish(entry, "stopped", entry.stop_requested)
                    continue
                self._serve_one(entry)
                closed += 1
            if limit is not None and closed >= limit:
                log.info("served %d run(s) (--max-runs); exiting", closed)
        finally:
            self.server.stop(grace=1.0).wait(5)
            remove_listening(self.settings.root)
            self.audit.close()
            self.queue.close()

    def close(self) -> None:
        """End :meth:`serve` once no run is open (an open run ends first)."""
        self._closing.set()
        self._wake.set()

    def _serve_one(self, entry: QueuedRun) -> None:
        run_dir = self.settings.root / "runs" / entry.id
        try:
            cfg = self.parse_run(entry.spec, run_dir, self.address)
        except SpecError as exc:
            self._finish(entry, "failed", f"its settings are refused: {exc}")
            return
        cfg = dataclasses.replace(cfg, kit=self.settings.kit)
        try:  # the code the run was submitted with, and still one this federation runs
            digest = self._allowed_digest(cfg.task or "")
        except SpecError as exc:
            self._finish(entry, "failed", str(exc))
            return
        if entry.task_digest and digest != entry.task_digest:
            self._finish(
                entry,
                "failed",
                f"task: its code changed since the run was submitted (sha256 "
                f"{entry.task_digest[:16]}... then, {digest[:16]}... now)",
            )
            return
        self.audit.record("run_opened", {"id": entry.id, "resumed": entry.state == "running"})
        host = StandingHost(self, entry)
        self._host, self._open = host, entry
        done = threading.Event()
        watch = threading.Thread(target=self._watch_stop, args=(entry.seq, done), daemon=True)
        watch.start()
        try:
            summary = run_coordinator(cfg, ca_fingerprint=self.settings.ca_fingerprint, host=host)
        except KeyboardInterrupt:
            raise  # left "running": a restarted serve process resumes it
        except Exception as exc:  # one run's failure must not end the federation
            asked = host.control.stop_reason if host.control is not None else None
            if asked:  # stopped while it waited for its sites: the stop is why it ended
                self._finish(entry, "stopped", f"{asked} ({type(exc).__name__}: {exc})")
                return
            log.exception("%s failed", entry.id)
            self._finish(entry, "failed", f"{type(exc).__name__}: {exc}")
            return
        finally:
            host.close("ended")  # once more, for a run that failed before it could close
            self._host = self._open = None
            done.set()
            watch.join(timeout=5)
        status = str(summary.get("status", "failed"))
        state = {"completed": "completed", "budget_exhausted": "completed", "stopped": "stopped"}
        self._finish(entry, state.get(status, "failed"), str(summary.get("stop_reason", "")))

    def _watch_stop(self, seq: int, done: threading.Event) -> None:
        """A stop asked through the serve root (``fedops run stop --root``) reaches the run;
        one asked of the run itself (``fedops admin stop``) reaches the queue, so a serve
        process killed before the run ends does not resume it."""
        while not done.wait(self.settings.poll_s):
            reason = self.queue.get(seq).stop_requested
            if reason:
                self._stop_running(seq, reason)
                return
            host = self._host
            asked = host.control.stop_reason if host and host.control else None
            if asked:
                self.queue.stop(seq, asked)
                return

    def _finish(self, entry: QueuedRun, state: str, message: str) -> None:
        self.queue.finished(entry.seq, state, message)
        self.audit.record("run_closed", {"id": entry.id, "state": state, "message": message[:500]})
        log.info("%s %s%s", entry.id, state, f": {message}" if message else "")


def serve_federation(settings: ServeSettings, parse_run: RunParser) -> None:
    """``fedops serve``: build the federation and serve until interrupted."""
    Federation(settings, parse_run).serve()
