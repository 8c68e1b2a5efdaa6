"""``fedops report RUN_DIR``: one self-contained HTML page for a run.

The page reads ``summary.json`` and ``metrics.jsonl`` and embeds its figures as
PNG data URIs: no JavaScript, no stylesheet, font or image from anywhere else,
so it can be mailed, archived or opened offline. Every string that comes from
the run directory is HTML-escaped. A section whose data the run did not record
says so instead of showing an empty plot.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from fedops.reporting import figures as fg
from fedops.reporting.out_dirs import out_dir_problem
from fedops.reporting.plots import RUN_PLOTS, read_metrics

#: summary.json keys shown first, in this order; the rest follow sorted
SUMMARY_KEYS = (
    "run_id", "status", "stop_reason", "task", "dataset", "strategy", "backend", "num_clients",
    "rounds_planned", "rounds_completed", "secagg", "privacy_mode", "privacy", "rejections",
    "model_digest", "config_digest",
)  # fmt: skip
#: not shown in the summary table: the last round's metrics are in the figures
SUMMARY_SKIP = frozenset({"final_metrics"})
MAX_ALERT_ROWS = 300
WORST_SITES = 3

CSS = """
body { font-family: system-ui, sans-serif; color: #222; max-width: 1180px;
       margin: 0 auto; padding: 0.5rem 1.5rem 3rem; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #ccc; padding-bottom: 0.2rem;
     margin-top: 2rem; }
