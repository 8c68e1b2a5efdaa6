"""Flags of the tool commands: ``report``, ``audit``, ``consortium`` and ``admin``.

They read and write files (and, for ``admin``, call a running coordinator);
none of them trains, so they live apart from the coordinator's and the
client's long flag lists in :mod:`fedops.cli.parser`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tool_parsers(sub: Any) -> None:
    """Add the tool commands to ``sub``."""
    _report_parsers(sub)
    _consortium_parser(sub)
    _admin_parser(sub)


def _report_parsers(sub: Any) -> None:
    report = sub.add_parser(
        "report", help="render a run directory as one self-contained HTML page with plots"
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/report.html")
    audit = sub.add_parser("audit", help="verify signed audit logs; export a compliance report")
    verbs = audit.add_subparsers(dest="audit_command", required=True, metavar="VERB")
    verify = verbs.add_parser(
        "verify",
        help="check a party's hash chain and signatures; exit 1 naming the first bad entry",
    )
    verify.add_argument("path", type=Path, metavar="PATH", help="audit.jsonl or its run directory")
    trust = verify.add_mutually_exclusive_group()
    trust.add_argument(
        "--public-key",
        type=Path,
        default=None,
        help="the party's public key (PEM); default: trust the key in the log's first entry",
    )
    trust.add_argument(
        "--ca",
        type=Path,
        default=None,
        metavar="CA_PEM",
        help="the consortium CA's certificate (ca.pem): the log's key must be the one the CA "
        "certified (audit_key.crt beside the log); prints the certified party",
    )
    export = verbs.add_parser(
        "export",
        help="cross-check the coordinator's and sites' logs; write compliance.json and .html",
    )
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    export.add_argument("--out", type=Path, default=None, help="default: RUN_DIR")
    export.add_argument(
        "--site-log",
        type=Path,
        action="append",
        default=[],
        help="a site's audit.jsonl (repeatable; logs under RUN_DIR are found on their own)",
    )
    export.add_argument(
        "--ca",
        type=Path,
        default=None,
        metavar="CA_PEM",
        help="the consortium CA's certificate: pin every log to the key the CA certified for "
        "its party (coordinator or site) and name the parties in the report",
    )


def _consortium_parser(sub: Any) -> None:
    consortium = sub.add_parser(
        "consortium", help="provision a consortium: a CA and one mTLS startup kit per party"
    )
    verbs = consortium.add_subparsers(dest="consortium_command", required=True, metavar="VERB")
    init = verbs.add_parser("init", help="create the CA and every party's kit from a spec")
    init.add_argument("file", type=Path, metavar="FILE", help="consortium.yaml")
    init.add_argument("--out", type=Path, required=True, help="where ca/ and kits/ go")
    add = verbs.add_parser("add-site", help="issue a kit for a new site")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--out", type=Path, required=True, help="the consortium folder (with ca/)")
    revoke = verbs.add_parser(
        "revoke", help="revoke a party's certificate: the coordinator refuses it at once"
    )
    revoke.add_argument("name", metavar="NAME")
    revoke.add_argument("--out", type=Path, required=True, help="the consortium folder (with ca/)")


def _admin_parser(sub: Any) -> None:
    admin = sub.add_parser(
        "admin", help="start, stop or query a running consortium coordinator (admin kit)"
    )
    admin.add_argument("verb", choices=("status", "start", "stop"))
    admin.add_argument(
        "--kit", type=Path, required=True, help="an admin's kit (observers: status only)"
    )
    admin.add_argument(
        "--coordinator", default=None, help="HOST:PORT (default: the kit's coordinator)"
    )
    admin.add_argument("--reason", default="", help="recorded in the coordinator's audit log")
