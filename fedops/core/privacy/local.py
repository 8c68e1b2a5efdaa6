"""Local DP-SGD on a site (Abadi et al. 2016) with Opacus: each site's own records are protected.

Per-example gradients (Opacus's ``GradSampleModule``) are clipped to
``max_grad_norm`` and Gaussian noise ``noise_multiplier · max_grad_norm`` is
added to each batch's sum (Opacus's ``DPOptimizer``). Batches are drawn by
Poisson sampling (each record joins a batch with probability
``batch_size / n``), the sampling the accountant assumes. The guarantee is
record-level, per site: :class:`SiteLedger` accumulates ``(σ, q, steps)``
over the rounds a site trains and answers its ε with Opacus's accountant.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from fedops.core.privacy.accountant import PrivacyLedger
from fedops.core.training import Data, TrainConfig, as_tensors, num_examples


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalDP:
    noise_multiplier: float
    max_grad_norm: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0 or not self.max_grad_norm > 0:
            raise ValueError("local DP needs noise_multiplier >= 0 and max_grad_norm > 0")


def steps_per_round(n: int, cfg: TrainConfig) -> tuple[float, int]:
    """``(sample rate, optimizer steps)`` of one round of local training on ``n`` records."""
    q = min(1.0, cfg.batch_size / max(n, 1))
    return q, cfg.epochs * max(1, round(1 / q))


def train_private(model: nn.Module, data: Data, cfg: TrainConfig, dp: LocalDP) -> dict[str, float]:
    """DP-SGD in place for ``cfg.epochs`` (FedProx's term is not supported here)."""
    # Imported here: opacus costs ~115 MB and ~1 s to import, paid only by DP-SGD sites.
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    x, y = as_tensors(data)  # type: ignore[misc]
    n = num_examples((x, y))
    q, steps = steps_per_round(n, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    wrapped = GradSampleModule(model)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    base: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        base = torch.optim.Adam(trainable, lr=cfg.lr)
    else:
        base = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum)
    opt = DPOptimizer(
        base,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=max(1, round(q * n)),
        generator=generator,
    )
    loss_fn = nn.CrossEntropyLoss()
    total, seen = 0.0, 0
    wrapped.train()
    try:
        for _ in range(steps):
            mask = torch.rand(n, generator=generator) < q
            opt.zero_grad(set_to_none=True)
            if not bool(mask.any()):
                # an empty Poisson batch still releases its noise (skipping it would tell)
                for p in trainable:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                opt.step()
                continue
            loss = loss_fn(wrapped(x[mask]), y[mask])
            total += float(loss.detach()) * int(mask.sum())
            seen += int(mask.sum())
            with warnings.catch_warnings():  # inputs never need gradients here: not a problem
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            opt.step()
    finally:
        wrapped._close()  # remove Opacus's hooks: the site's model is reused
    return {"train_loss": total / max(seen, 1)}


class SiteLedger:
    """A site's own record-level ε across the rounds it trained with DP-SGD."""

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self.ledger = PrivacyLedger()

    def epsilon_after(self, dp: LocalDP, n: int, cfg: TrainConfig) -> float:
        """ε if the site trains one more round with ``dp``."""
        q, steps = steps_per_round(n, cfg)
        trial = PrivacyLedger(history=list(self.ledger.history))
        trial.record(dp.noise_multiplier, q, steps)
        return trial.epsilon(self.delta)

    def spend(self, dp: LocalDP, n: int, cfg: TrainConfig) -> float:
        q, steps = steps_per_round(n, cfg)
        self.ledger.record(dp.noise_multiplier, q, steps)
        return self.ledger.epsilon(self.delta)
