"""The ``fedops`` command line's flags: one sub-parser per command, help texts included.

Kept apart from :mod:`fedops.cli` (which turns parsed flags into configs and
runs commands) so each file has one job; flag names map one-to-one onto the
config schemas in :mod:`fedops.config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from fedops import __version__
from fedops.cli.help import DefaultsShown, all_parsers
from fedops.cli.tool_parsers import tool_parsers
from fedops.config import SECAGG_CLIP, SECAGG_MODES, SECTIONS, flag_of
from fedops.core.strategies import STRATEGIES
from fedops.tasks.loader import BUILTIN_TASKS


def _task_flags(p: argparse.ArgumentParser, *, required: bool, default: str | None) -> None:
    p.add_argument(
        "--task",
        required=required,
        default=default,
        help=f"built-in ({', '.join(BUILTIN_TASKS)}), path/to/task.py or pkg.module",
    )
    p.add_argument(
        "--partition",
        choices=("iid", "dirichlet"),
        default="dirichlet",
        help="how a built-in task splits data across sites (default: dirichlet)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="Dirichlet concentration; smaller is more skewed (default: 0.5)",
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data split")


def _round_flags(p: argparse.ArgumentParser, *, min_clients: int, run_dir: str | None) -> None:
    p.add_argument("--rounds", type=int, default=10, help="rounds to run (default: 10)")
    p.add_argument(
        "--min-clients",
        type=int,
        default=min_clients,
        help=f"clients required before a round starts (default: {min_clients})",
    )
    p.add_argument(
        "--clients-per-round",
        type=int,
        default=None,
        help="clients sampled per round (default: all available)",
    )
    schema_flags(
        p,
        "strategy",
        "aggregation (strategy.* in fedops simulate)",
        choices={"name": sorted(STRATEGIES)},
    )
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, init and shuffling")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path(run_dir) if run_dir else None,
        help="where state, checkpoints and metrics go; an existing run there is resumed "
        f"(default: {run_dir or 'a new runs/simulate/DATE-TIME'})",
    )


def schema_flags(
    p: argparse.ArgumentParser,
    prefix: str,
    title: str,
    *,
    choices: dict[str, list[str]] | None = None,
) -> None:
    """One flag per field of the schema section ``prefix`` (:mod:`fedops.runtime.schema`):
    its name, type, default and help come from the field, so flags and Hydra keys agree.
    The value lands at ``args.<prefix>.<field>``."""
    section = SECTIONS[prefix]
    group = p.add_argument_group(title)
    hints = typing.get_type_hints(section)
    for spec in dataclasses.fields(section):
        kind = next(t for t in typing.get_args(hints[spec.name]) or (hints[spec.name],))
        allowed = (choices or {}).get(spec.name, spec.metadata.get("choices"))
        group.add_argument(
            flag_of(f"{prefix}.{spec.name}"),
            dest=f"{prefix}.{spec.name}",
            type=kind,
            default=spec.default,
            choices=allowed,
            metavar=None if allowed else spec.name.upper(),
            help=spec.metadata["help"],
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedops", description="Federated learning with privacy built in."
    )
    parser.add_argument("--version", action="version", version=f"fedops {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _coordinator_parser(sub)
    _client_parser(sub)
    _simulate_parser(sub)
    tool_parsers(sub)
    for each in all_parsers(parser):
        each.formatter_class = DefaultsShown
    return parser


def _coordinator_parser(sub: Any) -> None:
    coord = sub.add_parser("coordinator", help="serve a federated run over gRPC")
    coord.add_argument(
        "--address",
        default=None,
        help="HOST:PORT to listen on (default: the kit's address, else 127.0.0.1:8765)",
    )
    coord.add_argument(
        "--kit",
        type=Path,
        default=None,
        help="the coordinator's consortium startup kit: serve mTLS, admit only the "
        "consortium's sites (see `fedops consortium init`)",
    )
    _ca_fingerprint_flag(coord)
    coord.add_argument(
        "--wait-for-start",
        action="store_true",
        help="with --kit: hold round 1 until an admin runs `fedops admin start`",
    )
    _task_flags(coord, required=False, default=None)
    _round_flags(coord, min_clients=2, run_dir="runs/latest")
    coord.add_argument(
        "--round-timeout",
        type=float,
        default=120.0,
        help="seconds each phase waits for results (default: 120)",
    )
    coord.add_argument(
        "--join-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for --min-clients (default: 600)",
    )
    coord.add_argument(
        "--liveness-timeout",
        type=float,
        default=10.0,
        help="seconds of silence after which a client counts as dropped (default: 10)",
    )
    coord.add_argument(
        "--min-fit-results",
        type=int,
        default=1,
        help="abort a round (model unchanged, recorded with the reason) when fewer updates "
        "are accepted, e.g. after clients crash mid-round (default: 1)",
    )
    coord.add_argument(
        "--heartbeat-interval",
        type=float,
        default=2.0,
        help="seconds between client heartbeats, told to clients at registration; raise it "
        "with --liveness-timeout for thousands of clients (default: 2)",
    )
    coord.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext gRPC on a non-loopback address (dangerous)",
    )
    coord.add_argument(
        "--max-nodes",
        type=int,
        default=10_000,
        help="live client nodes at most; a new site registering past it is refused "
        "(bounds memory under registration floods; default: 10000)",
    )
    coord.add_argument(
        "--keep-checkpoints",
        type=int,
        default=3,
        help="newest round checkpoints kept on disk (round 0, the initial model, is always kept)",
    )
    coord.add_argument("--max-workers", type=int, default=64, help="gRPC handler threads")
    secure = coord.add_argument_group("secure aggregation (SecAgg+)")
    secure.add_argument(
        "--secagg",
        choices=SECAGG_MODES,
        default="none",
        help="secaggplus: the coordinator only ever sees the sum of the updates",
    )
    secure.add_argument(
        "--secagg-k", type=int, default=None, help="neighbours per client (default: 2*log2(n))"
    )
    secure.add_argument(
        "--secagg-threshold",
        type=int,
        default=None,
        help="shares needed to unmask a client (default: k/2 + 1)",
    )
    private = coord.add_argument_group("differential privacy (central DP-FedAvg)")
    private.add_argument(
        "--privacy",
        choices=("none", "central", "distributed", "local"),
        default="none",
        help="central: DP-FedAvg at the coordinator; distributed: clients add the noise under "
        "SecAgg+; local: DP-SGD (Opacus) at every site",
    )
    private.add_argument(
        "--noise-multiplier",
        default="1.0",
        help="sigma: noise std / clip norm; 'auto' derives it from --target-epsilon (default: 1.0)",
    )
    private.add_argument(
        "--clip-norm", type=float, default=1.0, help="L2 bound of each update (default: 1.0)"
    )
    private.add_argument("--delta", type=float, default=1e-5, help="DP delta (default: 1e-5)")
    private.add_argument(
        "--target-epsilon",
        type=float,
        default=None,
        help="stop the run before a round would spend more epsilon",
    )
    private.add_argument(
        "--accountant",
        choices=("pld", "rdp"),
        default="pld",
        help="the headline accountant (dp_accounting); the other is reported beside it "
        "(default: pld; fixed sampling is accounted with rdp)",
    )
    private.add_argument(
        "--sampling",
        choices=("poisson", "fixed"),
        default="poisson",
        help="central DP: each client joins a round with probability q (poisson, the "
        "default) or exactly --clients-per-round of them join (fixed, replace-one adjacency)",
    )
    private.add_argument(
        "--publish-participants",
        action="store_true",
        help="central DP: account as if who took part were public (no amplification by sampling)",
    )
    private.add_argument(
        "--colluders",
        type=int,
        default=0,
        help="distributed DP: sites that may pool their noise with the coordinator (default: 0)",
    )
    private.add_argument(
        "--release-site-metrics",
        action="store_true",
        help="under DP, record the sites' train loss in the metrics (outside the DP "
        "guarantee; off by default)",
    )
    private.add_argument(
        "--adaptive-clipping",
        action="store_true",
        help="let the clip norm track the median update norm (Andrew et al. 2021)",
    )
    _monitoring_flags(coord)
    secure.add_argument(
        "--secagg-clip",
        type=float,
        default=SECAGG_CLIP,
        help=f"clip each update coordinate to [-c, c] before quantizing (default: {SECAGG_CLIP})",
    )


def _monitoring_flags(coord: argparse.ArgumentParser) -> None:
    watch = coord.add_argument_group("monitoring (drift, fairness, metrics)")
    watch.add_argument(
        "--monitoring",
        choices=("auto", "default", "none"),
        default="auto",
        help="sites report drift and per-group confusion counts with every evaluation; auto "
        "(the default): on without DP, off under DP, whose guarantee does not cover them",
    )
    watch.add_argument(
        "--positive-label",
        type=int,
        default=1,
        help="the favourable class in fairness statistics (default: 1)",
    )
    watch.add_argument(
        "--psi-alert", type=float, default=0.25, help="PSI above this alerts (default: 0.25)"
    )
    watch.add_argument(
        "--js-alert",
        type=float,
        default=0.1,
        help="Jensen-Shannon distance above this alerts (default: 0.1)",
    )
    watch.add_argument(
        "--drift-action",
        choices=("none", "exclude"),
        default="none",
        help="exclude: a site with a drift alert trains no more in this run (default: none)",
    )
    watch.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (0: any free port; default: off)",
    )
    watch.add_argument(
        "--mlflow-uri",
        default=None,
        help="also log every round to MLflow at this tracking URI, e.g. sqlite:///mlflow.db "
        "(needs fedops[mlflow])",
    )
    watch.add_argument("--mlflow-experiment", default="fedops", help="(default: fedops)")
    watch.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        help="address of the metrics endpoint (default: 127.0.0.1)",
    )


def _ca_fingerprint_flag(parser: Any) -> None:
    """``--ca-fingerprint``: the trust root pinned from outside the kit folder.

    A check inside the folder cannot catch a folder replaced whole (new CA,
    manifest re-signed by it); a pin kept in the service's command line can.
    """
    parser.add_argument(
        "--ca-fingerprint",
        default=None,
        metavar="HEX",
        help="with --kit: the consortium CA certificate's sha256 (from the CA's operator, out "
        "of band); a kit from any other CA is refused",
    )


def _duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m`` or ``2h``."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (a number with s, m or h: 90s, 30m, 2h)"
        ) from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return seconds


def _client_parser(sub: Any) -> None:
    client = sub.add_parser("client", help="run a site's agent against a coordinator")
    client.add_argument(
        "--coordinator",
        default=None,
        help="HOST:PORT to dial (default: the kit's coordinator, else 127.0.0.1:8765)",
    )
    client.add_argument(
        "--kit",
        type=Path,
        default=None,
        help="this site's consortium startup kit: mTLS identity, coordinator address, policy",
    )
    _ca_fingerprint_flag(client)
    client.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC, no certificates: local development only",
    )
    _task_flags(client, required=True, default=None)
    client.add_argument("--site", type=int, required=True, help="this site's index (0-based)")
    client.add_argument("--num-sites", type=int, required=True, help="number of sites")
    client.add_argument("--site-name", default="", help="name shown to the coordinator")
    client.add_argument("--run-dir", type=Path, default=None, help="where the site's journal goes")
    client.add_argument(
        "--max-retries",
        type=int,
        default=30,
        help="consecutive failed connection attempts before giving up (default: 30)",
    )
    client.add_argument(
        "--retry-for",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="keep retrying an unreachable coordinator this long instead (e.g. 90s, 30m, 2h): "
        "an agent that outlives a maintenance window",
    )
    client.add_argument(
        "--require-secagg",
        action="store_true",
        help="site policy: decline to train unless the round uses secure aggregation",
    )
    client.add_argument(
        "--share-monitoring",
        action="store_true",
        help="send drift histograms and fairness counts of this site's data even under "
        "--require-secagg or --max-epsilon (they are not noised; off there by default)",
    )
    client.add_argument(
        "--share-evaluation",
        action="store_true",
        help="evaluate the coordinator's model on this site's test rows even under "
        "--max-epsilon or --dp-public-records (the answer shows the test split's size)",
    )
    client.add_argument(
        "--monitoring-min-count",
        type=int,
        default=None,
        metavar="K",
        help="site policy: no monitoring bin reports 1..K-1 of this site's rows (small bins "
        "are merged; fairness groups under K left out; default: the kit's, else 5)",
    )
    client.add_argument(
        "--monitoring-max-cells",
        type=int,
        default=None,
        metavar="C",
        help="site policy: refuse a monitoring request for more than C bins in all "
        "(default: the kit's, else 20000)",
    )
    client.add_argument(
        "--max-epsilon",
        type=float,
        default=None,
        help="site policy: train only with local DP, and only while this site's ε stays <= this",
    )
    client.add_argument(
        "--dp-delta",
        type=float,
        default=None,
        help="site policy: the δ this site accounts its local DP at; a coordinator may ask "
        "for a smaller one, never a larger (default: the kit's max_delta, else 1e-5)",
    )
    client.add_argument(
        "--dp-public-records",
        type=int,
        default=None,
        metavar="N",
        help="site policy: plan and account local DP with N records instead of the true "
        "count, which then stays hidden (sample rate batch/N, epochs*N/batch steps)",
    )
    client.add_argument(
        "--identity-key",
        type=Path,
        default=None,
        help="Ed25519 private key (PEM) this site signs its SecAgg keys with",
    )
    client.add_argument(
        "--trusted-keys",
        type=Path,
        default=None,
        help="directory of NAME.pub (PEM) keys: refuse SecAgg keys not signed by those sites",
    )
    policy = client.add_argument_group("site policy (enforced here, whatever the coordinator asks)")
    policy.add_argument(
        "--max-rounds", type=int, default=None, help="take part in rounds 1..N only"
    )
    policy.add_argument(
        "--allowed-task",
        action="append",
        default=None,
        metavar="SHA256",
        help="run only task code with this digest (repeatable): `sha256sum task.py` for a "
        "file; the task_digest of the coordinator's summary.json and run_started audit entry",
    )
    for flag, kind, text in (
        ("--secagg-min-cohort", int, "fewest sites in a secure-aggregation cohort (default 3)"),
        (
            "--secagg-min-degree",
            int,
            "fewest SecAgg neighbours per site (default min(n-1, 2*ceil(log2 n)))",
        ),
        (
            "--secagg-max-colluders",
            int,
            "colluding sites the SecAgg threshold must withstand: 2t > k + c (default 0)",
        ),
        (
            "--secagg-min-noise-multiplier",
            float,
            "distributed DP: refuse rounds whose summed noise multiplier is below this",
        ),
        ("--secagg-max-l2-clip", float, "distributed DP: refuse a larger L2 clip"),
    ):
        policy.add_argument(flag, type=kind, default=None, help=text)
    policy.add_argument(
        "--consent-file",
        type=Path,
        default=None,
        help='JSON {"consent": true}; set it to false to withdraw: the site declines and leaves',
    )
    schema_flags(client, "client", "local training (client.* in fedops simulate)")


def _simulate_parser(sub: Any) -> None:
    # Parsed by Hydra (fedops.config.hydra_app); listed here for `fedops --help`.
    sub.add_parser(
        "simulate",
        help="simulate a federation in this process (Hydra overrides, e.g. rounds=20 "
        "simulation.num_clients=1000 strategy=fedprox; --help for the config)",
        add_help=False,
    )
