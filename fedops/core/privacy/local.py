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

The coordinator chooses σ, the epochs and the planned rounds, so a site bounds
them before any accounting (:data:`MIN_NOISE_MULTIPLIER`, :data:`MAX_EPOCHS`,
:data:`MAX_STEPS_PER_ROUND`): the cost of a PLD grows with the ε it describes,
and σ = 0.01 once took 60 s and 3.3 GiB to account, σ = 0.001 ran out of memory.
"""

from __future__ import annotations

import math
import secrets
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedops.core.privacy.accountant import RoundEvent, check_delta, epsilon, noise_for_target
from fedops.core.train_settings import MAX_EPOCHS
from fedops.core.training import Data, TrainConfig, as_tensors, num_examples

#: the least noise a site trains with, besides 0 (clipping only, ε = ∞, accounted at once):
#: below it one round already costs hundreds of ε, and its PLD costs seconds to gigabytes
MIN_NOISE_MULTIPLIER = 0.1
#: the most local epochs a fit task may ask for (federated rounds run a few)
#: the most DP-SGD steps one round may take (a million records at batch 64 for 5 epochs: 78k)
MAX_STEPS_PER_ROUND = 1_000_000
#: the loosest ``dp_target_epsilon`` a site calibrates its σ for
MAX_TARGET_EPSILON = 100.0
#: the most rounds (``dp_rounds``) a site spreads a target over
MAX_PLANNED_ROUNDS = 100_000
#: the most DP-SGD steps (rounds x steps a round) a site calibrates σ over: every probe of
#: the calibration builds a PLD of them, and 3.8e7 steps at σ = 16 took 64 s for one probe
MAX_PLANNED_STEPS = 1_000_000
#: the largest ε a site builds a PLD for. A PLD's cost grows with the ε it describes
#: (σ = 0.1 over 10^5 steps: 95 s and 11 GiB); above this RDP's ε, an upper bound too and
#: computed in milliseconds, is the site's: there is no guarantee left to tighten
PLD_CEILING = 1000.0


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
        if 0 < self.noise_multiplier < MIN_NOISE_MULTIPLIER:
            raise ValueError(
                f"local DP: noise_multiplier {self.noise_multiplier:g} is below this site's "
                f"floor MIN_NOISE_MULTIPLIER={MIN_NOISE_MULTIPLIER:g} (0 is clipping only, "
                "ε = ∞): it protects nothing and accounting it costs minutes and gigabytes"
            )
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"local DP needs max_grad_norm > 0, got {self.max_grad_norm}")
        check_delta(self.delta)


def steps_per_round(n: int, cfg: TrainConfig) -> tuple[float, int]:
    """``(sample rate, optimizer steps)`` of one round of local training on ``n`` records."""
    q = min(1.0, cfg.batch_size / max(n, 1))
    return q, cfg.epochs * max(1, round(1 / q))


def check_round(n: int, cfg: TrainConfig) -> None:
    """Refuse (ValueError, naming the bound) a round no real run asks for, before accounting.

    Epochs and steps are the coordinator's to choose (``epochs`` in the fit
    config); unbounded, one crafted round (epochs = 1e18) trains forever.
    """
    if not 1 <= cfg.epochs <= MAX_EPOCHS:
        raise ValueError(
            f"local DP: epochs={cfg.epochs} is outside 1..MAX_EPOCHS={MAX_EPOCHS} "
            "(this site's bound on local epochs per round)"
        )
    _, steps = steps_per_round(n, cfg)
    if steps > MAX_STEPS_PER_ROUND:
        raise ValueError(
            f"local DP: {steps} DP-SGD steps in one round is above this site's bound "
            f"MAX_STEPS_PER_ROUND={MAX_STEPS_PER_ROUND}"
        )


def round_event(dp: LocalDP, n: int, cfg: TrainConfig) -> tuple[RoundEvent, int]:
    """One round of DP-SGD as the accountant sees it: ``steps`` Poisson-sampled Gaussians.

    Raises ValueError for a round outside :func:`check_round`'s bounds.
    """
    check_round(n, cfg)
    q, steps = steps_per_round(n, cfg)
    event = RoundEvent(noise_multiplier=dp.noise_multiplier, sampling="poisson", sample_rate=q)
    return event, steps


def noise_for_local_target(
    target: float, delta: float, n: int, cfg: TrainConfig, rounds: int
) -> float:
    """The σ a site derives from the coordinator's ``dp_target_epsilon`` (σ = auto).

    The smallest σ whose PLD ε over ``rounds`` rounds like this one is at most
    ``target``, but never below :data:`MIN_NOISE_MULTIPLIER`. Bounded before any
    PLD is built (ValueError naming the bound): the target (a target of 1e9 probed
    σ near 0.05 for minutes), the planned rounds and steps (each probe composes
    them all), and a plan that at σ = 1 would already spend more than
    :data:`PLD_CEILING` (RDP, cheap), where σ = 1, the calibration's first probe,
    would build a PLD of that size.
    """
    if not (math.isfinite(target) and 0 < target <= MAX_TARGET_EPSILON):
        raise ValueError(
            f"local DP: target epsilon {target:g} is outside (0, MAX_TARGET_EPSILON="
            f"{MAX_TARGET_EPSILON:g}] (this site's bound on the targets it calibrates for)"
        )
    if not 1 <= rounds <= MAX_PLANNED_ROUNDS:
        raise ValueError(
            f"local DP: dp_rounds={rounds} is outside 1..MAX_PLANNED_ROUNDS={MAX_PLANNED_ROUNDS}"
        )
    check_round(n, cfg)
    q, steps = steps_per_round(n, cfg)
    if steps * rounds > MAX_PLANNED_STEPS:
        raise ValueError(
            f"local DP: dp_rounds={rounds} rounds of {steps} steps is above this site's bound "
            f"MAX_PLANNED_STEPS={MAX_PLANNED_STEPS} for calibrating σ to a target (ask "
            "for an explicit noise multiplier instead)"
        )

    def plan(sigma: float) -> tuple[tuple[RoundEvent, int], ...]:
        event = RoundEvent(noise_multiplier=sigma, sampling="poisson", sample_rate=q)
        return ((event, steps * rounds),)

    at_one = epsilon(plan(1.0), delta, "rdp")
    if at_one > PLD_CEILING:
        raise ValueError(
            f"local DP: dp_rounds={rounds} rounds of {steps} steps would spend ε={at_one:.3g} "
            f"at σ = 1 (RDP), above PLD_CEILING={PLD_CEILING:g}: this site does not "
            "calibrate σ for such a plan"
        )
    if epsilon(plan(MIN_NOISE_MULTIPLIER), delta, "rdp") <= target:
        return MIN_NOISE_MULTIPLIER  # the floor already meets the target: probe nothing below it
    sigma = noise_for_target(target, delta, plan(1.0)[0][0], steps * rounds)
    return max(sigma, MIN_NOISE_MULTIPLIER)


def model_refusal(model: nn.Module) -> str:
    """Why ``model`` cannot be trained with local DP ("" when it can).

    DP-SGD noises the gradients of parameters and nothing else, but a site sends its
    whole state_dict. A floating-point buffer that training updates (BatchNorm's
    running mean: ``BatchNorm1d(affine=False)`` has no parameter, so Opacus's
    ``GradSampleModule`` accepts it) is an exact statistic of the sampled rows, ε = ∞.
    Every floating-point buffer is refused, and whatever Opacus's validator flags.
    """
    from opacus.validators import ModuleValidator

    problems = []
    floats = [name for name, b in model.named_buffers() if b.is_floating_point()]
    if floats:
        problems.append(
            f"floating-point buffers {floats} (statistics of the training rows that DP-SGD "
            "does not noise, e.g. BatchNorm running means, and that would leave with the update)"
        )
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        problems.append("Opacus: " + "; ".join(str(e) for e in errors))
    return "local DP refuses this task's model: " + "; ".join(problems) if problems else ""


def untrained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every state_dict entry DP-SGD does not train (buffers, frozen parameters).

    They leave with the update un-noised, so they must leave exactly as they came:
    :func:`changed_state` tells which did not.
    """
    trained = {
        name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad
    }
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in trained}


