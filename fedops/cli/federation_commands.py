"""``fedops serve`` and ``fedops run submit|list|stop``: a standing federation's commands."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

import yaml

from fedops.cli.configs import kit_address
from fedops.cli.run_spec import load_run_file, parse_run_spec
from fedops.config import ConfigError, CoordinatorConfig
from fedops.reporting.out_dirs import out_dir_problem
from fedops.runtime.settings import is_loopback, parse_address


def serve_command(args: argparse.Namespace) -> int:
    from fedops.coordinator.app import BindError
    from fedops.coordinator.standing import ServeSettings, serve_federation
    from fedops.runtime.audit.log_file import AuditError

    try:
        address = kit_address(args.kit, args.address, args.ca_fingerprint)
        host, _ = parse_address("address", address)
        if not (is_loopback(host) or args.kit is not None or args.insecure):
            raise ConfigError(
                "address",
                f"refusing to serve plaintext gRPC on {host}: without a kit the federation "
                "binds loopback only; pass --insecure to accept the risk",
            )
    except ConfigError as exc:
        print(f"fedops serve: error: --{exc.key.replace('_', '-')}: {exc.message}", file=sys.stderr)
        return 2
    problem = out_dir_problem("--root", args.root)
    if problem:
        print(f"fedops serve: error: {problem}", file=sys.stderr)
        return 2
    settings = ServeSettings(
        root=args.root,
        address=address,
        kit=args.kit,
        ca_fingerprint=args.ca_fingerprint,
        max_workers=args.max_workers,
        max_runs=args.max_runs,
        allowed_tasks=tuple(args.allowed_task),
    )

    def parse(spec: str, run_dir: Path, served_at: str) -> CoordinatorConfig:
        return parse_run_spec(
            spec, run_dir=run_dir, address=served_at, kit=args.kit, insecure=args.insecure
        )

    try:
        serve_federation(settings, parse)
    except (OSError, sqlite3.Error) as exc:  # the root: not writable, not a queue
        print(f"fedops serve: error: --root: {args.root}: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"fedops serve: error: --{exc.key}: {exc.message}", file=sys.stderr)
        return 2
    except (BindError, AuditError) as exc:
        print(f"fedops serve: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "fedops serve: stopped; an open run resumes when the federation is served again",
            file=sys.stderr,
        )
        return 130
    return 0


def run_command(args: argparse.Namespace) -> int:
    """``fedops run submit|list|stop``, on the serve root's queue or through an admin's kit."""
    from fedops.runtime.run_queue import QueueError, SpecError

    if args.run_command == "simulate":
        from fedops.cli.run_simulate import run_simulate_command

        return run_simulate_command(args.config, args.overrides)
    try:
        if args.root is not None:
            return _local(args)
        return _remote(args)
    except (SpecError, QueueError) as exc:
        print(f"fedops run {args.run_command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, SpecError) else 1
    except OSError as exc:
        print(f"fedops run {args.run_command}: error: {exc}", file=sys.stderr)
        return 1


def _read_spec(path: Path) -> str:
    from fedops.runtime.run_queue import SpecError

    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: {exc}") from None


def _local(args: argparse.Namespace) -> int:
    from fedops.coordinator.federation_service import run_list
    from fedops.runtime.run_queue import RunQueue, parse_run_name
    from fedops.tasks.loader import source_digest

    root: Path = args.root
    if args.run_command != "submit" and not (root / RunQueue.FILE).exists():
        print(f"fedops run: error: --root: {root} holds no federation queue", file=sys.stderr)
        return 2
    problem = out_dir_problem("--root", root)  # submit creates the queue there
    if problem:
        print(f"fedops run {args.run_command}: error: {problem}", file=sys.stderr)
        return 2
    queue = RunQueue(root)
    try:
        if args.run_command == "submit":
            spec = _anchored(_read_spec(args.config))
            check_dir = root / "runs" / "(check)"  # parsed only: nothing is written there
            cfg = parse_run_spec(spec, run_dir=check_dir, address="127.0.0.1:0", kit=None)
            task = cfg.task or ""
            digest = source_digest(task)  # the run starts on this code or not at all
            _print(run_list([queue.submit(spec, task=task, by="root", task_digest=digest)]))
        elif args.run_command == "list":
            _print(run_list(queue.runs()))
        else:
            _print(run_list([queue.stop(parse_run_name(args.id), f"root: {args.reason}")]))
    finally:
        queue.close()
    return 0


def _anchored(spec: str) -> str:
    """The run file with a task given as a relative path made absolute: ``fedops serve``
    runs in another directory, and must load the very file checked here."""
    values = dict(load_run_file(spec))
    task = values.get("task")
    if isinstance(task, str) and task.endswith(".py") and not Path(task).is_absolute():
        values["task"] = str(Path(task).resolve())
        return yaml.safe_dump(values, sort_keys=False)
    return spec


def _remote(args: argparse.Namespace) -> int:
    import grpc

    from fedops.consortium.kit import KitError, load_kit
    from fedops.consortium.tls import channel_credentials
    from fedops.v1 import fedops_pb2 as pb
    from fedops.v1 import fedops_pb2_grpc as pb_grpc

    try:
        kit = load_kit(args.kit, ca_fingerprint=args.ca_fingerprint)
    except KitError as exc:
        print(f"fedops run: error: --kit: {exc}", file=sys.stderr)
        return 2
    with grpc.secure_channel(
        args.coordinator or kit.coordinator_address, channel_credentials(kit)
    ) as channel:
        stub = pb_grpc.FederationStub(channel)
        try:
            if args.run_command == "submit":
                request = pb.RunSubmit(config_yaml=_read_spec(args.config), reason=args.reason)
                reply = stub.Submit(request, timeout=30)
            elif args.run_command == "list":
                reply = stub.List(pb.AdminRequest(reason=args.reason), timeout=30)
            else:
                reply = stub.Stop(pb.RunStopRequest(id=args.id, reason=args.reason), timeout=30)
        except grpc.RpcError as exc:
            print(f"fedops run: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    _print(reply)
    return 0


def _print(reply: Any) -> None:
    if reply.message:
        print(reply.message)
    for run in reply.runs:
        extra = f"  ({run.message})" if run.message else ""
        print(
            f"{run.id}  {run.state:<9}  task={run.task or '-'}  by={run.submitted_by}  "
            f"at={run.submitted_at}  run_id={run.run_id or '-'}{extra}"
        )
