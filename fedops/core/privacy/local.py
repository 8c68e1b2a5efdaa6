"""Local DP-SGD on a site (Abadi et al. 2016) with Opacus: each site's own records are protected.

Per-example gradients (Opacus's ``GradSampleModule``) are clipped to
``max_grad_norm`` and Gaussian noise ``noise_multiplier · max_grad_norm`` is
added to each batch's sum (Opacus's ``DPOptimizer``). Batches are drawn by
Poisson sampling (each record joins a batch with probability
``batch_size / n``), the sampling the accountant assumes.

The guarantee is record-level, per site, and it holds against the
coordinator only if the coordinator cannot replay the site's randomness: the
batch masks and the noise therefore come from OS entropy, never from the run
seed the coordinator sends (with that seed a coordinator replays training on
D and on a neighbour D' and sees which one matches, bit for bit).

What a site spent is kept by :class:`fedops.tasks.ledger.SiteLedger`, on disk
at the site (the core does no I/O); :func:`round_event` is what it records.
"""

from __future__ import annotations

import math
import secrets
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from fedops.core.privacy.accountant import RoundEvent, check_delta
from fedops.core.training import Data, TrainConfig, as_tensors, num_examples


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalDP:
    """One round's DP-SGD at a site.

    ``delta`` is the δ the site accounts at (its own policy's, or the
    coordinator's when smaller). ``noise_seed`` makes batch sampling and noise
    reproducible, for tests and experiments only: with a seed anyone who knows it
    can subtract the noise, so nothing in a deployment sets it (None: OS entropy).
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float = 1e-5
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(f"local DP needs noise_multiplier >= 0, got {self.noise_multiplier}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"local DP needs max_grad_norm > 0, got {self.max_grad_norm}")
        check_delta(self.delta)


def steps_per_round(n: int, cfg: TrainConfig) -> tuple[float, int]:
    """``(sample rate, optimizer steps)`` of one round of local training on ``n`` records."""
    q = min(1.0, cfg.batch_size / max(n, 1))
    return q, cfg.epochs * max(1, round(1 / q))


def round_event(dp: LocalDP, n: int, cfg: TrainConfig) -> tuple[RoundEvent, int]:
    """One round of DP-SGD as the accountant sees it: ``steps`` Poisson-sampled Gaussians."""
    q, steps = steps_per_round(n, cfg)
    event = RoundEvent(noise_multiplier=dp.noise_multiplier, sampling="poisson", sample_rate=q)
    return event, steps


def _generator(dp: LocalDP) -> torch.Generator:
    """Where batch masks and noise come from: 63 fresh bits from the OS per call.

    The generator itself is torch's Mersenne Twister; its 63-bit seed is secret and
    new every round, and its raw outputs never leave the site (only their sum with
    clipped gradients does). Opacus's ``PrivacyEngine(secure_mode=True)`` would draw from
    torchcsprng instead, which fedops does not depend on (its releases target torch 1.x);
    ``DPOptimizer``'s own ``secure_mode`` (used below) does not need it (opacus 1.6).
    """
    seed = dp.noise_seed if dp.noise_seed is not None else secrets.randbits(63)
    return torch.Generator().manual_seed(seed)


def train_private(model: nn.Module, data: Data, cfg: TrainConfig, dp: LocalDP) -> dict[str, float]:
    """DP-SGD in place for ``cfg.epochs`` (FedProx's term is not supported here).

    ``cfg.seed`` (derived from the coordinator's run seed) is deliberately not used.
    """
    # Imported here: opacus costs ~115 MB and ~1 s to import, paid only by DP-SGD sites.
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    x, y = as_tensors(data)  # type: ignore[misc]
    n = num_examples((x, y))
    q, steps = steps_per_round(n, cfg)
    generator = _generator(dp)
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
        # noise as a sum of Gaussians, robust to floating-point attacks on the sampler
        # (Mironov 2012; Opacus's fix for arXiv 2112.05307)
        secure_mode=True,
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
