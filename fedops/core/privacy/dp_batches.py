"""What batched local DP-SGD draws for each site: its Poisson batches and its noise.

Many simulated sites run DP-SGD side by side (:mod:`fedops.core.privacy.stacked_dpsgd`,
:mod:`fedops.core.privacy.vmap_dpsgd`), each exactly the mechanism a site runs alone
(:func:`fedops.core.privacy.local.train_private`) and accounts
(:func:`fedops.core.privacy.local.round_event`):

- **Sampling**: every step, each of the site's n records joins the batch independently
  with probability q (Poisson sampling, the event the accountant composes). A site alone
  draws a uniform per record per step (O(n) a step); here the gaps between chosen records
  are drawn instead, Geometric(q) by inversion in float64 (O(q·n) a step): the same
  distribution, record by record independent, at 1/q of the cost.
- **Noise**: per step, N(0, (σC)²) per coordinate added to the sum of clipped per-example
  gradients, drawn as Opacus's ``secure_mode`` draws it (the sum of four N(0, (σC)²),
  halved; Mironov 2012's floating-point attack, arXiv 2112.05307).
- **Randomness**: one torch generator per site and round, seeded with the site's own
  secret (:attr:`PrivateJob.seed`, fresh OS entropy in a simulation), never with the
  run's seed: batches first, then the noise, in blocks of steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedops.core.privacy.local import LocalDP, steps_per_round
from fedops.core.training import TrainConfig

#: the noise drawn ahead for a chunk of sites, at most (bytes; refilled every few steps)
NOISE_BUDGET_BYTES = 64 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateJob:
    """One site's round of DP-SGD: its rows in the flat arrays and its mechanism.

    ``steps``, ``sample_rate`` and ``divisor`` (the expected batch size the noised sum is
    divided by) are :func:`private_job`'s, the values a site alone plans with.
    """

    start: int
    stop: int
    steps: int
    sample_rate: float
    divisor: int
    noise_multiplier: float
    max_grad_norm: float
    seed: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.max_grad_norm


def private_job(
    start: int, stop: int, dp: LocalDP, cfg: TrainConfig, *, seed: int, records: int | None = None
) -> PrivateJob:
    """The job of a site with rows ``[start, stop)``, planned as ``train_private`` plans it
    (``records``: the public count it plans with; default the true n)."""
    planned = stop - start if records is None else records
    q, steps = steps_per_round(planned, cfg)
    return PrivateJob(
        start=start,
        stop=stop,
        steps=steps,
        sample_rate=q,
        divisor=max(1, round(q * planned)),
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        seed=seed,
    )


def poisson_rows(
    generator: torch.Generator, n: int, q: float, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each step's Poisson batch of ``n`` records at rate ``q``: row indices ``[steps, width]``
    (ascending, padded with 0) and the batch sizes ``[steps]``.

    The gap before the next chosen record is Geometric(q) (P(gap >= g) = (1 - q)^g), so
    every record is in a step's batch with probability q, independently of the others
    and of the other steps: Poisson sampling.
    """
    if n == 0 or steps == 0:
        return torch.zeros((steps, 0), dtype=torch.long), torch.zeros(steps, dtype=torch.long)
    if q >= 1.0:
        return torch.arange(n).expand(steps, n).clone(), torch.full((steps,), n)
    mean = n * q
    draw = int(mean + 6 * math.sqrt(mean) + 8)  # gaps drawn at once; more only if n not passed
    log_keep = math.log1p(-q)
    last = torch.full((steps,), -1.0, dtype=torch.float64)
    pieces: list[torch.Tensor] = []
    pending = torch.arange(steps)
    while len(pending):
        u = torch.rand((len(pending), draw), generator=generator, dtype=torch.float64)
        gaps = torch.floor(torch.log1p(-u) / log_keep)
        at = last[pending, None] + torch.cumsum(gaps + 1.0, dim=1)
        piece = torch.full((steps, draw), float(n), dtype=torch.float64)
        piece[pending] = at
        pieces.append(piece)
        last[pending] = at[:, -1]
        pending = pending[at[:, -1] < n]
    positions = torch.cat(pieces, dim=1)  # ascending per step: the chosen ones are a prefix
    lengths = (positions < n).sum(dim=1)
    width = int(lengths.max())
    rows = positions[:, :width]
    return torch.where(rows < n, rows, 0.0).long(), lengths


