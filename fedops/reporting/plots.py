"""Accuracy and loss per round, drawn from a run directory's ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: file name -> the metrics drawn in it
RUN_PLOTS = {
    "accuracy": ("eval_accuracy", "global_accuracy"),
    "loss": ("train_loss", "eval_loss", "global_loss"),
}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir: Path) -> list[Path]:
    """Write ``accuracy.png`` and ``loss.png`` into ``run_dir``; return their paths."""
    from fedops.reporting.figures import DPI, metric_figure  # matplotlib only when drawing

    rows = read_metrics(run_dir)
    if not rows:
        return []
    written = []
    for name, keys in RUN_PLOTS.items():
        path = Path(run_dir) / f"{name}.png"
        metric_figure(rows, keys, name).savefig(path, dpi=DPI)
        written.append(path)
    return written
