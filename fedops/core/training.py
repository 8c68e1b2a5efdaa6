"""The default local training and evaluation loops (PyTorch, no I/O).

Both runtimes call these, so a simulated client and a deployed agent train
the same way: same batching, same seeded shuffling, same FedProx term.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedops.core.optimizers import OPTIMIZERS
from fedops.core.params import Params
from fedops.core.train_settings import TrainSettings, settings_of

Data = Dataset[Any] | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """Local training hyperparameters, as sent by the coordinator or set by the site."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    proximal_mu: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.proximal_mu < 0:
            raise ValueError(f"proximal_mu must be >= 0, got {self.proximal_mu}")

    def settings(self) -> TrainSettings:
        """These settings as a fit task carries them (without the per-round keys)."""
        return settings_of(self)


def get_params(model: nn.Module) -> Params:
    """The model's state (parameters and buffers) as named numpy arrays."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_params(model: nn.Module, params: Mapping[str, np.ndarray]) -> None:
    """Load named arrays into the model; names and shapes must match exactly."""
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in params.items()}
    model.load_state_dict(state, strict=True)


def as_tensors(data: Data) -> Data:
    """Turn ``(X, y)`` numpy arrays into tensors; leave Datasets alone."""
    if isinstance(data, tuple):
        x, y = data
        return torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(
            np.asarray(y), dtype=torch.long
        )
    return data


def num_examples(data: Data) -> int:
    if isinstance(data, tuple):
        return len(data[0])
    return len(data)  # type: ignore[arg-type]


def _batches(
    data: Data, batch_size: int, generator: torch.Generator | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs, targets); shuffled when a generator is given."""
    if isinstance(data, tuple):
        x, y = data
        n = len(x)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, batch_size):
            idx = (
                order[start : start + batch_size]
                if order is not None
                else slice(start, start + batch_size)
            )
            yield x[idx], y[idx]
        return
    # the order drawn as for arrays: DataLoader(shuffle=True) first draws a worker seed from
    # the generator, so a Dataset and the same rows as (X, y) would train in different orders
    # (and a simulation, which materializes Datasets into arrays, differ from the site)
    n = len(data)  # type: ignore[arg-type]
    shuffled = torch.randperm(n, generator=generator).tolist() if generator is not None else None
    yield from DataLoader(data, batch_size=batch_size, sampler=shuffled)


def train(model: nn.Module, data: Data, cfg: TrainConfig) -> dict[str, float]:
    """Train in place for ``cfg.epochs``; return the mean training loss.

    With ``proximal_mu > 0`` the loss gets FedProx's ``mu/2 ||w - w0||^2``,
    where ``w0`` are the weights the model had on entry (the global model).
    """
    data = as_tensors(data)
    loss_fn = nn.CrossEntropyLoss()
    trainable = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in trainable] if cfg.proximal_mu > 0 else []
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(trainable, lr=cfg.lr)
    else:
        opt = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    total, seen = 0.0, 0
    for _ in range(cfg.epochs):
        for inputs, targets in _batches(data, cfg.batch_size, generator):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            total += float(loss.detach()) * len(targets)
            seen += len(targets)
            if anchor:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(trainable, anchor, strict=True))
                loss = loss + 0.5 * cfg.proximal_mu * prox
            loss.backward()
            opt.step()
    return {"train_loss": total / max(seen, 1)}


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, batch_size: int = 256) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of the model on ``data``."""
    data = as_tensors(data)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    model.eval()
    loss, correct, seen = 0.0, 0, 0
    for inputs, targets in _batches(data, batch_size, None):
        logits = model(inputs)
        loss += float(loss_fn(logits, targets))
        correct += int((logits.argmax(dim=1) == targets).sum())
        seen += len(targets)
    if seen == 0:
        return {}  # nothing to report; weighted means skip results without examples
    return {"loss": loss / seen, "accuracy": correct / seen}
