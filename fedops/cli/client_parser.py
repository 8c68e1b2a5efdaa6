"""``fedops client``'s flags: a site's connection, identity and policy.

A site's local training is the run's (``fedops coordinator --epochs`` ...), sent with
every task; the site caps it (``--max-epochs`` ...). The training flags a site once had
are kept as names only, to say so (:class:`_Moved`) instead of argparse's bare
"unrecognized arguments".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedops.cli.flags import ca_fingerprint_flag, config_defaults, task_flags
from fedops.config import SECTIONS, ClientConfig, flag_of, flagged


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


def client_parser(sub: Any) -> None:
    client = sub.add_parser("client", help="run a site's agent against a coordinator")
    client.add_argument(
        "--coordinator",
        help="HOST:PORT to dial (default: the kit's coordinator, else 127.0.0.1:8765)",
    )
    client.add_argument(
        "--kit",
        type=Path,
        help="this site's consortium startup kit: mTLS identity, coordinator address, policy",
    )
    ca_fingerprint_flag(client)
    client.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC, no certificates: local development only",
    )
    task_flags(client, required=False, repeatable=True)  # or --flower-app
    client.add_argument(
        "--standing",
        action="store_true",
        help="stay up across a standing federation's runs (fedops serve), joining each run "
        "this site's policy accepts; needs --run-dir (README: Running a standing federation)",
    )
    client.add_argument(
        "--max-runs",
        type=int,
        metavar="N",
        help="with --standing: exit (status 0) after taking part in or declining N runs",
    )
    _flower_flags(client)
    client.add_argument("--site", type=int, required=True, help="this site's index (0-based)")
    client.add_argument("--num-sites", type=int, required=True, help="number of sites")
    client.add_argument("--site-name", help="name shown to the coordinator")
    client.add_argument("--run-dir", type=Path, help="where the site's journal goes")
    _retry_flags(client)
    _sharing_flags(client)
    _identity_flags(client)
    _policy_flags(client)
    _moved_flags(client)
    config_defaults(client, ClientConfig, skip=("coordinator", "task"))  # no task: --flower-app?


def _flower_flags(client: argparse.ArgumentParser) -> None:
    """A Flower app run unchanged as this site (README: "Coming from Flower")."""
    client.add_argument(
        "--flower-app",
        metavar="MODULE:ATTR",
        help="run this Flower ClientApp, client_fn or NumPyClient factory as the site "
        "instead of a --task (needs fedops[flower]; imported from PYTHONPATH or this directory)",
    )
    client.add_argument(
        "--flower-initial",
        metavar="MODULE:ATTR",
        help="with a Message API --flower-app: a callable building the model's first "
        "parameters (a torch module, state_dict, ArrayRecord or list of arrays)",
    )


def _retry_flags(client: argparse.ArgumentParser) -> None:
    client.add_argument(
        "--max-retries",
        type=int,
        help="consecutive failed connection attempts before giving up",
    )
    client.add_argument(
        "--retry-for",
        type=_duration,
        metavar="DURATION",
        help="keep retrying an unreachable coordinator this long instead (e.g. 90s, 30m, 2h): "
        "an agent that outlives a maintenance window",
    )


def _sharing_flags(client: argparse.ArgumentParser) -> None:
    """What the site shows the coordinator beyond its (noised, masked) update."""
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
        metavar="K",
        help="site policy: no monitoring bin reports 1..K-1 of this site's rows (small bins "
        "are merged; fairness groups under K left out; default: the kit's, else 5)",
    )
    client.add_argument(
        "--monitoring-max-cells",
        type=int,
        metavar="C",
        help="site policy: refuse a monitoring request for more than C bins in all "
        "(default: the kit's, else 20000)",
    )
    client.add_argument(
        "--max-epsilon",
        type=float,
        help="site policy: train only with local DP, and only while this site's ε stays <= this",
    )
    client.add_argument(
        "--max-run-epsilon",
        type=float,
        help="site policy: the most ε one run may spend at this site (with --standing, "
        "--max-epsilon bounds the sum over all runs); trains only with local DP",
    )
    client.add_argument(
        "--dp-delta",
        type=float,
        help="site policy: the δ this site accounts its local DP at; a coordinator may ask "
        "for a smaller one, never a larger (default: the kit's max_delta, else 1e-5)",
    )
    client.add_argument(
        "--dp-public-records",
        type=int,
        metavar="N",
        help="site policy: plan and account local DP with N records instead of the true "
        "count, which then stays hidden (sample rate batch/N, epochs*N/batch steps)",
    )


def _identity_flags(client: argparse.ArgumentParser) -> None:
    client.add_argument(
        "--identity-key",
        type=Path,
        help="Ed25519 private key (PEM) this site signs its SecAgg keys with",
    )
    client.add_argument(
        "--trusted-keys",
        type=Path,
        help="directory of NAME.pub (PEM) keys: refuse SecAgg keys not signed by those sites",
    )


def _policy_flags(client: argparse.ArgumentParser) -> None:
    policy = client.add_argument_group("site policy (enforced here, whatever the coordinator asks)")
    policy.add_argument("--max-rounds", type=int, help="take part in rounds 1..N only")
    policy.add_argument(
        "--allowed-task",
        action="append",
        metavar="SHA256",
        help="run only task code with this digest (repeatable): `sha256sum task.py` for a "
        "file; the task_digest of the coordinator's summary.json and run_started audit entry",
    )
    for flag, kind, text in (
        ("--max-epochs", int, "decline a training task asking more local epochs than this"),
        ("--max-batch-size", int, "decline a training task asking a larger batch than this"),
        ("--max-lr", float, "decline a training task asking a larger learning rate than this"),
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
        policy.add_argument(flag, type=kind, help=text)
    policy.add_argument(
        "--consent-file",
        type=Path,
        help='JSON {"consent": true}; set it to false to withdraw: the site declines and leaves',
    )


class _Moved(argparse.Action):
    """A training flag a site no longer takes: the parse stops with where it went."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        key = self.dest.removeprefix("moved.")
        cap = f"--max-{key.replace('_', '-')}"
        capped = f"; a site caps it with {cap}" if key in ("epochs", "batch_size", "lr") else ""
        parser.error(
            f"{option} moved to the run: the coordinator sends every site the run's training "
            f"settings with each task, so set it there (fedops coordinator {option}, or "
            f"client.{key} in a simulation's config){capped}"
        )


def _moved_flags(client: argparse.ArgumentParser) -> None:
    """The run's training flags (the ``client.*`` section), hidden here: each one names
    the coordinator's flag of the same name and this site's cap on it."""
    for spec in flagged(SECTIONS["client"]):
        client.add_argument(
            flag_of(f"client.{spec.name}"),
            dest=f"moved.{spec.name}",
            nargs="?",
            action=_Moved,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
