"""Injected dropouts and stragglers, reproducible from (seed, round, client).

A dropped client never answers its task (the round sees a dropout); a
straggler completes only a random number of its local epochs, as in the
FedProx paper's systems-heterogeneity experiments. With ``drop_stragglers``
(FedAvg's behaviour there) a straggler's partial work is discarded instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    seed: int = 0
    dropout_rate: float = 0.0
    straggler_rate: float = 0.0
    drop_stragglers: bool = False

    def _rng(self, server_round: int, client: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, server_round, client, stream])

    def drops(self, server_round: int, client: int) -> bool:
        return bool(self.dropout_rate) and self._rng(server_round, client, 1).random() < (
            self.dropout_rate
        )

    def is_straggler(self, server_round: int, client: int) -> bool:
        return bool(self.straggler_rate) and self._rng(server_round, client, 2).random() < (
            self.straggler_rate
        )

    def epochs(self, server_round: int, client: int, epochs: int) -> int:
        """The epochs this client completes: all of them, or 1..epochs for a straggler."""
        if not self.is_straggler(server_round, client):
            return epochs
        return int(self._rng(server_round, client, 3).integers(1, epochs + 1))

    def plan(self, server_round: int, client: int, epochs: int) -> tuple[int, str | None]:
        """(local epochs to run, None), or (0, why the client drops out of this round)."""
        if self.drops(server_round, client):
            return 0, "injected dropout"
        done = self.epochs(server_round, client, epochs)
        if done < epochs and self.drop_stragglers:
            return 0, "straggler dropped"
        return done, None