def changed_state(model: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """The entries of ``before`` (:func:`untrained_state`) that training changed."""
    now = model.state_dict()
    return sorted(k for k, v in before.items() if not torch.equal(now[k], v))


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


def train_private(
    model: nn.Module, data: Data, cfg: TrainConfig, dp: LocalDP, *, records: int | None = None
) -> dict[str, float]:
    """DP-SGD in place for ``cfg.epochs`` (FedProx's term is not supported here).

    ``records``: the public record count the round is planned with (default: the true
    n). The sample rate q, the steps and the divisor of the noised sum (q·records)
    come from it alone, so the noise in the update does not scale with n.

    ``cfg.seed`` (derived from the coordinator's run seed) is deliberately not used.
    The returned ``train_loss`` is the exact mean loss of the sampled batches, outside
    the noise: it is for the site itself, never for the coordinator (a crafted model
    makes it tell whether one record is in the data).
    """
    # Imported here: opacus costs ~115 MB and ~1 s to import, paid only by DP-SGD sites.
    from opacus import GradSampleModule

    x, y = as_tensors(data)  # type: ignore[misc]
    n = num_examples((x, y))
    planned = n if records is None else records
    q, steps = steps_per_round(planned, cfg)
    generator = _generator(dp)
    wrapped = GradSampleModule(model)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    opt = _dp_optimizer(
        trainable, cfg, dp, expected_batch_size=max(1, round(q * planned)), generator=generator
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


def _dp_optimizer(
    trainable: list[nn.Parameter],
    cfg: TrainConfig,
    dp: LocalDP,
    *,
    expected_batch_size: int,
    generator: torch.Generator,
) -> Any:
    """The site's optimizer wrapped in Opacus's, which clips and noises every step."""
    from opacus.optimizers import DPOptimizer  # see train_private: imported on first use

    base: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        base = torch.optim.Adam(trainable, lr=cfg.lr)
    else:
        base = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum)
    return DPOptimizer(
        base,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=expected_batch_size,
        generator=generator,
        # noise as a sum of Gaussians, robust to floating-point attacks on the sampler
        # (Mironov 2012; Opacus's fix for arXiv 2112.05307)
        secure_mode=True,
    )