def site_generators(jobs: Sequence[PrivateJob]) -> list[torch.Generator]:
    """One generator per site, seeded with the site's own secret."""
    return [torch.Generator().manual_seed(job.seed) for job in jobs]


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Every site's batches, step-major: step t holds the sites with more than t steps.

    Sites are in the order given (callers sort them by steps, longest first, so the
    sites still training at step t are a prefix). ``rows`` index the flat arrays
    (padding repeats the site's first row; a zero in ``mask`` keeps it out).
    """

    rows: torch.Tensor  # [sum of steps, width]
    mask: torch.Tensor  # [sum of steps, width], 1.0 where a record was sampled
    active: list[int]  # sites still training at each step
    offsets: list[int]  # where each step's entries start


def step_plan(
    jobs: Sequence[PrivateJob], generators: Sequence[torch.Generator], num_rows: int
) -> StepPlan:
    """Draw every site's Poisson batches (from its generator) and lay them out step-major
    (``jobs`` sorted by steps, longest first)."""
    drawn = [
        poisson_rows(g, job.size, job.sample_rate, job.steps)
        for job, g in zip(jobs, generators, strict=True)
    ]
    width = max([1, *(int(r.shape[1]) for r, _ in drawn)])
    blocks, masks = [], []
    for job, (r, lengths) in zip(jobs, drawn, strict=True):
        first = min(job.start, max(num_rows - 1, 0))  # a site without rows: masked all the same
        filled = torch.arange(width) < lengths[:, None]
        padded = torch.full((job.steps, width), first, dtype=torch.long)
        padded[:, : r.shape[1]] = r + job.start
        blocks.append(torch.where(filled, padded, first))
        masks.append(filled.float())
    steps = np.array([job.steps for job in jobs], dtype=np.int64)
    total = int(steps[0]) if len(steps) else 0
    active = len(steps) - np.searchsorted(steps[::-1], np.arange(total), side="right")
    starts = np.concatenate([[0], np.cumsum(active)])
    step_of = np.repeat(np.arange(total), active)
    slot = np.arange(len(step_of)) - np.repeat(starts[:-1], active)
    position = torch.from_numpy(np.concatenate([[0], np.cumsum(steps)])[slot] + step_of)
    empty = torch.zeros((0, width))
    return StepPlan(
        rows=torch.cat(blocks)[position] if blocks else empty.long(),
        mask=torch.cat(masks)[position] if masks else empty,
        active=active.tolist(),
        offsets=starts.tolist(),
    )


class NoiseStream:
    """Each site's Gaussian noise for its steps, drawn ahead in blocks from its generator.

    :meth:`at` gives step t's noise for the first ``n`` sites (sites sorted by steps,
    longest first): row i is N(0, (σ_i C_i)²) per coordinate, zero for σ = 0 (no draw).
    """

    def __init__(
        self,
        jobs: Sequence[PrivateJob],
        generators: Sequence[torch.Generator],
        dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> None:
        self.jobs, self.generators, self.dim = jobs, generators, dim
        self.dtype, self.device = dtype, device
        per_step = max(1, len(jobs) * dim * 4 * 5)  # the block and its four draws
        self.block = max(1, NOISE_BUDGET_BYTES // per_step)
        self.std = torch.tensor([job.noise_std for job in jobs], dtype=dtype, device=device)
        self._buffer = torch.zeros((len(jobs), self.block, dim), dtype=dtype, device=device)

    def at(self, t: int, n: int) -> torch.Tensor:
        """Step ``t``'s noise ``[n, dim]`` for the first ``n`` sites."""
        if t % self.block == 0:
            self._refill(t)
        return self._buffer[:n, t % self.block]

    def _refill(self, t: int) -> None:
        for i, (job, g) in enumerate(zip(self.jobs, self.generators, strict=True)):
            k = min(self.block, job.steps - t)
            if k <= 0 or job.noise_std == 0:
                continue
            draws = torch.randn((k, 4, self.dim), generator=g, dtype=self.dtype)
            self._buffer[i, :k] = (draws.sum(dim=1) * (job.noise_std / 2)).to(self.device)


def flat_slices(base: Mapping[str, torch.Tensor]) -> tuple[dict[str, slice], int]:
    """Each parameter's slice of one flat noise vector (in ``base``'s order), and its length."""
    where, at = {}, 0
    for name, t in base.items():
        where[name] = slice(at, at + t.numel())
        at += t.numel()
    return where, at


@dataclass(slots=True, kw_only=True)
class ChunkRun:
    """What a chunk of sites trains from, whatever computes its per-example gradients:
    each site's batches and noise, its clip norm and divisor, and its parameters (and
    momentum) stacked along the first dimension."""

    plan: StepPlan
    noise: NoiseStream
    where: dict[str, slice]  # each parameter's slice of the flat noise vector
    rows: torch.Tensor
    mask: torch.Tensor
    params: dict[str, torch.Tensor]
    velocity: dict[str, torch.Tensor]
    clip: torch.Tensor
    divisor: torch.Tensor

    @property
    def width(self) -> int:
        return int(self.rows.shape[1])


def chunk_run(
    jobs: Sequence[PrivateJob], base: Mapping[str, torch.Tensor], x: torch.Tensor, momentum: float
) -> ChunkRun:
    """The chunk's draws (batches first, then the noise) and its stacked parameters."""
    count = len(jobs)
    generators = site_generators(jobs)
    plan = step_plan(jobs, generators, len(x))  # batches first, then the noise
    where, dim = flat_slices(base)
    params = {n: t.expand(count, *t.shape).clone() for n, t in base.items()}
    return ChunkRun(
        plan=plan,
        noise=NoiseStream(jobs, generators, dim, dtype=x.dtype, device=x.device),
        where=where,
        rows=plan.rows.to(x.device),
        mask=plan.mask.to(x.device, x.dtype),
        params=params,
        velocity={n: torch.zeros_like(t) for n, t in params.items()} if momentum else {},
        clip=torch.tensor([job.max_grad_norm for job in jobs], dtype=x.dtype, device=x.device),
        divisor=torch.tensor([float(j.divisor) for j in jobs], dtype=x.dtype, device=x.device),
    )
