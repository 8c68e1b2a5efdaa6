"""``fedops coordinator``: serve one run until its last round, resuming if asked."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from fedops.consortium.kit import Kit, KitError, load_kit
from fedops.consortium.tls import Revocation, server_credentials
from fedops.coordinator.admin import admin_handler
from fedops.coordinator.aio import LoopServer
from fedops.coordinator.grpc_server import build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.coordinator.listening import Listening, remove_listening, write_listening
from fedops.coordinator.peer_guard import RefusalThrottle
from fedops.coordinator.peers import PeerGate
from fedops.core.params import Params, specs_of
from fedops.runtime.control import RunControl
from fedops.runtime.driver import DriverConfig
from fedops.runtime.metrics import RunMetrics
from fedops.runtime.privacy import PrivacySettings
from fedops.runtime.records import RecordSettings, RunRecords, run_recorded
from fedops.runtime.round_monitor import MonitorSettings
from fedops.runtime.run import RunPlan, make_strategy
from fedops.runtime.section_settings import monitor_settings, privacy_settings, secagg_settings
from fedops.runtime.secure_fit import SecAggSettings
from fedops.runtime.settings import ConfigError, CoordinatorConfig, as_dict, parse_address
from fedops.runtime.store import config_digest
from fedops.tasks import Task, load_task
from fedops.tasks.site import global_evaluator, initial_params

log = logging.getLogger("fedops.coordinator")

INSECURE_WARNING = (
    "WARNING: serving plaintext gRPC (no TLS, no client certificates) on %s. Anyone who can "
    "reach this address can join the run. Use this for local development only."
)


class BindError(RuntimeError):
    """The coordinator cannot listen where it was told; nothing of the run was written."""


def run_config(cfg: CoordinatorConfig) -> dict[str, Any]:
    """The settings that make a run what it is, as stored and digested: not where it
    listens or where its directory is (a moved or absolute --run-dir is the same run)."""
    return {
        k: v for k, v in as_dict(cfg).items() if k not in ("address", "metrics_port", "run_dir")
    }


def check_port_free(address: str) -> None:
    """Refuse (:class:`BindError`) an address another program already listens on, before
    the run directory is touched: binding comes after the run's records are opened."""
    host, port = parse_address("address", address)
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # a port left in TIME_WAIT by a coordinator that just exited is free; a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BindError(f"cannot listen on {address}: {exc.strerror or exc}") from None


