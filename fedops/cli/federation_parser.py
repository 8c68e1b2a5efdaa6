"""Flags of a standing federation: ``fedops serve`` and ``fedops run submit|list|stop``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedops.cli.flags import ca_fingerprint_flag


def federation_parsers(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="a standing federation: one coordinator that serves queued runs one at a time "
        "(README: Running a standing federation)",
    )
    serve.add_argument(
        "--root",
        type=Path,
        required=True,
        help="the federation's directory: its run queue, its audit log and runs/<id>/ per run",
    )
    serve.add_argument(
        "--address",
        help="HOST:PORT to listen on (default: the kit's address, else 127.0.0.1:8765)",
    )
    serve.add_argument("--kit", type=Path, help="the coordinator's consortium startup kit (mTLS)")
    ca_fingerprint_flag(serve)
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext gRPC on a non-loopback address (dangerous)",
    )
    serve.add_argument("--max-workers", type=int, default=64, help="gRPC handler threads")
    serve.add_argument(
        "--allowed-task",
        action="append",
        default=[],
        metavar="SHA256",
        help="run only task code with this digest (repeatable; built-in tasks always): a run "
        "naming another is refused at submit and at start (default: any task on this host)",
    )
    serve.add_argument(
        "--max-runs",
        type=_positive,
        metavar="N",
        help="exit (status 0) once N runs have ended (scripts, CI); default: serve for good",
    )
    run = sub.add_parser("run", help="submit, list or stop a standing federation's runs")
    verbs = run.add_subparsers(dest="run_command", required=True, metavar="VERB")
    submit = verbs.add_parser(
        "submit", help="queue a run: RUN.yaml holds the coordinator's flags as keys"
    )
    submit.add_argument("config", type=Path, metavar="RUN.yaml")
    _where(submit)
    _where(verbs.add_parser("list", help="the federation's runs, oldest first"))
    simulate = verbs.add_parser(
        "simulate",
        help="simulate RUN.yaml as the federation would run it (its settings as fedops "
        "simulate's keys), with more Hydra overrides after it, e.g. simulation.num_clients=3",
    )
    simulate.add_argument("config", type=Path, metavar="RUN.yaml")
    simulate.add_argument("overrides", nargs=argparse.REMAINDER, metavar="OVERRIDE")
    stop = verbs.add_parser(
        "stop", help="cancel a queued run, or stop a running one after its current round"
    )
    stop.add_argument("id", metavar="RUN", help="the run's id as listed (run-0001 ...)")
    _where(stop)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _where(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--root",
        type=Path,
        help="the serve root, written directly: whoever may write it administers the federation",
    )
    where.add_argument(
        "--kit",
        type=Path,
        help="an admin's (or, to list, an observer's) consortium kit: call the coordinator",
    )
    p.add_argument("--coordinator", help="HOST:PORT (default: the kit's coordinator address)")
    ca_fingerprint_flag(p)
    p.add_argument("--reason", default="", help="recorded in the federation's audit log")
