"""``metrics.jsonl``: one line per committed round, for people and plotting tools.

The run's store (:class:`fedops.runtime.store.RunStore`) is the truth; this file is its
readable copy. A round appends its own line to the file as this object last left it:
rewriting every earlier line after each round was quadratic in rounds, with a thousand
sites' drift per line. A file changed behind it (edited, deleted, or left by another
process, maybe with a torn last line) is rewritten whole from the store instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class MetricsFile:
    """``metrics.jsonl`` in ``run_dir``, written by one store."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        #: (last round, size) of the file as this object wrote it; None: not written yet
        self._written: tuple[int, int] | None = None

    def rewrite(self, rounds: Sequence[Mapping[str, Any]]) -> None:
        """The whole file: one line per ``rounds`` entry (each with its ``round``)."""
        text = "".join(_line(m) for m in rounds)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)
        self._written = (rounds[-1]["round"], len(text.encode())) if rounds else None

    def extends(self, server_round: int) -> bool:
        """Whether round ``server_round``'s line can be appended: the file is as this object
        left it after the round before."""
        size = self.path.stat().st_size if self.path.exists() else -1
        return self._written == (server_round - 1, size)

    def append(self, metrics: Mapping[str, Any]) -> None:
        """One more round's line (:meth:`extends` must hold)."""
        assert self._written is not None
        line = _line(metrics).encode()
        with self.path.open("ab") as f:
            f.write(line)
        self._written = (metrics["round"], self._written[1] + len(line))


def json_safe(value: Any) -> Any:
    """NaN/Inf become null, at any depth: strict JSON readers refuse bare NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _line(metrics: Mapping[str, Any]) -> str:
    return json.dumps(json_safe(metrics), allow_nan=False) + "\n"