class RunHost(Protocol):
    """Where a run's Coordinator service is served: its own server (``fedops coordinator``)
    or a standing federation's (:mod:`fedops.coordinator.standing`)."""

    def check(self, cfg: CoordinatorConfig) -> None:
        """Refuse (:class:`BindError`) before anything of the run is written."""
        ...

    def serve(self, run: ServedRun) -> str:
        """Start serving ``run``; the address it is reachable at."""
        ...

    def close(self, status: str) -> None:
        """Stop serving the run (``status``: how it ended)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedRun:
    """What a host needs to serve one run."""

    transport: GrpcTransport
    cfg: CoordinatorConfig
    kit: Kit | None
    control: RunControl
    run_id: str
    config_digest: str
    task: Task | None
    audit: Callable[[str, Mapping[str, Any]], None]


def run_coordinator(
    cfg: CoordinatorConfig, *, ca_fingerprint: str | None = None, host: RunHost | None = None
) -> dict[str, Any]:
    """Serve (or resume) the configured run until its last round; return its summary.

    ``ca_fingerprint`` (``--ca-fingerprint``) pins the kit's CA from outside its folder;
    ``host``: where the run is served (default: a server of its own on ``cfg.address``).
    """
    kit = coordinator_kit(cfg.kit, ca_fingerprint) if cfg.kit is not None else None
    host = host or OwnServer()
    host.check(cfg)
    # the task first, its model too: a start that fails on it leaves nothing of the run
    task = load_task(cfg.task, **cfg.builtin_options()) if cfg.task else None
    specs = specs_of(initial_params(task, cfg.seed)) if task is not None else None
    metrics = RunMetrics()
    records = RunRecords.open(_record_settings(cfg, task, kit), metrics=metrics)
    try:
        transport, throttle = _transport(cfg, records, metrics)
        transport.model_specs = specs  # a site whose task builds another model is refused
        control = RunControl(rounds_planned=cfg.rounds, started=not cfg.wait_for_start)
        metrics_at = _serve_metrics(cfg, metrics)
        served = ServedRun(
            transport=transport,
            cfg=cfg,
            kit=kit,
            control=control,
            run_id=records.run_id,
            config_digest=config_digest(records.config),
            task=task,
            audit=records.audit.record,
        )
        address = host.serve(served)
        write_listening(cfg.run_dir, Listening(address, os.getpid(), records.run_id, metrics_at))
        plan = _plan(cfg, task, records, transport, control)
    except BaseException as exc:  # nothing left open: the records, the served run, the port
        host.close("failed")
        metrics.close()
        remove_listening(cfg.run_dir)
        records.abandon(f"{type(exc).__name__}: {exc}")
        raise
    log.info("coordinator for run %s listening on %s", records.run_id, address)
    if cfg.wait_for_start:
        log.info("waiting for an admin's `fedops admin start` before round 1")

    def stop(status: str) -> None:
        transport.close(grace_s=5.0 if status == "completed" else 0.5, status=status)
        host.close(status)
        throttle.flush()  # counts not yet written, while the store is open
        metrics.close()
        remove_listening(cfg.run_dir)

    return run_recorded(plan, records, transport, on_exit=stop)


def _serve_metrics(cfg: CoordinatorConfig, metrics: RunMetrics) -> str | None:
    """Where /metrics is served (``--metrics-port``), or None."""
    if cfg.metrics_port is None:
        return None
    return f"{cfg.metrics_address}:{metrics.serve(cfg.metrics_port, cfg.metrics_address)}"


def _record_settings(cfg: CoordinatorConfig, task: Task | None, kit: Kit | None) -> RecordSettings:
    return RecordSettings(
        run_dir=cfg.run_dir,
        config=run_config(cfg),
        task_digest=task.digest if task else "",
        keep_checkpoints=cfg.keep_checkpoints,
        # consortium mode: signed with the kit's CA-certified key, not a generated one
        identity=kit.signing_identity() if kit is not None else None,
        hide_participants=cfg.privacy.name == "central" and not cfg.privacy.publish_participants,
        mlflow_uri=cfg.mlflow_uri,
        mlflow_experiment=cfg.mlflow_experiment,
    )


def _transport(
    cfg: CoordinatorConfig, records: RunRecords, metrics: RunMetrics
) -> tuple[GrpcTransport, RefusalThrottle]:
    audit = records.audit
    transport = GrpcTransport(
        run_id=records.run_id,
        heartbeat_interval_s=cfg.heartbeat_interval_s,
        liveness_timeout_s=cfg.liveness_timeout_s,
        audit=audit.record,
        audit_head=lambda: audit.head,
        max_nodes=cfg.max_nodes,
    )
    # refusals cost the refused peer, not our disk: a few rows per offender per minute
    throttle = RefusalThrottle(
        records.write_rejection,
        is_node=lambda node: transport.registry.get(node) is not None,
        on_every=metrics.observe_rejection,
    )
    transport.on_rejection = throttle
    metrics.connected.set_function(lambda: len(transport.available_nodes()))
    return transport, throttle


def _plan(
    cfg: CoordinatorConfig,
    task: Task | None,
    records: RunRecords,
    transport: GrpcTransport,
    control: RunControl,
) -> RunPlan:
    def first_params() -> Params:
        if task is not None:
            return initial_params(task, cfg.seed)
        log.info("no --task: taking the initial model from the first client")
        return transport.fetch_initial_params(cfg.join_timeout_s)

    return RunPlan(
        label="run",
        config=records.config,
        strategy=make_strategy(cfg.strategy),
        driver=_driver(cfg),
        initial_params=first_params,
        control=control,
        evaluate_global=global_evaluator(task) if task else None,
        task=task,
        monitoring=_monitoring(cfg),
        observers=records.observers(),
        on_fallback=records.trail.checkpoint_fallback,
        site_names=transport.registry.site_name,
        summary={
            "task": cfg.task,
            "task_digest": task.digest if task else "",
            "strategy": cfg.strategy.name,
            "rounds_planned": cfg.rounds,
            "secagg": cfg.secagg.name,
            "privacy_mode": cfg.privacy.name,
            "train": dataclasses.asdict(cfg.train),
        },
        privacy=_privacy(cfg),
        secagg=_secagg(cfg),
    )


def _driver(cfg: CoordinatorConfig) -> DriverConfig:
    return DriverConfig(
        rounds=cfg.rounds,
        min_clients=cfg.min_clients,
        clients_per_round=cfg.clients_per_round,
        round_timeout_s=cfg.round_timeout_s,
        join_timeout_s=cfg.join_timeout_s,
        seed=cfg.seed,
        min_fit_results=cfg.min_fit_results,
        train=cfg.train.plan(),  # the run's: every fit task carries this round's
    )


def _privacy(cfg: CoordinatorConfig) -> PrivacySettings | None:
    return privacy_settings(cfg.privacy, cfg.secagg, min_fit_results=cfg.min_fit_results)


def _secagg(cfg: CoordinatorConfig) -> SecAggSettings | None:
    return secagg_settings(cfg.secagg)


def _monitoring(cfg: CoordinatorConfig) -> MonitorSettings | None:
    return monitor_settings(cfg.monitoring, privacy=cfg.privacy.name)


class OwnServer:
    """A run served on a server of its own, bound to ``--address`` for the run's life."""

    def __init__(self) -> None:
        self._server: LoopServer | None = None

    def check(self, cfg: CoordinatorConfig) -> None:
        check_port_free(cfg.address)

    def serve(self, run: ServedRun) -> str:
        self._server, port = _serve(
            run.transport,
            run.cfg,
            run.kit,
            control=run.control,
            run_id=run.run_id,
            audit=run.audit,
        )
        return f"{run.cfg.address.rpartition(':')[0]}:{port}"  # the bound port, for :0

    def close(self, status: str) -> None:
        if self._server is not None:
            self._server.stop(grace=1.0).wait(5)
            self._server = None


