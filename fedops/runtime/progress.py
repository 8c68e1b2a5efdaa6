"""The terminal view of a run: a live bar on a terminal, one line per round always."""

from __future__ import annotations

import math
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedops.runtime.driver import RoundRecord


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


class RoundProgress:
    """Context manager; call :meth:`update` with each finished round."""

    def __init__(self, *, total_rounds: int, first_round: int, label: str) -> None:
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
        )
        self.task = self.progress.add_task(
            label, total=total_rounds, completed=first_round - 1, status="waiting for clients"
        )

    def __enter__(self) -> RoundProgress:
        self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def update(self, record: RoundRecord) -> None:
        m = record.metrics
        duration = float(m.get("duration_s") or 0.0)
        rate = f", {m.get('num_clients', 0) / duration:.0f} clients/s" if duration > 0 else ""
        accuracy = m.get("eval_accuracy", m.get("global_accuracy"))
        loss = m.get("eval_loss", m.get("global_loss"))
        status = f"acc {_fmt(accuracy)} loss {_fmt(loss)} ({m.get('num_clients')} clients{rate})"
        self.progress.update(self.task, advance=1, status=status)
        parts = [f"round {record.server_round}:", f"clients={m.get('num_clients')}"]
        # the sites' own losses and accuracies are withheld under DP (release_site_metrics)
        for key in ("train_loss", "eval_loss", "eval_accuracy", "epsilon", "global_accuracy"):
            if key in m:
                parts.append(f"{'ε' if key == 'epsilon' else key}={_fmt(m[key])}")
        line = " ".join(parts)
        self.console.print(
            line + f" ({_fmt(m.get('duration_s'), 2)} s)", highlight=False, soft_wrap=True
        )
