"""The ``fedops`` command: parse (:mod:`fedops.cli.parser`), configure, run.

Flags map one-to-one onto the config schemas in :mod:`fedops.config`; a bad
value exits with status 2 and a message naming the flag.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from fedops.cli.configs import config_of
from fedops.cli.parser import build_parser
from fedops.config import ConfigError, flag_of
from fedops.reporting.out_dirs import out_dir_problem
from fedops.tasks.builtin import TaskError

__all__ = ["build_parser", "main"]


def _run_tool(args: argparse.Namespace) -> int:
    """Commands that read a run directory: no config schema, no training."""
    if args.command == "report":
        from fedops.reporting.report import report_command

        return report_command(args.run_dir, args.out)
    if args.command == "admin":
        from fedops.coordinator.admin import admin_command

        return admin_command(
            args.verb, args.kit, args.coordinator, args.reason, args.ca_fingerprint, args.run_id
        )
    if args.command == "consortium":
        from fedops.consortium import commands

        verb = args.consortium_command
        if verb == "init":
            return commands.init_command(args.file, args.out, demo_keys=args.demo_keys)
        if verb == "add-site":
            return commands.add_site_command(args.out, args.name, demo_keys=args.demo_keys)
        if verb == "request":
            return commands.request_command(args.name, args.role, args.out, args.consortium)
        if verb == "sign":
            return commands.sign_command(args.csrs, args.ca, args.out)
        if verb == "assemble":
            return commands.assemble_command(args.keys, args.signed, args.ca_fingerprint)
        if verb == "crl":
            return commands.crl_command(args.out, args.days)
        return commands.revoke_command(args.out, args.name)
    from fedops.reporting.audit.audit_commands import audit_export_command, audit_verify_command
    from fedops.runtime.audit.digest_command import audit_digest_command
    from fedops.runtime.audit.model_files import check_model_files

    if args.audit_command == "digest":
        return audit_digest_command(args.path, args.expect)
    if args.audit_command == "verify":
        return audit_verify_command(
            args.path, args.public_key, args.ca, args.allow_missing_head, args.crl
        )
    return audit_export_command(
        args.run_dir,
        args.out,
        list(args.site_log),
        args.ca,
        args.allow_missing_head,
        args.crl,
        model_files=check_model_files,
    )


@contextlib.contextmanager
def _stop_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (``docker stop``, systemd, ``kill``) ends a run like Ctrl-C: the rounds
    committed so far stay in the run directory and ``summary.json`` says so. The caller's
    own handler comes back afterwards (``main`` may run inside another program)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # (an in-process caller on another thread keeps its own handling)
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["simulate"], ["coordinator"], ["client"], ["serve"]):
        with _stop_as_ctrl_c():
            return _main(argv)
    return _main(argv)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["simulate"]:
        from fedops.config.hydra_app import simulate_main

        try:
            return simulate_main(argv[1:])
        except KeyboardInterrupt:
            print(
                "fedops simulate: interrupted; the rounds completed so far are saved in the "
                "run directory (summary.json says status: interrupted)",
                file=sys.stderr,
            )
            return 130
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # Opacus calls basicConfig when imported; the CLI owns the process's logs
    )
    if args.command in ("report", "audit", "consortium", "admin"):
        return _run_tool(args)
    if args.command in ("serve", "run"):
        from fedops.cli.federation_commands import run_command, serve_command

        return serve_command(args) if args.command == "serve" else run_command(args)
    try:
        cfg = config_of(args)
    except ConfigError as exc:
        parser.error(f"{flag_of(exc.key)}: {exc.message}")
    problem = out_dir_problem("--run-dir", cfg.run_dir) if cfg.run_dir is not None else None
    if problem:  # before anything is written: no traceback, nothing left behind
        print(f"fedops {args.command}: error: {problem}", file=sys.stderr)
        return 2
    try:
        return _dispatch(args.command, cfg, args.ca_fingerprint)
    except TaskError as exc:
        print(f"fedops: error: --task: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedops: interrupted; state so far is saved in the run directory", file=sys.stderr)
        return 130


def _dispatch(command: str, cfg: Any, ca_fingerprint: str | None = None) -> int:
    if command == "coordinator":
        from fedops.coordinator.app import BindError, run_coordinator
        from fedops.runtime.audit.log_file import AuditError
        from fedops.runtime.driver import RunAborted
        from fedops.runtime.store import StoreError

        try:
            summary = run_coordinator(cfg, ca_fingerprint=ca_fingerprint)
        except ConfigError as exc:  # checked against the task at start (e.g. its classes)
            print(f"fedops coordinator: error: {exc.key}: {exc.message}", file=sys.stderr)
            return 2
        except (BindError, RunAborted, TimeoutError, StoreError, AuditError) as exc:
            print(f"fedops coordinator: error: {exc}", file=sys.stderr)
            return 1
        print(f"run {summary['run_id']} {summary['status']}: {cfg.run_dir}/summary.json")
        for key in ("privacy", "stop_reason"):
            if key in summary:
                print(f"{key.replace('_', ' ')}: {summary[key]}")
        return 0
    if command == "client":
        return _run_client(cfg, ca_fingerprint)
    raise AssertionError(f"unknown command {command}")


def _run_client(cfg: Any, ca_fingerprint: str | None = None) -> int:
    from fedops.client.agent import site_policy
    from fedops.client.flower_startup import flower_site
    from fedops.client.site_build import task_site
    from fedops.consortium.kit import KitError, load_kit
    from fedops.tasks import load_task
    from fedops.tasks.flower_app import FlowerAppError
    from fedops.tasks.loader import TaskNotAllowed

    try:
        kit = load_kit(cfg.kit, ca_fingerprint=ca_fingerprint) if cfg.kit is not None else None
        if kit is not None and kit.role != "site":
            raise KitError(f"{cfg.kit}: a {kit.role}'s kit; a client needs a site's kit")
        policy = site_policy(cfg, kit)
    except (KitError, ValueError) as exc:
        print(f"fedops client: error: --kit: {exc}", file=sys.stderr)
        return 2
    if policy.max_epsilon is not None and cfg.run_dir is None:  # a usage error, said now
        source = "--max-epsilon" if cfg.max_epsilon is not None else "the kit's max_epsilon"
        print(
            f"fedops client: error: {source} {policy.max_epsilon:g} needs --run-dir: the "
            "site's privacy ledger is kept there, and without it a restarted agent would "
            "count its ε from zero",
            file=sys.stderr,
        )
        return 2
    if policy.require_secagg and cfg.run_dir is None:  # a usage error, said now
        source = (
            "--require-secagg"
            if cfg.require_secagg
            else "secure aggregation, which this site requires (a SecAgg floor or its kit),"
        )
        print(
            f"fedops client: error: {source} needs --run-dir: the site keeps there the rounds "
            "it dealt its secrets in (secagg_rounds.json), and without it a restarted agent "
            "could be made to run a round's secure aggregation twice",
            file=sys.stderr,
        )
        return 2
    if cfg.standing:  # README: Running a standing federation
        return _run_standing(cfg, kit, policy)
    try:  # checked against the site's allowed digests before any of its code runs
        if cfg.flower_app is not None:  # a Flower app as the site (README: Coming from Flower)
            return _run_agent(cfg, flower_site(cfg, policy), kit, policy)
        task = load_task(cfg.task, allowed=policy.allowed_tasks, **cfg.builtin_options())
    except TaskNotAllowed as exc:
        _refuse_task(cfg, kit, str(exc))
        print(f"fedops client: error: {exc}", file=sys.stderr)
        return 1
    except FlowerAppError as exc:
        print(f"fedops client: error: --flower-app: {exc}", file=sys.stderr)
        return 2
    return _run_agent(cfg, task_site(cfg, task, policy), kit, policy)


def _run_standing(cfg: Any, kit: Any, policy: Any) -> int:
    from fedops.client.agent import CoordinatorRefused, CoordinatorUnreachable
    from fedops.client.site_build import task_site
    from fedops.client.standing import StandingSite

    try:
        return StandingSite(cfg, policy, task_site, kit=kit).run()
    except TaskError as exc:
        print(f"fedops client: error: --task: {exc}", file=sys.stderr)
        return 2
    except (CoordinatorUnreachable, CoordinatorRefused) as exc:
        print(f"fedops client: error: {exc}", file=sys.stderr)
        return 1


def _run_agent(cfg: Any, site: Any, kit: Any, policy: Any) -> int:
    from fedops.client.agent import Agent, CoordinatorRefused, CoordinatorUnreachable, RunOver
    from fedops.tasks.site_policy import PolicyViolation

    try:
        return Agent(cfg, site, kit=kit, policy=policy).run()
    except RunOver as exc:
        print(
            f"fedops client: error: this agent joined one run and the coordinator now serves "
            f"another ({exc}); start it again to join that run (or run it with --standing)",
            file=sys.stderr,
        )
        return 1
    except (CoordinatorUnreachable, CoordinatorRefused, PolicyViolation) as exc:
        print(f"fedops client: error: {exc}", file=sys.stderr)
        return 1


def _refuse_task(cfg: Any, kit: Any, reason: str) -> None:
    """The refusal in the site's signed audit log (with a --run-dir), as the agent would."""
    from fedops.client.agent import site_name
    from fedops.client.site_trail import SiteTrail

    if cfg.run_dir is None:
        return
    signer = kit.signing_identity() if kit is not None else None
    trail = SiteTrail(cfg.run_dir, cfg.site, site_name(cfg, kit), identity=signer)
    try:
        trail.audit("policy_refused", reason=reason, task=cfg.task)
    finally:
        trail.close()


if __name__ == "__main__":
    sys.exit(main())
