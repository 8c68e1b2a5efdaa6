"""The compliance report as one self-contained HTML page.

Inline CSS, no scripts, no external resources: the file is archived and
opened offline, possibly years later. Every value comes from the audit logs,
which parties write with their own names in them, so every string goes
through :func:`html.escape`, attribute values included.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fedops.core.model_hash import shortened

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}code{font-size:.9em}
.ok{color:#11772d;font-weight:bold}.bad{color:#b3261e;font-weight:bold}
.verdict{padding:.6em 1em;border-radius:4px;display:inline-block}
.verdict.ok{background:#e6f4ea}.verdict.bad{background:#fce8e6}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _digest(value: Any) -> str:
    """A digest, shortened for the table, in full in its title."""
    if not value:
        return ""
    text = str(value)
    short = shortened(text)
    return f'<code title="{_e(text)}">{_e(short)}</code>'


def _flag(value: bool | None, yes: str = "yes", no: str = "NO") -> str:
    if value is None:
        return ""
    return f'<span class="ok">{_e(yes)}</span>' if value else f'<span class="bad">{_e(no)}</span>'


def _status(status: str | None) -> str:
    if not status:
        return ""
    css = "ok" if status in ("match", "rejected") else "bad"
    return f'<span class="{css}">{_e(status)}</span>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``rows`` hold HTML already escaped by the caller."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _certified(p: Mapping[str, Any]) -> str:
    """Who the consortium CA certified the log's key for, when the report was pinned to it."""
    c = p.get("certified")
    if not c:
        return "—"
    return f"{_e(c['name'])} ({_e(c['role'])}, {_e(c['consortium'])})"


def _parties(parties: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            _e(p["role"]),
            _e(p["actor"]),
            _flag(p["ok"], "verified", "FAILED"),
            _e(p["entries"]),
            f"<code>{_e(p['fingerprint'])}</code>",
            _certified(p),
            "<br>".join(
                [_e(p["reason"])] * bool(p["reason"]) + [f"⚠ {_e(w)}" for w in p["warnings"]]
            ),
            f"<code>{_e(p['path'])}</code>",
        ]
        for p in parties
    ]
    headers = [
        "role", "actor", "verification", "entries", "key fingerprint", "certified by the CA",
        "notes", "log",
    ]  # fmt: skip
    return _table(headers, rows)


def _rounds(rounds: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in rounds:
        sent = "<br>".join(_digest(d) for d in r["model_digests"]) or "<em>none recorded</em>"
        sites = r["sites"] or [{}]
        for i, s in enumerate(sites):
            first = [_e(r["round"]), _e(r["phase"]), sent] if i == 0 else ["", "", ""]
            rows.append(
                [
                    *first,
                    _e(s.get("site")),
                    _e(s.get("node_id")),
                    _digest(s.get("model_digest")),
                    _flag(s.get("model_match")),
                    _digest(s.get("update_digest")),
                    _digest(s.get("coordinator_digest")),
                    _status(s.get("update_status")),
                ]
            )
    headers = ["round", "phase", "model sent", "site", "node", "model received", "match",
               "update sent", "update received", "update"]  # fmt: skip
    return _table(headers, rows)


def _model_files(rows: Sequence[Mapping[str, Any]] | None, why: str = "") -> str:
    if rows is None:
        return f"<p>{_e(why[:1].upper() + why[1:]) if why else 'Not checked'}.</p>"
    if not rows:
        return "<p>The run directory holds no model file.</p>"
    css = {"ok": "ok", "unlogged": ""}
    cells = [
        [
            f"<code>{_e(r['file'])}</code>",
            _e(r.get("round") if r.get("round") is not None else "final"),
            _digest(r.get("expected")),
            _digest(r.get("digest")),
            f'<span class="{css.get(r["status"], "bad")}">{_e(r["status"])}</span>',
            _e(r["message"]),
        ]
        for r in rows
    ]
    return _table(["file", "round", "logged", "file's digest", "status", "why"], cells)


def _privacy(rows: Sequence[Mapping[str, Any]] | None) -> str:
    if not rows:
        return "<p>No DP round events in the coordinator's log.</p>"
    cells = [
        [_e(r["key"]), _e(r["round"]), _e(f"{r['delta']:g}"), _e(r["accountant"]),
         _e(r["rounds"]), _e(f"{r['logged']:.6g}"), _e(f"{r['recomputed']:.6g}"),
         _flag(r["ok"], "match", "MISMATCH")]
        for r in rows
    ]  # fmt: skip
    headers = ["ε", "round", "δ", "accountant", "events", "logged", "recomputed", ""]
    return _table(headers, cells)


def _events(events: Mapping[str, Any]) -> str:
    categories = _table(
        ["category", "events"], [[_e(k), _e(v)] for k, v in events["categories"].items()]
    )
    coordinator, sites = events["coordinator"], events["sites"]
    by_event = _table(
        ["event", "coordinator", "sites", "total"],
        [
            [f"<code>{_e(k)}</code>", _e(coordinator.get(k, 0)), _e(sites.get(k, 0)), _e(v)]
            for k, v in events["by_event"].items()
        ],
    )
    return categories + by_event


def render_html(report: Mapping[str, Any]) -> str:
    """The report dict of :func:`fedops.reporting.audit.compliance.export_compliance` as HTML."""
    ok = bool(report["ok"])
    verdict = (
        "All logs verify and every digest matches."
        if ok
        else "FAILED: a log does not verify or digests disagree."
    )
    mismatches = "".join(f"<li>{_e(m['message'])}</li>" for m in report["mismatches"])
    hidden = report.get("pseudonymous_rounds") or []
    pseudonymous = (
        f"<p>Rounds {_e(', '.join(map(str, hidden)))} name their nodes by pseudonyms (central "
        "DP) and were not cross-checked: run the export where the run directory's "
        "<code>participants.key</code> is.</p>"
        if hidden
        else ""
    )
    files = _model_files(report.get("model_files"), report.get("model_files_unchecked", ""))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>fedops compliance report</title><style>{_CSS}</style></head><body>"
        f"<h1>Compliance report</h1><p>Run directory <code>{_e(report['run_dir'])}</code>, "
        f"generated {_e(report['generated'])}.</p>"
        f'<p class="verdict {"ok" if ok else "bad"}">{_e(verdict)}</p>'
        f"<h2>Audit logs</h2>{_parties(report['parties'])}"
        f"<h2>Mismatches ({len(report['mismatches'])})</h2>"
        + (f"<ul>{mismatches}</ul>" if mismatches else "<p>None.</p>")
        + pseudonymous
        + f"<h2>Model files</h2>{files}"
        f"<h2>Privacy: ε recomputed from the logged round events</h2>"
        f"{_privacy(report.get('privacy_recomputed'))}"
        f"<h2>Model and update digests per round</h2>{_rounds(report['rounds'])}"
        f"<h2>Events</h2>{_events(report['events'])}"
        "</body></html>\n"
    )
