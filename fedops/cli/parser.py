"""The ``fedops`` command line: one sub-parser per command, and ``fedops coordinator``'s flags.

Kept apart from :mod:`fedops.cli` (which turns parsed flags into configs and
runs commands) so each file has one job; flag names map one-to-one onto the
config schemas in :mod:`fedops.config`, whose fields give every default
(:func:`fedops.cli.flags.config_defaults`). The client's flags are in
:mod:`fedops.cli.client_parser`, the tools' in :mod:`fedops.cli.tool_parsers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedops import __version__
from fedops.cli.client_parser import client_parser
from fedops.cli.federation_parser import federation_parsers
from fedops.cli.flags import ca_fingerprint_flag, config_defaults, schema_flags, task_flags
from fedops.cli.help import DefaultsShown, all_parsers
from fedops.cli.tool_parsers import tool_parsers
from fedops.config import CoordinatorConfig


def _round_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, help="rounds to run")
    p.add_argument(
        "--min-clients",
        type=int,
        help="clients required before a round starts",
    )
    p.add_argument(
        "--clients-per-round",
        type=int,
        help="clients sampled per round (default: all available)",
    )
    schema_flags(p, "strategy", "aggregation (strategy.* in fedops simulate)")
    p.add_argument("--seed", type=int, help="seed of sampling, init and shuffling")
    p.add_argument(
        "--run-dir",
        type=Path,
        help="where state, checkpoints and metrics go; an existing run there is resumed",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedops", description="Federated learning with privacy built in."
    )
    parser.add_argument("--version", action="version", version=f"fedops {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _coordinator_parser(sub)
    client_parser(sub)
    _simulate_parser(sub)
    federation_parsers(sub)
    tool_parsers(sub)
    for each in all_parsers(parser):
        each.formatter_class = DefaultsShown
    return parser


def _coordinator_parser(sub: Any) -> None:
    coord = sub.add_parser("coordinator", help="serve a federated run over gRPC")
    coord.add_argument(
        "--address",
        help="HOST:PORT to listen on (default: the kit's address, else 127.0.0.1:8765)",
    )
    coord.add_argument(
        "--kit",
        type=Path,
        help="the coordinator's consortium startup kit: serve mTLS, admit only the "
        "consortium's sites (see `fedops consortium init`)",
    )
    ca_fingerprint_flag(coord)
    coord.add_argument(
        "--wait-for-start",
        action="store_true",
        help="with --kit: hold round 1 until an admin runs `fedops admin start`",
    )
    task_flags(coord, required=False)
    _round_flags(coord)
    schema_flags(
        coord,
        "client",
        "the run's local training, sent to every site with each task (client.* in fedops "
        "simulate; a site caps it: fedops client --max-epochs ...)",
    )
    _serving_flags(coord)
    _feature_flags(coord)
    config_defaults(coord, CoordinatorConfig, skip=("address",))


def _serving_flags(coord: argparse.ArgumentParser) -> None:
    coord.add_argument(
        "--round-timeout",
        type=float,
        help="seconds each phase waits for results",
    )
    coord.add_argument(
        "--join-timeout",
        type=float,
        help="seconds to wait for --min-clients",
    )
    coord.add_argument(
        "--liveness-timeout",
        type=float,
        help="seconds of silence after which a client counts as dropped",
    )
    coord.add_argument(
        "--min-fit-results",
        type=int,
        help="abort a round (model unchanged, recorded with the reason) when fewer updates "
        "are accepted, e.g. after clients crash mid-round",
    )
    coord.add_argument(
        "--heartbeat-interval",
        type=float,
        help="seconds between client heartbeats, told to clients at registration; raise it "
        "with --liveness-timeout for thousands of clients",
    )
    coord.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext gRPC on a non-loopback address (dangerous)",
    )
    coord.add_argument(
        "--max-nodes",
        type=int,
        help="live client nodes at most; a new site registering past it is refused "
        "(bounds memory under registration floods)",
    )
    coord.add_argument(
        "--keep-checkpoints",
        type=int,
        help="newest round checkpoints kept on disk (round 0, the initial model, is always kept)",
    )
    coord.add_argument("--max-workers", type=int, help="gRPC handler threads")


def _feature_flags(coord: argparse.ArgumentParser) -> None:
    """The ``secagg``, ``privacy`` and ``monitoring`` sections' flags, and the metrics
    endpoint's and MLflow's beside monitoring."""
    schema_flags(coord, "secagg", "secure aggregation (SecAgg+)")
    schema_flags(coord, "privacy", "differential privacy (central DP-FedAvg)")
    watch = schema_flags(coord, "monitoring", "monitoring (drift, fairness, metrics)")
    watch.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port (0: any free port; default: off)",
    )
    watch.add_argument(
        "--mlflow-uri",
        help="also log every round to MLflow at this tracking URI, e.g. sqlite:///mlflow.db "
        "(needs fedops[mlflow])",
    )
    watch.add_argument("--mlflow-experiment", help="the MLflow experiment the run is logged under")
    watch.add_argument(
        "--metrics-address",
        help="address of the metrics endpoint",
    )


def _simulate_parser(sub: Any) -> None:
    # Parsed by Hydra (fedops.config.hydra_app); listed here for `fedops --help`.
    sub.add_parser(
        "simulate",
        help="simulate a federation in this process (Hydra overrides, e.g. rounds=20 "
        "simulation.num_clients=1000 strategy=fedprox; --help for the config)",
        add_help=False,
    )
