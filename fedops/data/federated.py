"""The flat, per-client-indexed form of a federated dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True, kw_only=True)
class FederatedData:
    """All clients' rows, concatenated client by client.

    Client ``i``'s training rows are ``train_x[train_offsets[i]:train_offsets[i + 1]]``
    (likewise for test). ``server_x``/``server_y`` are optional held-out rows
    for the coordinator's global evaluation.
    """

    train_x: np.ndarray  # float32 [N_train, ...features]
    train_y: np.ndarray  # int64 [N_train]
    train_offsets: np.ndarray  # int64 [num_clients + 1]
    test_x: np.ndarray
    test_y: np.ndarray
    test_offsets: np.ndarray
    num_classes: int
    server_x: np.ndarray | None = None
    server_y: np.ndarray | None = None
    #: sensitive-group id of every test row (a task's third test column), for fairness
    test_groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name, x, y, off in (
            ("train", self.train_x, self.train_y, self.train_offsets),
            ("test", self.test_x, self.test_y, self.test_offsets),
        ):
            if len(x) != len(y):
                raise ValueError(f"{name}: {len(x)} rows but {len(y)} labels")
            if off[0] != 0 or off[-1] != len(x) or np.any(np.diff(off) < 0):
                raise ValueError(f"{name} offsets must rise from 0 to {len(x)}")
        if self.test_groups is not None and len(self.test_groups) != len(self.test_y):
            raise ValueError(f"{len(self.test_groups)} group ids for {len(self.test_y)} test rows")
        if len(self.train_offsets) != len(self.test_offsets):
            raise ValueError("train and test offsets disagree on the number of clients")

    @property
    def num_clients(self) -> int:
        return len(self.train_offsets) - 1

    @property
    def num_features(self) -> int:
        return int(np.prod(self.train_x.shape[1:]))

    def train_sizes(self) -> np.ndarray:
        return np.diff(self.train_offsets)

    def client_train(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.train_offsets[client], self.train_offsets[client + 1]
        return self.train_x[a:b], self.train_y[a:b]

    def client_test(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.test_offsets[client], self.test_offsets[client + 1]
        return self.test_x[a:b], self.test_y[a:b]
