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
    audit = sub.add_parser(
        "audit", help="verify signed audit logs; export a compliance report; digest a model"
    )
    verbs = audit.add_subparsers(dest="audit_command", required=True, metavar="VERB")
    _audit_verify_parser(verbs)
    _audit_export_parser(verbs)
    digest = verbs.add_parser(
        "digest",
        help="print a model file's model digest, as the audit logs record it; with --expect, "
        "exit 1 unless it is that model",
    )
    digest.add_argument(
        "path", type=Path, metavar="MODEL", help="model.safetensors or a round's checkpoint"
    )
    digest.add_argument(
        "--expect", default=None, metavar="DIGEST", help="a digest from an audit log"
    )


def _audit_verify_parser(verbs: Any) -> None:
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
    verify.add_argument(
        "--crl",
        type=Path,
        default=None,
        metavar="CRL_PEM",
        help="with --ca: the CA's current crl.pem; a log signed by a revoked key fails",
    )
    verify.add_argument(
        "--allow-missing-head",
        action="store_true",
        help="accept a log without its audit.head (entries cut off its end would go unnoticed)",
    )


def _audit_export_parser(verbs: Any) -> None:
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
        help="a site's audit.jsonl (repeatable; logs at RUN_DIR/*/audit.jsonl and "
        "RUN_DIR/*/*/audit.jsonl are found on their own)",
    )
    export.add_argument(
        "--ca",
        type=Path,
        default=None,
        metavar="CA_PEM",
        help="the consortium CA's certificate: pin every log to the key the CA certified for "
        "its party (coordinator or site) and name the parties in the report",
    )
    export.add_argument(
        "--crl",
        type=Path,
        default=None,
        metavar="CRL_PEM",
        help="with --ca: the CA's current crl.pem; a log signed by a revoked key fails",
    )
    export.add_argument(
        "--allow-missing-head",
        action="store_true",
        help="accept a log without its audit.head (entries cut off its end would go unnoticed)",
    )


def _consortium_parser(sub: Any) -> None:
    consortium = sub.add_parser(
        "consortium", help="provision a consortium: a CA and one mTLS startup kit per party"
    )
    verbs = consortium.add_subparsers(dest="consortium_command", required=True, metavar="VERB")
    init = verbs.add_parser(
        "init", help="create the CA and the list of who may enrol (--demo-keys: every kit too)"
    )
    init.add_argument("file", type=Path, metavar="FILE", help="consortium.yaml")
    init.add_argument("--out", type=Path, required=True, help="where ca/ (and kits/) go")
    _demo_keys(init)
    add = verbs.add_parser("add-site", help="let a new site enrol (--demo-keys: issue its kit)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--out", type=Path, required=True, help="the consortium folder (with ca/)")
    _demo_keys(add)
    req = verbs.add_parser(
        "request", help="at a party: make its keys here and write NAME.csr for the CA"
    )
    req.add_argument("name", metavar="NAME")
    req.add_argument(
        "--role",
        required=True,
        choices=("site", "coordinator", "observer", "admin"),
        help="what the certificate lets the party do",
    )
    req.add_argument("--out", type=Path, required=True, help="the party's key folder (0700)")
    req.add_argument("--consortium", default=None, help="the consortium's name, checked by the CA")
    sign = verbs.add_parser("sign", help="at the CA: issue certificates for parties' CSRs")
    sign.add_argument("csrs", type=Path, nargs="+", metavar="CSR")
    sign.add_argument("--ca", type=Path, required=True, help="the consortium folder (with ca/)")
    sign.add_argument("--out", type=Path, required=True, help="one signed folder per party here")
    assemble = verbs.add_parser(
        "assemble", help="at a party: verify the CA's signed folder and make the kit"
    )
    assemble.add_argument("keys", type=Path, metavar="DIR", help="the folder `request` wrote")
    assemble.add_argument(
        "--signed", type=Path, required=True, help="the folder the CA's `sign` returned"
    )
    assemble.add_argument(
        "--ca-fingerprint",
        required=True,
        metavar="HEX",
        help="the CA certificate's sha256, got from the CA's operator out of band",
    )
    revoke = verbs.add_parser(
        "revoke", help="revoke a party's certificate: the coordinator refuses it at once"
    )
    revoke.add_argument("name", metavar="NAME")
    revoke.add_argument("--out", type=Path, required=True, help="the consortium folder (with ca/)")
    crl = verbs.add_parser(
        "crl", help="re-issue the CRL (next number) before parties refuse it as stale"
    )
    crl.add_argument("--out", type=Path, required=True, help="the consortium folder (with ca/)")
    crl.add_argument(
        "--days",
        type=int,
        default=30,
        help="until its next_update (default: 30; run it again before then, e.g. weekly)",
    )


def _demo_keys(parser: Any) -> None:
    parser.add_argument(
        "--demo-keys",
        action="store_true",
        help="generate the parties' private keys here, at the CA (demos and tests only: "
        "whoever holds this folder can pose as any party)",
    )


def _admin_parser(sub: Any) -> None:
    admin = sub.add_parser(
        "admin", help="start, stop or query a running consortium coordinator (admin kit)"
    )
    admin.add_argument("verb", choices=("status", "start", "stop"))
    admin.add_argument(
        "--run-id",
        default="",
        help="the run meant (its id, as status shows it): refused if another run is served "
        "now, as a standing federation (fedops serve) switches runs",
    )
    admin.add_argument(
        "--kit", type=Path, required=True, help="an admin's kit (observers: status only)"
    )
    admin.add_argument(
        "--coordinator", default=None, help="HOST:PORT (default: the kit's coordinator)"
    )
    admin.add_argument("--reason", default="", help="recorded in the coordinator's audit log")
    admin.add_argument(
        "--ca-fingerprint",
        default=None,
        metavar="HEX",
        help="the consortium CA certificate's sha256 (out of band); a kit from another CA "
        "is refused",
    )
