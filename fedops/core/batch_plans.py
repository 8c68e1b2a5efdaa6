"""Every client's minibatches of a round, planned for all clients at once.

A batched trainer takes step ``t`` of every client still training together, so it
needs each client's minibatches laid out step-major: step 0 of every client, then
step 1 of those with a second step, and so on (clients sorted longest first, so the
ones still training are a prefix). Each client's minibatches are those of
:meth:`fedops.core.schedule.ClientJob.batches` (one ``torch.randperm`` per epoch from
the client's own seed, cut into consecutive minibatches), the draws of a deployed
client's own loop.

:func:`step_major` builds that layout with numpy over the clients' offsets: the only
per-client work left is drawing the permutations themselves (``torch.randperm`` into
one flat buffer, a few microseconds a client); minibatch rows, lengths and weights
are computed for every step of every client in a handful of array operations, where
building each client's ``[steps, batch]`` table and rearranging them cost ~30 µs a
client (0.3 s of a 10,000-client round).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedops.core.schedule import ClientJob


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Every step's minibatches, step-major: step t holds the first ``active[t]`` clients."""

    rows: torch.Tensor  # [sum of steps, batch] row indices into x (the client's first where padded)
    weights: torch.Tensor  # [sum of steps, batch] 1/len(minibatch), 0 where padded
    owner: np.ndarray  # [sum of steps] client slot of each entry
    lengths: np.ndarray  # [sum of steps] rows in each minibatch
    active: list[int]  # clients still training at each step
    offsets: list[int]  # where each step's entries start


@dataclass(frozen=True, slots=True)
class JobArrays:
    """A sequence of :class:`ClientJob` as one array per field (a client per entry)."""

    start: np.ndarray
    size: np.ndarray
    epochs: np.ndarray
    seed: np.ndarray

    @classmethod
    def of(cls, jobs: Sequence[ClientJob]) -> JobArrays:
        count = len(jobs)

        def field(values: Iterable[int]) -> np.ndarray:
            return np.fromiter(values, dtype=np.int64, count=count)

        start = field(job.start for job in jobs)
        return cls(
            start=start,
            size=field(job.stop for job in jobs) - start,
            epochs=field(job.epochs for job in jobs),
            seed=field(job.seed for job in jobs),
        )

    def steps(self, batch_size: int) -> np.ndarray:
        """:meth:`ClientJob.steps` of every job."""
        steps: np.ndarray = self.epochs * -(-self.size // batch_size)
        return steps


def permutations(jobs: JobArrays) -> tuple[np.ndarray, np.ndarray]:
    """Every job's shuffles, one ``torch.randperm(size)`` per epoch from its seed, end to
    end in one flat array; and where each job's first epoch starts in it."""
    drawn = jobs.size * jobs.epochs
    base = np.zeros(len(drawn) + 1, dtype=np.int64)
    np.cumsum(drawn, out=base[1:])
    flat = torch.empty(int(base[-1]), dtype=torch.int64)
    generator = torch.Generator()
    for i in np.flatnonzero(drawn).tolist():  # the one per-client loop: torch's own RNG
        generator.manual_seed(int(jobs.seed[i]))
        size, at = int(jobs.size[i]), int(base[i])
        for _ in range(int(jobs.epochs[i])):
            torch.randperm(size, generator=generator, out=flat[at : at + size])
            at += size
    return flat.numpy(), base[:-1]


def step_major(jobs: Sequence[ClientJob] | JobArrays, steps: np.ndarray, batch: int) -> StepPlan:
    """Every client's minibatches (:meth:`ClientJob.batches`), rearranged step-major.

    ``steps`` are the jobs' step counts, in descending order (the jobs sorted longest
    first): the clients still training at step ``t`` are then the first ``active[t]``.
    """
    arrays = jobs if isinstance(jobs, JobArrays) else JobArrays.of(jobs)
    flat, base = permutations(arrays)
    total = int(steps[0]) if len(steps) else 0
    active = len(steps) - np.searchsorted(steps[::-1], np.arange(total), side="right")
    starts = np.concatenate([[0], np.cumsum(active)])
    step_of = np.repeat(np.arange(total), active)
    slot = np.arange(len(step_of)) - np.repeat(starts[:-1], active)
    size = arrays.size[slot]
    per_epoch = -(-size // batch)
    epoch, within = np.divmod(step_of, np.maximum(per_epoch, 1))
    first = within * batch  # the minibatch's first position in its epoch's permutation
    lengths = np.minimum(batch, size - first)
    filled = np.arange(batch)[None, :] < lengths[:, None]
    at = (base[slot] + epoch * size + first)[:, None] + np.arange(batch)[None, :]
    start = arrays.start[slot][:, None]
    if len(flat):
        rows = np.where(filled, flat[np.where(filled, at, 0)] + start, start)
    else:  # no client has a row, hence no step: an empty plan
        rows = np.zeros(filled.shape, dtype=np.int64)
    weights = np.where(filled, 1.0 / np.maximum(lengths, 1)[:, None], 0.0)
    return StepPlan(
        rows=torch.from_numpy(rows),
        weights=torch.from_numpy(weights.astype(np.float32)),
        owner=slot,
        lengths=lengths,
        active=active.tolist(),
        offsets=starts.tolist(),
    )
