"""Accuracy and loss per round, drawn from a run directory's ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir: Path) -> list[Path]:
    """Write ``accuracy.png`` and ``loss.png`` into ``run_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = read_metrics(run_dir)
    if not rows:
        return []
    rounds = [r["round"] for r in rows]
    written = []
    for name, keys in (
        ("accuracy", ("eval_accuracy", "global_accuracy")),
        ("loss", ("train_loss", "eval_loss", "global_loss")),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            values = [r.get(key) for r in rows]
            if any(v is not None for v in values):
                ax.plot(
                    rounds,
                    [float("nan") if v is None else v for v in values],
                    label=key,
                    marker="o" if len(rounds) <= 50 else None,
                    markersize=3,
                )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(run_dir) / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
