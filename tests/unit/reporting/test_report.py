"""The HTML run report: every section, every image a real PNG, nothing from the run unescaped."""

from __future__ import annotations

import base64
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from fedops.reporting.report import render_report, report_command

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"
SITES = ["north", "south", "east$1", EVIL]
FEATURES = [f"feature_{i}" for i in range(10)]
SECTIONS = {"summary", "curves", "sites", "drift", "fairness", "privacy", "alerts"}
OPTIONAL = ("sites", "drift", "fairness", "privacy", "alerts")


class Page(HTMLParser):
    """Section ids, images and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.sections.append(dict(attrs)["id"] or "")
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> tuple[str, Page]:
    source = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(source)
    return source, page


def basic_row(rnd: int) -> dict[str, Any]:
    return {
        "round": rnd,
        "num_clients": 4,
        "train_loss": 1.0 / rnd,
        "eval_loss": 1.1 / rnd,
        "eval_accuracy": 0.5 + 0.05 * rnd,
        "num_eval_clients": 4,
        "duration_s": 0.5,
    }


def site_drift(site: str, rnd: int) -> dict[str, Any]:
    drifting = site in ("north", EVIL) and rnd >= 4
    by_feature = {f: 0.01 * (i % 4) for i, f in enumerate(FEATURES)}
    if drifting:
        scale = 1.0 if site == "north" else 0.7
        by_feature["feature_3"] = 0.12 * (rnd - 3) * scale
        by_feature["feature_7"] = 0.2 * (rnd - 3) * scale
    if site == "south" and rnd == 2:
        by_feature["feature_5"] = math.nan
    worst = max(by_feature, key=lambda f: by_feature[f] if by_feature[f] == by_feature[f] else 0)
    value = by_feature[worst]
    return {"psi": value, "psi_feature": worst, "js": value / 3, "js_feature": worst,
            "ks": value / 2, "ks_feature": worst, "by_feature": by_feature}  # fmt: skip


def full_row(rnd: int) -> dict[str, Any]:
    row = basic_row(rnd)
    row["global_loss"] = 1.05 / rnd
    row["global_accuracy"] = None if rnd == 3 else 0.52 + 0.05 * rnd
    row["epsilon"] = 0.4 * rnd
    row["sites"] = {
        s: {
            "accuracy": math.nan if (s == "east$1" and rnd == 5) else 0.4 + 0.04 * rnd + 0.03 * i,
            "loss": 1.0 / rnd,
            "num_examples": 100 + i,
        }
        for i, s in enumerate(SITES)
    }
    row["drift"] = {s: site_drift(s, rnd) for s in SITES}
    row["drift_alerts"] = [
        {"site": s, "feature": f, "statistic": "psi", "value": v, "level": "significant"}
        for s, d in row["drift"].items()
        for f, v in d["by_feature"].items()
        if v > 0.25
    ]
    row["fairness"] = {
        "demographic_parity_difference": 0.05 + 0.02 * rnd,
        "demographic_parity_ratio": 0.95 - 0.03 * rnd,
        "equalized_odds_difference": math.nan if rnd == 2 else 0.08,
        "equal_opportunity_difference": None,
        "group_accuracy_gap": 0.04,
        "site_accuracy_gap": 0.09,
    }
    dpd = row["fairness"]["demographic_parity_difference"]
    row["fairness_alerts"] = (
        [{"metric": "demographic_parity_difference", "value": dpd, "threshold": 0.1}]
        if dpd > 0.1
        else []
    )
    return row


def write_run(run_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any] | None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    # json.dumps writes NaN as the bare token NaN, as a careless writer would
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def synthetic_run(run_dir: Path) -> Path:
    """6 rounds, 4 sites, 10 features; PSI rises at two sites from round 4."""
    summary = {"run_id": "demo-run", "status": "completed", "task": "tabular", "strategy": EVIL,
               "rounds_planned": 6, "rounds_completed": 6, "secagg": "secagg+",
               "privacy_mode": "central", "privacy": "(ε=2.4, δ=1e-05) user-level DP",
               "final_metrics": {"round": 6}}  # fmt: skip
    return write_run(run_dir, [full_row(r) for r in range(1, 7)], summary)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Page]:
    run_dir = synthetic_run(tmp_path_factory.mktemp("full") / "run")
    path = render_report(run_dir)
    assert path == run_dir / "report.html"
    return (path, *parse(path))


def assert_real_png(image: dict[str, str | None]) -> None:
    src = image["src"] or ""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    data = base64.b64decode(src[len(prefix) :], validate=True)
    assert data.startswith(PNG_SIGNATURE)
    pixels = imread(io.BytesIO(data))
    assert pixels.shape[0] >= 150 and pixels.shape[1] >= 200, pixels.shape
    assert (pixels != pixels[0, 0]).any(), "a single-colour image"
    assert image.get("alt"), "an image without alt text"


def test_every_section_is_present(full_report: tuple[Path, str, Page]) -> None:
    _, source, page = full_report
    assert set(page.sections) == SECTIONS
    assert "not recorded in this run" not in source
    assert len(page.images) == 7  # accuracy, loss, sites, drift heatmap + rounds, fairness, ε


def test_every_image_is_an_embedded_png(full_report: tuple[Path, str, Page]) -> None:
    _, _, page = full_report
    for image in page.images:
        assert_real_png(image)


def test_strings_from_the_run_are_escaped_and_nothing_is_external(
    full_report: tuple[Path, str, Page],
) -> None:
    path, source, page = full_report
    assert "<script" not in source.lower()
    assert "&lt;script&gt;" in source
    assert EVIL in "".join(page.text)  # shown as text, in the summary and the alerts
    for needle in ("http://", "https://", "<link", "url(", "@import"):
        assert needle not in source
    assert path.stat().st_size < 1_000_000


def test_alerts_and_worst_sites_are_listed(full_report: tuple[Path, str, Page]) -> None:
    _, _, page = full_report
    text = "".join(page.text)
    assert "demographic_parity_difference" in text
    assert "feature_7" in text and "significant" in text
    assert "worst site" in text
    assert "ε=2.4" in text  # the summary's privacy guarantee


def test_basic_metrics_only_skip_the_optional_sections(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", [basic_row(r) for r in range(1, 4)], summary=None)
    out = tmp_path / "elsewhere.html"
    assert render_report(run_dir, out) == out
    source, page = parse(out)
    assert set(page.sections) == SECTIONS
    assert len(page.images) == 2
    for image in page.images:
        assert_real_png(image)
    assert source.count("not recorded in this run") == 1 + len(OPTIONAL)  # + summary.json
    assert not (run_dir / "report.html").exists()


def test_many_sites_and_features_make_a_band_and_a_top_20(tmp_path: Path) -> None:
    sites, features = [f"site{i:02d}" for i in range(25)], [f"f{i}" for i in range(64)]
    rows = []
    for rnd in range(1, 4):
        row = basic_row(rnd)
        row["sites"] = {s: {"accuracy": 0.5 + 0.01 * i + 0.02 * rnd} for i, s in enumerate(sites)}
        row["drift"] = {
            s: {"by_feature": {f: 0.005 * j * (i % 3) * rnd for j, f in enumerate(features)}}
            for i, s in enumerate(sites)
        }
        rows.append(row)
    _, page = parse(render_report(write_run(tmp_path / "run", rows, {"run_id": "big"})))
    text = "".join(page.text)
    assert "20 of 64 features" in text and "25 of 25 sites" in text
    assert "site00" in text and "site02" in text  # the worst sites, listed
    for image in page.images:
        assert_real_png(image)


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_command(tmp_path, None) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    run_dir = write_run(tmp_path / "run", [basic_row(1)], {"run_id": "one"})
    assert report_command(run_dir, None) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