def _serve(
    transport: GrpcTransport,
    cfg: CoordinatorConfig,
    kit: Kit | None,
    *,
    control: RunControl,
    run_id: str,
    audit: Callable[[str, Mapping[str, Any]], None],
) -> tuple[LoopServer, int]:
    """The started server and the port it bound (the kernel's pick for port 0)."""
    if kit is None:
        server = build_server(transport, max_workers=cfg.max_workers)
        bound = listen_on(server, cfg.address, kit)
        log.warning(INSECURE_WARNING, f"{cfg.address.rpartition(':')[0]}:{bound}")
    else:
        gate = kit_gate(transport, kit)
        server = build_server(transport, max_workers=cfg.max_workers, gate=gate)
        server.add_generic_rpc_handlers(
            (run_admin(transport, gate, control=control, run_id=run_id, audit=audit),)
        )
        bound = listen_on(server, cfg.address, kit)
        log.info("mTLS: consortium %r, serving as %r", kit.consortium, kit.name)
    server.start()
    return server, bound


def kit_gate(transport: GrpcTransport, kit: Kit) -> PeerGate:
    """Consortium mode: every call of the run checked against the caller's certificate."""
    registry = transport.registry
    gate = PeerGate(
        Revocation.from_kit(kit),
        site_of_node=lambda node: registry.site_name(node) if registry.get(node) else None,
        on_refusal=lambda who, code, reason: transport.on_rejection(0, who, code, reason),
    )
    transport.crl = gate.revocation.current_pem  # sites check SecAgg+ peers with it
    return gate


def run_admin(
    transport: GrpcTransport,
    gate: PeerGate,
    *,
    control: RunControl,
    run_id: str,
    audit: Callable[[str, Mapping[str, Any]], None],
) -> grpc.GenericRpcHandler:
    """The run's Admin service (``fedops admin status|start|stop``)."""
    registry = transport.registry
    return admin_handler(
        control,
        run_id=run_id,
        revocation=gate.revocation,
        sites=lambda: [registry.site_name(n) for n in registry.node_ids()],
        audit=audit,
        refuse=lambda who, code, reason: transport.on_rejection(0, who, code, reason),
    )


def listen_on(server: LoopServer, address: str, kit: Kit | None) -> int:
    """Bind ``address`` on ``server`` (mTLS with ``kit``'s credentials; plaintext without a
    kit) and return the bound port, the kernel's pick for port 0: one way for a run's server
    and a standing federation's. :class:`BindError` where it cannot listen (the asyncio
    server raises where the threaded one returned 0)."""
    credentials = server_credentials(kit) if kit is not None else None
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise BindError(f"cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise BindError(f"cannot listen on {address} (in use or not a local address)")
    return bound


def coordinator_kit(path: Path, ca_fingerprint: str | None = None) -> Kit:
    try:
        kit = load_kit(path, ca_fingerprint=ca_fingerprint)
    except KitError as exc:
        raise ConfigError("kit", str(exc)) from exc
    if kit.role != "coordinator":
        raise ConfigError("kit", f"{path} is a {kit.role}'s kit; serving needs the coordinator's")
    return kit
