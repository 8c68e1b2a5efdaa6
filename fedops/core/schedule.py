"""What one vectorized training call is given: the clients' jobs and the shared settings.

Shared by the two batched trainers (:mod:`fedops.core.vectorized`, any model through
``torch.func``; :mod:`fedops.core.stacked`, linear/MLP chains with a written-out backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientJob:
    """One client's local training: its rows (in the flat arrays), epochs and shuffle seed."""

    start: int
    stop: int
    epochs: int
    seed: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def steps(self, batch_size: int) -> int:
        return self.epochs * math.ceil(self.size / batch_size)


@dataclass(frozen=True, slots=True, kw_only=True)
class VectorConfig:
    batch_size: int
    lr: float
    momentum: float = 0.0
    proximal_mu: float = 0.0
    max_chunk: int = 1024  # clients trained together, at most
    step_ratio: float = 3.0  # longest / shortest step count within a chunk
    min_width: int = 4  # narrower groups train client by client (same result, less overhead)
    max_chunk_rows: int = 1 << 21  # bound on chunk * batch_size * features (memory)
    stacked: bool = True  # linear/MLP chains: the written-out backward of fedops.core.stacked