nav a { margin-right: 0.9rem; }
figure { margin: 0.5rem 0; }
figcaption { font-size: 0.85rem; color: #555; }
img { max-width: 100%; height: auto; }
.row { display: flex; flex-wrap: wrap; gap: 1rem; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #f3f3f3; }
td { overflow-wrap: anywhere; max-width: 40rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { color: #777; font-style: italic; }
"""


@dataclass(frozen=True)
class Run:
    name: str
    summary: Mapping[str, Any]
    rows: list[dict[str, Any]]


def _esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any) -> str:
    """A cell's text (not yet escaped): 4 significant digits, n/a for null, JSON for the rest."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, Mapping | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= 200 else text[:197] + "..."
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_esc(fmt(c))}</td>'
            if isinstance(c, int | float) and not isinstance(c, bool)
            else f"<td>{_esc(fmt(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(fig: Figure, alt: str, caption: str = "") -> str:
    data = base64.b64encode(fg.to_png(fig)).decode("ascii")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">{cap}</figure>'


def _missing(what: str) -> str:
    return f'<p class="missing">{_esc(what)}: not recorded in this run.</p>'


def _has(run: Run, key: str) -> bool:
    return any(row.get(key) for row in run.rows)


def summary_section(run: Run) -> str:
    s = run.summary
    if not s:
        return _missing("Run summary (summary.json)")
    keys = [k for k in SUMMARY_KEYS if k in s]
    keys += sorted(k for k in s if k not in SUMMARY_KEYS and k not in SUMMARY_SKIP)
    rows: list[tuple[Any, Any]] = [(k, s[k]) for k in keys]
    rows.append(("rounds in metrics.jsonl", len(run.rows)))
    return _table(("field", "value"), rows)


def curves_section(run: Run) -> str:
    if not run.rows:
        return _missing("Per-round metrics")
    parts = []
    for name, keys in RUN_PLOTS.items():
        if any(fg.has_data(fg.column(run.rows, k)) for k in keys):
            fig = fg.metric_figure(run.rows, keys, name, figsize=(5.6, 3.6))
            parts.append(_figure(fig, f"{name} per round: {', '.join(keys)}"))
        else:
            parts.append(_missing(f"{name.capitalize()} ({', '.join(keys)})"))
    return f'<div class="row">{"".join(parts)}</div>'


def _last_value(values: Sequence[float]) -> float:
    return next((v for v in reversed(values) if math.isfinite(v)), math.nan)


def sites_section(run: Run) -> str:
    series = fg.site_series(run.rows, "sites", "accuracy")
    if not series:
        return _missing("Per-site evaluation (sites)")
    last = {site: _last_value(values) for site, values in series.items()}
    worst = sorted((s for s in last if math.isfinite(last[s])), key=lambda s: (last[s], s))
    worst = worst[:WORST_SITES]
    many = len(series) > fg.MAX_SITE_LINES
    caption = (
        f"{len(series)} sites: the band spans the lowest to the highest site accuracy, "
        f"dashed lines are the {len(worst)} worst sites"
        if many
        else f"{len(series)} sites, one line each"
    )
    fig = fg.site_figure(series, run.rows, worst if many else ())
    examples = {s: _last_site_examples(run, s) for s in worst}
    table = _table(
        ("worst site (latest accuracy)", "accuracy", "examples"),
        [(s, last[s], examples[s]) for s in worst],
    )
    return _figure(fig, "accuracy of the global model on each site's data per round", caption) + (
        table if worst else ""
    )


def _last_site_examples(run: Run, site: str) -> Any:
    for row in reversed(run.rows):
        entry = fg.as_dict(fg.as_dict(row.get("sites")).get(site))
        if "num_examples" in entry:
            return entry["num_examples"]
    return None


def drift_section(run: Run) -> str:
    sites, features, matrix = fg.drift_matrix(run.rows)
    if not sites:
        return _missing("Data drift (drift)")
    shown_f, shown_s = features[: fg.TOP_FEATURES], sites[: fg.TOP_SITES]
    caption = (
        f"Largest PSI of each feature at each site over all rounds; {len(shown_f)} of "
        f"{len(features)} features and {len(shown_s)} of {len(sites)} sites, largest PSI first. "
        f"Colour-bar lines: {fg.PSI_MODERATE:g} (moderate) and {fg.PSI_SIGNIFICANT:g} "
        "(significant); grey: not reported."
    )
    heatmap = fg.drift_heatmap(shown_s, shown_f, matrix[: len(shown_s), : len(shown_f)])
    rounds = fg.drift_rounds_figure(fg.site_max_psi(run.rows), run.rows)
    return _figure(heatmap, "heatmap of the largest PSI per site and feature", caption) + _figure(
        rounds,
        "largest PSI over features of each site per round, with the PSI levels",
        f"Each site's largest PSI per round; dotted: {fg.PSI_MODERATE:g} (moderate) and "
        f"{fg.PSI_SIGNIFICANT:g} (significant).",
    )


def fairness_section(run: Run) -> str:
    thresholds = fg.fairness_thresholds(run.rows)
    fig = fg.fairness_figure(run.rows, thresholds) if _has(run, "fairness") else None
    if fig is None:
        return _missing("Fairness metrics (fairness)")
    shown = ", ".join(
        f"{k} {thresholds[k]:g}" for k in fg.fairness_series(run.rows) if k in thresholds
    )
    caption = f"Dotted lines: alert thresholds ({shown}); grey where metrics share one."
    return _figure(fig, "fairness metrics per round with their alert thresholds", caption)


def privacy_section(run: Run) -> str:
    eps = fg.column(run.rows, "epsilon")
    if not fg.has_data(eps):
        return _missing("Differential privacy budget (epsilon)")
    caption = f"Cumulative ε after the last round: {fmt(_last_value(eps))}"
    guarantee = run.summary.get("privacy")
    text = f"<p>{_esc(guarantee)}</p>" if isinstance(guarantee, str) else ""
    return text + _figure(fg.epsilon_figure(run.rows), "DP epsilon spent per round", caption)


def _alert_rows(run: Run) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for i, row in enumerate(run.rows):
        rnd = row.get("round", i + 1)
        for a in map(fg.as_dict, row.get("drift_alerts") or []):
            out.append((rnd, "drift", a.get("site"), a.get("feature"), a.get("statistic"),
                        a.get("value"), a.get("level")))  # fmt: skip
        for a in map(fg.as_dict, row.get("fairness_alerts") or []):
            out.append((rnd, "fairness", "", a.get("metric"), "", a.get("value"),
                        f"threshold {fmt(a.get('threshold'))}"))  # fmt: skip
    return out


def alerts_section(run: Run) -> str:
    if not any(k in row for row in run.rows for k in ("drift_alerts", "fairness_alerts")):
        return _missing("Drift and fairness alerts")
    rows = _alert_rows(run)
    if not rows:
        return "<p>No drift or fairness alert was raised.</p>"
    header = ("round", "kind", "site", "feature / metric", "statistic", "value", "level")
    note = (
        f"<p>Showing the first {MAX_ALERT_ROWS} of {len(rows)} alerts.</p>"
        if len(rows) > MAX_ALERT_ROWS
        else f"<p>{len(rows)} alerts.</p>"
    )
    return note + _table(header, rows[:MAX_ALERT_ROWS])


SECTIONS: tuple[tuple[str, str, Callable[[Run], str]], ...] = (
    ("summary", "Run summary", summary_section),
    ("curves", "Accuracy and loss", curves_section),
    ("sites", "Accuracy per site", sites_section),
    ("drift", "Data drift (PSI)", drift_section),
    ("fairness", "Fairness", fairness_section),
    ("privacy", "Privacy budget", privacy_section),
    ("alerts", "Alerts", alerts_section),
)


def render_html(run: Run) -> str:
    title = f"fedops run {run.summary.get('run_id') or run.name}"
    nav = " ".join(f'<a href="#{sid}">{_esc(t)}</a>' for sid, t, _ in SECTIONS)
    body = "\n".join(
        f'<section id="{sid}"><h2>{_esc(t)}</h2>\n{build(run)}</section>'
        for sid, t, build in SECTIONS
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n"
        f"<body><h1>{_esc(title)}</h1><nav>{nav}</nav>\n{body}\n</body></html>\n"
    )


def load_run(run_dir: Path) -> Run:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    return Run(run_dir.name, summary if isinstance(summary, dict) else {}, read_metrics(run_dir))


def render_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's HTML report (default ``run_dir/report.html``); return its path."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(
            f"{run_dir / 'metrics.jsonl'} not found: not a run directory, or no round finished"
        )
    path = run_dir / "report.html" if out is None else Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)  # --out's folder (checked by the command)
    path.write_text(render_html(load_run(run_dir)), encoding="utf-8")
    return path


def report_command(run_dir: Path, out: Path | None) -> int:
    """``fedops report``: print the report's path; 2 when ``run_dir`` holds no run or
    ``out`` is no place for a file (its folder is created if missing)."""
    problem = None
    if out is not None and Path(out).is_dir():
        problem = f"--out: {out} is a directory; give the report's file name"
    elif out is not None:
        problem = out_dir_problem("--out", Path(out).parent)
    if problem:
        print(f"fedops report: error: {problem}", file=sys.stderr)
        return 2
    try:
        path = render_report(run_dir, out)
    except FileNotFoundError as exc:
        print(f"fedops report: error: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(
            f"fedops report: error: {run_dir}/metrics.jsonl: a line is not JSON ({exc})",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        print(f"fedops report: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
