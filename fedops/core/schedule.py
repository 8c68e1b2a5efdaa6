"""What one vectorized training call is given: the clients' jobs and the shared settings.

Shared by the two batched trainers (:mod:`fedops.core.vectorized`, any model through
``torch.func``; :mod:`fedops.core.stacked`, linear/MLP chains with a written-out backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


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

    def batches(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices ``[steps, batch_size]`` and rows per minibatch ``[steps]``.

        Drawn as :func:`fedops.core.training.train` draws them (one ``torch.randperm``
        per epoch from the job's seed, cut into consecutive minibatches), so a batched
        trainer computes what the client's own loop would. Slots past a short last
        minibatch repeat the client's first row: never another client's, whose NaN or
        Inf would turn a zero weight into a NaN gradient.
        """
        per_epoch = math.ceil(self.size / batch_size)
        rows = np.full((self.epochs * per_epoch, batch_size), self.start, dtype=np.int64)
        lengths = np.full(self.epochs * per_epoch, batch_size, dtype=np.int64)
        generator = torch.Generator().manual_seed(self.seed)
        for epoch in range(self.epochs if per_epoch else 0):
            block = rows[epoch * per_epoch : (epoch + 1) * per_epoch].reshape(-1)  # a view
            block[: self.size] = torch.randperm(self.size, generator=generator).numpy()
            block[: self.size] += self.start
            lengths[(epoch + 1) * per_epoch - 1] = self.size - (per_epoch - 1) * batch_size
        return rows, lengths


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
