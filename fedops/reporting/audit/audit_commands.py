"""``fedops audit verify`` and ``fedops audit export``: verdicts for a terminal.

The checks are in :mod:`fedops.reporting.audit.logs` (one log) and
:mod:`fedops.reporting.audit.compliance` (every party's log, cross-checked); this is
what turns them into exit codes and lines on stdout/stderr (fedops/cli parses
the arguments).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedops.reporting.audit.compliance import ModelFilesCheck, export_compliance
from fedops.reporting.audit.logs import verify_certified_log, verify_log_file
from fedops.reporting.audit.run_logs import NotARunDirectory, coordinator_log
from fedops.reporting.out_dirs import out_dir_problem


def _read(path: Path | None, what: str) -> bytes | None:
    """The file's bytes; ``None`` without a path; OSError names the file and ``what`` it is."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _crl(path: Path | None, ca_pem: bytes | None) -> bytes | None:
    if path is not None and ca_pem is None:
        raise OSError("--crl checks the keys the CA certified: give the CA's certificate (--ca)")
    return _read(path, "CRL")


def audit_verify_command(
    path: Path,
    public_key: Path | None,
    ca: Path | None = None,
    allow_missing_head: bool = False,
    crl: Path | None = None,
) -> int:
    """``fedops audit verify``: 0 when the log verifies, 1 otherwise (verdict on stderr).

    ``ca`` (the consortium's ``ca.pem``) also requires the log's key to be the
    one the CA certified (``audit_key.crt`` beside the log) and names its party;
    ``crl`` (the CA's current ``crl.pem``) also fails a log whose key is revoked.
    """
    try:
        pem, ca_pem = _read(public_key, "public key"), _read(ca, "CA certificate")
        crl_pem = _crl(crl, ca_pem)
    except OSError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    signer = None
    if ca_pem is not None:
        result, signer = verify_certified_log(
            Path(path), ca_pem, allow_missing_head=allow_missing_head, crl_pem=crl_pem
        )
    else:
        result = verify_log_file(Path(path), pem, allow_missing_head=allow_missing_head)
    if not result.ok:
        print(f"FAILED: {path}: {result.reason}", file=sys.stderr)
        return 1
    if signer is not None:
        trust = (
            f"key certified by the consortium CA for {signer.name!r} (role {signer.role}, "
            f"consortium {signer.consortium!r}, serial {signer.serial:x})"
        )
    else:
        trust = "pinned key" if result.pinned else "key trusted on first use"
    print(
        f"OK: {result.entries} entries, chain and signatures valid "
        f"(key fingerprint {result.fingerprint}, {trust}, actor {result.actor!r})",
        file=sys.stderr,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _export_refused(run_dir: Path, out: Path | None) -> int | None:
    """The exit status of an export refused before anything is read or written (a path
    that is no run directory, an ``--out`` no folder can be made at), said in one line;
    None when it may go on."""
    try:
        coordinator_log(run_dir)
    except NotARunDirectory as exc:
        print(f"{'FAILED' if exc.lost else 'fedops audit export: error'}: {exc}", file=sys.stderr)
        return 1 if exc.lost else 2
    flag = "--out" if out is not None else "--out (default: RUN_DIR)"
    problem = out_dir_problem(flag, out if out is not None else run_dir)
    if problem:
        print(f"fedops audit export: error: {problem}", file=sys.stderr)
        return 2
    return None


def audit_export_command(
    run_dir: Path,
    out: Path | None,
    site_logs: list[Path],
    ca: Path | None = None,
    allow_missing_head: bool = False,
    crl: Path | None = None,
    model_files: ModelFilesCheck | None = None,
) -> int:
    """``fedops audit export``: 0 when every log verifies and every digest matches, the run
    directory's model files' included (with ``model_files``, the runtime's check); 2, with
    nothing written, when ``run_dir`` is no run directory or ``out`` no place to write."""
    refused = _export_refused(run_dir, out)
    if refused is not None:
        return refused
    try:
        ca_pem = _read(ca, "CA certificate")
        crl_pem = _crl(crl, ca_pem)
    except OSError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    report = export_compliance(
        run_dir,
        out,
        site_logs,
        ca_pem=ca_pem,
        allow_missing_head=allow_missing_head,
        crl_pem=crl_pem,
        model_files=model_files,
    )
    print(f"compliance report: {report['paths']['html']} (and {report['paths']['json']})")
    print(
        f"site logs: {len(report['parties']) - 1} read (given with --site-log, or found at "
        f"{' and '.join(report['site_logs_searched'])})"
    )
    for party in report["parties"]:
        if party["certified"] is not None:
            c = party["certified"]
            print(f"  {party['path']}: certified {c['name']!r} ({c['role']})")
    if report["model_files_unchecked"]:
        print(f"model files: {report['model_files_unchecked']}", file=sys.stderr)
    bad = [p for p in report["parties"] if not p["ok"]]
    logs, n_bad = len(report["parties"]), len(report["mismatches"])
    if report["ok"]:
        matching = sum(r["status"] == "ok" for r in report["model_files"] or [])
        checked = f", {matching} model files match the log" if matching else ""
        print(
            f"OK: {logs} logs verified, {len(report['rounds'])} round phases{checked}, "
            "no mismatches"
        )
        return 0
    problems = [f"{len(bad)} of {logs} logs do not verify"] if bad else []
    problems += [f"{n_bad} mismatch{'es' if n_bad > 1 else ''}"] if n_bad else []
    print(f"FAILED: {', '.join(problems)}", file=sys.stderr)
    for party in bad:
        print(f"  {party['path']}: {party['reason']}", file=sys.stderr)
    for m in report["mismatches"][:20]:
        print(f"  {m['message']}", file=sys.stderr)
    return 1
