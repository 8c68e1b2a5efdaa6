"""The step-major plan of all clients at once equals the one built client by client."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.batch_plans import JobArrays, permutations, step_major
from fedops.core.schedule import ClientJob


def reference_plan(
    jobs: list[ClientJob], steps: np.ndarray, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int], list[int]]:
    """Each client's own ``ClientJob.batches`` table, rearranged step-major (the per-client
    planner the vectorized one replaced): rows, weights, owner, lengths, active, offsets."""
    drawn = [job.batches(batch) for job in jobs]
    rows = np.concatenate([np.zeros((0, batch), dtype=np.int64)] + [r for r, _ in drawn])
    lengths = np.concatenate([np.zeros(0, dtype=np.int64)] + [n for _, n in drawn])
    active, owner, position = [], [], []
    firsts = np.concatenate([[0], np.cumsum(steps)])
    for t in range(int(steps[0]) if len(steps) else 0):
        running = [i for i, s in enumerate(steps) if s > t]
        active.append(len(running))
        owner += running
        position += [int(firsts[i]) + t for i in running]
    lengths = lengths[position]
    filled = np.arange(batch)[None, :] < lengths[:, None]
    weights = np.where(filled, 1.0 / np.maximum(lengths, 1)[:, None], 0.0).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(active)]).tolist()
    return rows[position], weights, np.array(owner, dtype=np.int64), lengths, active, offsets


@st.composite
def job_lists(draw: st.DrawFn) -> tuple[list[ClientJob], int]:
    batch = draw(st.integers(1, 7))
    sizes = draw(st.lists(st.integers(0, 30), min_size=0, max_size=12))
    epochs = draw(st.lists(st.integers(0, 3), min_size=len(sizes), max_size=len(sizes)))
    seeds = draw(st.lists(st.integers(0, 2**62), min_size=len(sizes), max_size=len(sizes)))
    gap = draw(st.integers(0, 5))  # clients' rows need not start at 0 nor touch
    jobs, at = [], gap
    for size, e, seed in zip(sizes, epochs, seeds, strict=True):
        jobs.append(ClientJob(start=at, stop=at + size, epochs=e, seed=seed))
        at += size + gap
    return jobs, batch


@settings(max_examples=200, deadline=None)
@given(job_lists())
def test_step_major_equals_the_per_client_plan(case: tuple[list[ClientJob], int]) -> None:
    jobs, batch = case
    steps = np.array([job.steps(batch) for job in jobs], dtype=np.int64)
    order = np.argsort(-steps, kind="stable")  # longest first, as the trainers call it
    jobs, steps = [jobs[i] for i in order], steps[order]
    plan = step_major(jobs, steps, batch)
    rows, weights, owner, lengths, active, offsets = reference_plan(jobs, steps, batch)
    np.testing.assert_array_equal(plan.rows.numpy(), rows.reshape(-1, batch))
    np.testing.assert_array_equal(plan.weights.numpy(), weights.reshape(-1, batch))
    np.testing.assert_array_equal(plan.owner, owner)
    np.testing.assert_array_equal(plan.lengths, lengths)
    assert plan.active == active
    assert plan.offsets == offsets
    assert plan.rows.dtype == torch.int64 and plan.weights.dtype == torch.float32


@settings(max_examples=50, deadline=None)
@given(job_lists())
def test_permutations_are_each_jobs_randperm_per_epoch(case: tuple[list[ClientJob], int]) -> None:
    jobs, _ = case
    flat, base = permutations(JobArrays.of(jobs))
    for job, at in zip(jobs, base.tolist(), strict=True):
        generator = torch.Generator().manual_seed(job.seed)
        for epoch in range(job.epochs if job.size else 0):
            expected = torch.randperm(job.size, generator=generator).numpy()
            got = flat[at + epoch * job.size : at + (epoch + 1) * job.size]
            np.testing.assert_array_equal(got, expected)


def test_job_arrays_steps_match_client_jobs() -> None:
    jobs = [ClientJob(start=0, stop=s, epochs=e, seed=0) for s, e in [(0, 2), (9, 1), (10, 3)]]
    assert JobArrays.of(jobs).steps(5).tolist() == [job.steps(5) for job in jobs]
